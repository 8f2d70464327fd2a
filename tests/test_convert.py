"""`maskgil_jax.convert`: reference PyTorch files in, orbax checkpoints out that the other
commands restore; the layouts found in the wild; clear refusals that leave --out untouched."""
import argparse
import fractions
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from maskgil_jax.errors import UserError
from maskgil_jax import checkpoints, convert, loading
from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop import gpt_names, names, torch_io
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models import vq as jax_vq
from maskgil_jax.models.transformer import Transformer
from test_export_support import random_transformer, tiny_config, vq_fixture_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def fixture_state_dict(fixtures_dir, stem="llamagen_gpt_tiny"):
  """The fixture's state dict as torch tensors (to write variants of it)."""
  return {k: torch.from_numpy(v) for k, v in
          torch_io.load_state_dict(fixtures_dir / f"{stem}.safetensors").items()}


def imported(kind, path, config, entry=None):
  state_dict, metadata = torch_io.load_weights(path, entry)
  return convert.import_weights(kind, state_dict, metadata, config, str(path))[0]


def params_of(module):
  return {k: np.asarray(v) for k, v in
          jax.tree_util.tree_flatten_with_path(nnx.state(module, nnx.Param))[0]}


# ---- what the commands restore --------------------------------------------------------------
def test_gpt_checkpoints_restore_with_the_reference_logits(fixtures_dir, tmp_path):
  io_llamagen = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  io_maskgil = np.load(fixtures_dir / "maskgil_gpt_tiny_io.npz")
  cases = [("llamagen-c2i", "tiny:llamagen", "llamagen_gpt_tiny.pt"),
           ("maskgil-reference", "tiny:maskgil_reference", "maskgil_gpt_tiny.safetensors")]
  for kind, spec, src in cases:
    config = tiny_config(spec)
    info = convert.convert(kind, fixtures_dir / src, config, tmp_path / kind)
    assert info["parameters"] == {"llamagen-c2i": 197_632, "maskgil-reference": 197_760}[kind]
    assert checkpoints.restore_config(tmp_path / kind).model.to_dict() == config.model.to_dict()
    abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
    model = checkpoints.restore_params(tmp_path / kind, abstract)  # as `sample` restores it
    if kind == "llamagen-c2i":
      logits = jax.jit(lambda m, t, l: m.ar_logits(t, l))(
          model, jnp.asarray(io_llamagen["idx"]), jnp.asarray(io_llamagen["cond_idx"]))
      np.testing.assert_allclose(logits, io_llamagen["logits_tf"], atol=1e-4, rtol=0)
    else:
      logits = jax.jit(lambda m, t, l: m(t, l, mode="bidirectional"))(
          model, jnp.asarray(io_maskgil["masked_code"].reshape(2, 16)),
          jnp.asarray(io_maskgil["labels"]))
      np.testing.assert_allclose(logits, io_maskgil["logits_cond"], atol=1e-4, rtol=0)


def test_vq_checkpoint_is_a_tokenizer_that_load_tokenizer_restores(fixtures_dir, tmp_path):
  config = vq_fixture_config()
  convert.convert("vq16", fixtures_dir / "llamagen_vq_tiny.pt", config, tmp_path / "vq")
  assert checkpoints.restore_config(tmp_path / "vq").task == "tokenizer"
  model = loading.load_tokenizer(tmp_path / "vq", config.tokenizer)  # config.tokenizer.ckpt
  io = np.load(fixtures_dir / "llamagen_vq_tiny_io.npz")
  images = jnp.asarray(io["images"].transpose(0, 2, 3, 1))
  codes, decoded = jax_vq.reconstruct(model, images)
  np.testing.assert_array_equal(np.asarray(codes).reshape(-1), io["indices"])
  np.testing.assert_allclose(np.asarray(decoded).transpose(0, 3, 1, 2), io["decoded"],
                             atol=1e-4, rtol=0)


# ---- layouts in the wild ------------------------------------------------------------------------
def test_accepts_the_layouts_found_in_the_wild(fixtures_dir, tmp_path):
  config = tiny_config("tiny:llamagen")
  sd = fixture_state_dict(fixtures_dir)
  expected = params_of(imported("llamagen-c2i", fixtures_dir / "llamagen_gpt_tiny.pt", config))
  doubled = {k: 2 * v for k, v in sd.items()}
  n_layer = config.model.n_layer
  variants = {
      "model_state_dict.pt": ({"iter": 5, "model_state_dict": sd}, None),
      "bare.pt": (sd, None),
      "ema.pt": ({"model": doubled, "ema": sd}, "ema"),  # the EMA entry, by choice
      "freqs_cis.pt": ({"model": {**sd, "freqs_cis": torch.zeros(17, 8, 2)}}, None),
      "kv_cache.pt": ({"model": {**sd, **{f"layers.{i}.attention.kv_cache.k_cache":
                                          torch.zeros(2, 4, 24, 16) for i in range(n_layer)}}},
                      None),
      "fsdp.pt": ({f"_fsdp_wrapped_module.{k}": v for k, v in sd.items()}, None),
      "ddp.pt": ({"model": {f"module.{k}": v for k, v in sd.items()}}, None),
  }
  for name, (obj, entry) in variants.items():
    torch.save(obj, tmp_path / name)
    got = params_of(imported("llamagen-c2i", tmp_path / name, config, entry))
    for k, v in expected.items():
      np.testing.assert_array_equal(got[k], v, err_msg=f"{name}: {k}")


# ---- refusals -------------------------------------------------------------------------------
def refused(exc, match, kind, src, config, out, **kw):
  with pytest.raises(exc, match=match) as e:
    convert.convert(kind, src, config, out, **kw)
  return str(e.value)


def test_names_every_missing_unexpected_and_misshaped_key(fixtures_dir, tmp_path):
  config = tiny_config("tiny:llamagen")
  sd = fixture_state_dict(fixtures_dir)
  del sd["layers.1.ffn_norm.weight"]
  sd["extra.weight"] = torch.zeros(3)
  sd["output.weight"] = torch.zeros(500, 64)
  torch.save({"model": sd}, tmp_path / "edited.pt")
  msg = refused(CheckpointError, "3 problems", "llamagen-c2i", tmp_path / "edited.pt", config,
                tmp_path / "out")
  assert "missing layers.1.ffn_norm.weight [64] (ours: layers.ffn_norm.weight [2, 64])" in msg
  assert "unexpected extra.weight [3]" in msg
  assert ("mis-shaped output.weight: file [500, 64], expected [512, 64] for ours output.weight "
          "[64, 512]") in msg
  assert not (tmp_path / "out").exists()


def test_refuses_a_checkpoint_of_another_kind(fixtures_dir, tmp_path):
  out = tmp_path / "out"
  refused(CheckpointError, "holds a vq16 checkpoint, not llamagen-c2i", "llamagen-c2i",
          fixtures_dir / "llamagen_vq_tiny.pt", tiny_config("tiny:llamagen"), out)
  refused(CheckpointError, "holds a maskgil-reference checkpoint, not llamagen-c2i",
          "llamagen-c2i", fixtures_dir / "maskgil_gpt_tiny.pt", tiny_config("tiny:llamagen"), out)
  refused(CheckpointError, "holds a llamagen-c2i checkpoint, not vq16", "vq16",
          fixtures_dir / "llamagen_gpt_tiny.pt", vq_fixture_config(), out)
  refused(CheckpointError, "is not a native export", "native",
          fixtures_dir / "llamagen_gpt_tiny.pt", tiny_config("tiny:llamagen"), out)
  # the config describes a model the reference code cannot express
  refused(ConfigError, "config.model.qk_norm", "llamagen-c2i",
          fixtures_dir / "llamagen_gpt_tiny.pt", tiny_config("tiny:llamagen",
                                                             {"model.qk_norm": True}), out)
  assert not out.exists()


def test_native_file_must_match_the_config_beyond_shapes(tmp_path):
  config = tiny_config("tiny:maskgil")
  model = random_transformer(config)
  metadata = {torch_io.META_KIND: "transformer", torch_io.META_LAYOUT: "native",
              torch_io.META_CONFIG: config.to_json_best_effort()}
  torch_io.save_state_dict(names.export_state_dict(model, gpt_names.gpt_rules(config.model)),
                           tmp_path / "native.safetensors", metadata=metadata)
  same = imported("native", tmp_path / "native.safetensors", config)
  np.testing.assert_array_equal(same.output.weight[...], model.output.weight[...])
  # same keys and shapes, another computation: pre-norm instead of the exported post-norm
  pre_norm = tiny_config("tiny:maskgil", {"model.norm_placement": "pre"})
  refused(ConfigError, "config.model.norm_placement: 'pre', but .* with 'post'", "native",
          tmp_path / "native.safetensors", pre_norm, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_refuses_truncated_files_and_pickled_objects(fixtures_dir, tmp_path):
  config, out = tiny_config("tiny:llamagen"), tmp_path / "out"
  for suffix in (".pt", ".safetensors"):
    data = (fixtures_dir / f"llamagen_gpt_tiny{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[:len(data) // 2])
    refused(CheckpointError, "truncated", "llamagen-c2i", tmp_path / f"cut{suffix}", config, out)
  # any other pickled class is refused, never rebuilt
  sd = fixture_state_dict(fixtures_dir)
  torch.save({"model": sd, "extra": fractions.Fraction(1, 3)}, tmp_path / "obj.pt")
  refused(CheckpointError, r"pickles objects that are not tensors \(fractions.Fraction\)",
          "llamagen-c2i", tmp_path / "obj.pt", config, out)
  refused(CheckpointError, "no such file", "llamagen-c2i", tmp_path / "absent.pt", config, out)
  assert not out.exists()


def test_accepts_llamagen_training_checkpoints_with_their_args(fixtures_dir, tmp_path):
  # LlamaGen's training checkpoints pickle their argparse arguments beside the weights
  sd = fixture_state_dict(fixtures_dir)
  torch.save({"model": sd, "args": argparse.Namespace(lr=1e-4), "steps": 7}, tmp_path / "a.pt")
  model = imported("llamagen-c2i", tmp_path / "a.pt", tiny_config("tiny:llamagen"))
  np.testing.assert_array_equal(model.norm.weight[...], sd["norm.weight"])


def test_never_destroys_an_existing_out(fixtures_dir, tmp_path):
  config, out = tiny_config("tiny:llamagen"), tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  refused(UserError, "exists", "llamagen-c2i", fixtures_dir / "llamagen_gpt_tiny.pt",
          config, out)
  # even with --overwrite, a failing conversion leaves it as it was
  refused(CheckpointError, "vq16", "llamagen-c2i", fixtures_dir / "llamagen_vq_tiny.pt", config,
          out, overwrite=True)
  assert (out / "keep.txt").read_text() == "mine"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_command_line(fixtures_dir, tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, "-m", "maskgil_jax.convert", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)

  ok = run("--kind", "llamagen-c2i", "--src", str(fixtures_dir / "llamagen_gpt_tiny.pt"),
           "--config", "configs/tiny.py:llamagen", "--out", str(tmp_path / "ok"))
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.strip().splitlines()[-1].startswith(
      "converted llamagen-c2i") and "197,632 parameters" in ok.stdout
  assert checkpoints.latest_step(tmp_path / "ok") == 0
  bad = run("--kind", "llamagen-c2i", "--src", str(fixtures_dir / "maskgil_gpt_tiny.pt"),
            "--config", "configs/tiny.py:llamagen", "--out", str(tmp_path / "bad"))
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "maskgil-reference" in bad.stderr and not (tmp_path / "bad").exists()
