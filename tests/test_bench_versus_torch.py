"""bench/versus_torch.py: every side holds our weights and computes our logits; each workload
runs on every side, one process each, and reports medians and ratios; the load rules hold.

LlamaGen's own code is not part of the project: its tests run when MASKGIL_JAX_LLAMAGEN_DIR
names a checkout of it (autoregressive/models/gpt.py, generate.py,
tokenizer/tokenizer_image/vq_model.py, utils/drop_path.py), and are skipped otherwise.
"""
import os
import pathlib
import re
import sys

import numpy as np
import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import jax_side  # noqa: E402
import torch_side  # noqa: E402
import versus_torch  # noqa: E402
import workloads  # noqa: E402

from maskgil_jax.interop import torch_model as tm  # noqa: E402

LLAMAGEN = os.environ.get("MASKGIL_JAX_LLAMAGEN_DIR")
needs_llamagen = pytest.mark.skipif(
    not LLAMAGEN, reason="set MASKGIL_JAX_LLAMAGEN_DIR to a checkout of LlamaGen's code to "
    "test the reference side (not part of this project)")
ROW = re.compile(r"^(?P<label>.+?)\s+(?P<size>tiny|-)\s+(?P<ours>[\d.]+)\s+(?P<twin>[\d.]+)\s+"
                 r"(?P<ref>[\d.]+|-)\s+(?P<r_twin>[\d.]+x|withheld)\s+(?P<r_ref>[\d.]+x|withheld|-)"
                 r"\s+(?P<compile>[\d.]+)(?P<rest>.*)$", re.M)


def _llamagen_inputs():
  config = workloads.generator_config("tiny", "llamagen")
  model = jax_side.random_transformer(config)
  tokens = (np.arange(2 * config.model.grid_size ** 2, dtype=np.int32).reshape(2, -1) * 7
            % config.model.codebook_size)
  labels = np.array([3, 5], np.int32)
  return config, model, tokens, labels


def test_twin_holds_our_weights_and_computes_our_logits():
  config, model, tokens, labels = _llamagen_inputs()
  twin = torch_side.load(tm.Transformer(config.model.to_dict()),
                         jax_side.generator_weights(model, config))
  ours = np.asarray(model.ar_logits(tokens, labels))
  with torch.no_grad():
    theirs = twin.ar_logits(torch.from_numpy(tokens).long(), torch.from_numpy(labels).long())
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)
  assert np.abs(ours).max() > 0  # the random head: not the zero-initialised one


@needs_llamagen
def test_llamagen_code_holds_our_weights_and_computes_our_logits():
  import reference_side
  gpt, _, vq_module = reference_side.import_llamagen(LLAMAGEN)
  config, model, tokens, labels = _llamagen_inputs()
  ref = reference_side.load(reference_side.gpt_model(gpt, config.model),
                            jax_side.generator_weights(model, config))
  ref.train()  # its teacher-forced forward; no dropout (rates 0) and no label drop:
  ref.cls_embedding.dropout_prob = 0.0
  with torch.no_grad():
    theirs, _ = ref(torch.from_numpy(tokens[:, :-1]).long(), torch.from_numpy(labels).long())
  ours = np.asarray(model.ar_logits(tokens, labels))
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)
  # the tokenizer: same codes from the same weights
  import jax.numpy as jnp
  from flax import nnx
  from maskgil_jax.interop import vq_names
  from maskgil_jax.models import vq as jax_vq
  t, side = workloads.vq_config("tiny")
  vq = jax_vq.VQModel(t, rngs=nnx.Rngs(0))
  ref_vq = reference_side.load(reference_side.vq_model(vq_module, t),
                               {k: np.asarray(v) for k, v in
                                vq_names.export_vq_state_dict(vq).items()},
                               extra=("quantize.codebook_used",))
  images = workloads.vq_images(side)
  with torch.no_grad():
    _, _, (_, _, ref_codes) = ref_vq.encode(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  ours_codes = np.asarray(jax_vq.encode(vq, jnp.asarray(images))).reshape(-1)
  np.testing.assert_array_equal(ours_codes, ref_codes.numpy())


def _rows(out):
  rows = {m["label"]: m for m in ROW.finditer(out)}
  for m in rows.values():
    ours, twin = float(m["ours"]), float(m["twin"])
    assert ours > 0 and twin > 0
    if m["r_twin"] != "withheld" and ours >= 0.5:  # 3 decimals: check where rounding is small
      assert abs(float(m["r_twin"][:-1]) - twin / ours) < 0.05 * twin / ours
  return rows


def test_each_generator_workload_runs_on_both_sides_one_process_each(capsys, monkeypatch):
  monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # the refusal: tested below
  monkeypatch.setattr(versus_torch, "busy_seconds", lambda: None)  # no /proc/stat reading
  assert versus_torch.main(["--sizes", "tiny", "--workloads", "train,mar,ar1",
                            "--rounds", "1"]) == 0
  out = capsys.readouterr().out
  rows = _rows(out)
  assert len(rows) == 3, out
  assert all(m["ref"] == "-" and m["r_ref"] == "-" and m["rest"] == "" for m in rows.values())
  assert "remat policy none (auto)" in out
  assert len(re.findall(r"threads: ours \d+ cpus, twin \d+ threads$", out, re.M)) == 3, out
  assert "versus_torch: train-tiny twin/ours" in out


@needs_llamagen
def test_llamagen_code_runs_its_workloads_pinned_to_one_core(capsys):
  assert versus_torch.main(["--sizes", "tiny", "--workloads", "ar4,vq", "--rounds", "1",
                            "--threads", "1", "--allow-load",
                            "--reference-llamagen", LLAMAGEN]) == 0
  out = capsys.readouterr().out
  rows = _rows(out)
  assert len(rows) == 2, out
  for m in rows.values():
    assert float(m["ref"]) > 0 and m["r_ref"].endswith("x")
    other, load = m["rest"].split()  # --allow-load: the load on every line
    assert float(other) >= 0 and float(load) >= 0
  assert out.count("threads: ours 1 cpus, twin 1 threads, ref 1 threads") == 2, out


def test_refuses_to_run_under_load_unless_allowed(capsys, monkeypatch):
  monkeypatch.setattr(os, "getloadavg", lambda: (0.6 * versus_torch.cores() + 0.1, 0.0, 0.0))
  assert versus_torch.main(["--sizes", "tiny", "--workloads", "ar1"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: load average") and "--allow-load" in err


def test_withholds_ratios_when_other_work_kept_the_cores_busy(capsys, monkeypatch):
  monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
  clock = iter(range(0, 10 ** 6, 1000))  # the machine 'busy' 1000 s during every run
  monkeypatch.setattr(versus_torch, "busy_seconds", lambda: float(next(clock)))
  assert versus_torch.main(["--sizes", "tiny", "--workloads", "ar1", "--rounds", "1",
                            "--threads", "1"]) == 0
  out = capsys.readouterr().out
  assert "threads: ours 1 cpus, twin 1 threads" in out  # both sides pinned to one core
  (row,) = _rows(out).values()
  assert row["r_twin"] == "withheld", out
  assert "ratios withheld: other work kept" in out
  assert "versus_torch: ar1-tiny twin/ours withheld" in out


def test_rejects_a_directory_without_llamagen_code(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    versus_torch.parse_args(["--reference-llamagen", str(tmp_path)])
  assert e.value.code == 2
  assert "autoregressive/models/gpt.py" in capsys.readouterr().err
