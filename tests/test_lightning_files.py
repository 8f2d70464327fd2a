"""Lightning checkpoints as their users have them: hyper-parameters, callbacks and optimizer
state pickled as objects beside `state_dict` are read without importing or running anything
of the file's, and only the tensors under `state_dict` are taken."""
import argparse
import fractions
import importlib
import os
import sys

import numpy as np
import pytest
import torch

from maskgil_jax import configlib, convert, loading
from maskgil_jax.interop import torch_io
from maskgil_jax.interop.torch_io import CheckpointError

from test_tokenizer_families import generator_config

MODULE = "lightning_hparams_standin"  # a module that exists only while the file is written


def objects_from_a_vanished_module(tmp_path):
  """(an instance, a class) of a module that is gone once this returns: unpickling them for
  real would have to import it."""
  src = tmp_path / "src"
  src.mkdir()
  (src / f"{MODULE}.py").write_text(
      "class HParams:\n"
      "  def __init__(self):\n"
      "    self.lr, self.ddconfig = 4.5e-6, {'ch': 128}\n"
      "  def __setstate__(self, state):\n"
      "    raise RuntimeError('rebuilt for real')\n"
      "class Callback:\n"
      "  pass\n")
  sys.path.insert(0, str(src))
  try:
    module = importlib.import_module(MODULE)
    return module.HParams(), module.Callback
  finally:
    sys.path.remove(str(src))


def lightning_file(tmp_path, state_dict, **extra):
  """A checkpoint laid out as Lightning 1.0.8 saves one (taming's pinned version)."""
  hparams, callback = objects_from_a_vanished_module(tmp_path)
  net = torch.nn.Linear(3, 2)
  optimizer = torch.optim.Adam(net.parameters(), lr=4.5e-6)
  net(torch.ones(1, 3)).sum().backward()
  optimizer.step()
  obj = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.0.8",
         "callbacks": {callback: {"best_model_score": torch.tensor(0.25),
                                  "monitor": "val/rec_loss"}},
         "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [],
         "state_dict": state_dict, "hparams_name": "kwargs",
         "hyper_parameters": argparse.Namespace(model=hparams, base_lr=fractions.Fraction(9, 2)),
         **extra}
  path = tmp_path / "last.ckpt"
  torch.save(obj, path)
  del sys.modules[MODULE]
  (tmp_path / "src" / f"{MODULE}.py").unlink()
  return path


def taming_state_dict(fixtures_dir):
  return {k: torch.from_numpy(v) for k, v in
          torch_io.load_torch_file(fixtures_dir / "taming_vqgan_tiny.pt")["state_dict"].items()}


def test_a_lightning_1x_file_with_objects_beside_the_weights_loads(fixtures_dir, tmp_path):
  sd = taming_state_dict(fixtures_dir)
  path = lightning_file(tmp_path, sd)
  with pytest.raises(Exception):  # what torch's own safe reader makes of it
    torch.load(path, weights_only=True)
  loaded = torch_io.load_torch_file(path)
  assert list(loaded) == ["state_dict"] and sorted(loaded["state_dict"]) == sorted(sd)
  assert MODULE not in sys.modules  # nothing was imported to read it
  model = loading.load_tokenizer(path, configlib.tokenizer_config("tiny_taming"))
  np.testing.assert_array_equal(model.decoder.conv_out.bias[...],
                                sd["decoder.conv_out.bias"].numpy())
  out = tmp_path / "converted"
  convert.convert("taming-vqgan", path, generator_config("tiny_taming"), out)
  assert (out / "checkpoints").is_dir()


@pytest.mark.parametrize("call", [os.system, eval, getattr])
def test_a_lightning_file_that_pickles_code_is_refused_and_nothing_runs(fixtures_dir, tmp_path,
                                                                        call):
  marker = tmp_path / "ran"
  args = {os.system: (f"touch {marker}",), eval: (f"open({str(marker)!r}, 'w')",),
          getattr: ("text", "upper")}[call]

  class Payload:
    def __reduce__(self):
      return call, args

  path = tmp_path / "evil.ckpt"
  torch.save({"state_dict": taming_state_dict(fixtures_dir), "hyper_parameters": Payload()},
             path)
  with pytest.raises(CheckpointError, match=r"refused: it pickles a call to .*(system|eval|"
                                            r"getattr).*nothing in it was run"):
    torch_io.load_torch_file(path)
  assert not marker.exists()


def test_objects_are_only_tolerated_beside_a_lightning_state_dict(fixtures_dir, tmp_path):
  sd = taming_state_dict(fixtures_dir)
  # an object inside the state dict itself
  inside = dict(sd, **{"decoder.extra": fractions.Fraction(1, 3)})
  torch.save({"state_dict": inside, "epoch": 1, "x": fractions.Fraction(1, 2)},
             tmp_path / "inside.ckpt")
  with pytest.raises(CheckpointError, match=r"state_dict holds objects that are not tensors: "
                                            r"decoder.extra"):
    torch_io.load_torch_file(tmp_path / "inside.ckpt")
  # not a Lightning file: refused, and the fix names the entry this file has
  torch.save({"model_state_dict": sd, "x": fractions.Fraction(1, 2)}, tmp_path / "m.pth")
  with pytest.raises(CheckpointError) as e:
    torch_io.load_torch_file(tmp_path / "m.pth")
  assert "not tensors (fractions.Fraction)" in str(e.value)
  assert "['model_state_dict']" in str(e.value) and "['model']" not in str(e.value)
  torch.save({"weights": sd, "x": fractions.Fraction(1, 2)}, tmp_path / "w.pth")
  with pytest.raises(CheckpointError, match=r"with the entry that holds the weights "
                                            r"\(entries: \['weights', 'x'\]\)"):
    torch_io.load_torch_file(tmp_path / "w.pth")
