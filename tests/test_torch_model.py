"""The PyTorch twin of our models: it is the reference architecture (the reference fixtures load
strictly and reproduce their outputs), it matches our JAX models on native exports, its greedy
decoders agree with the JAX models, and it runs with JAX absent."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from maskgil_jax import export
from maskgil_jax.decode import ar, mar, sampling, schedules
from maskgil_jax.interop import torch_io
from maskgil_jax.interop import torch_model as tm
from maskgil_jax.models import vq as jax_vq
from test_export_support import (random_tokenizer, random_transformer, save_run, tiny_config,
                                 tokenizer_run_config, vq_fixture_config)

ATOL = 1e-4


def test_metadata_keys_match_the_package():
  # torch_model repeats them because it imports nothing from maskgil_jax
  assert (tm.META_KIND, tm.META_LAYOUT, tm.META_CONFIG) == (
      torch_io.META_KIND, torch_io.META_LAYOUT, torch_io.META_CONFIG)
  assert tm.STATE_DICT_ENTRIES == torch_io.STATE_DICT_ENTRIES


# ---- the reference architecture ------------------------------------------------------------
def test_llamagen_fixture_loads_strictly_and_reproduces_logits_and_generation(fixtures_dir):
  config = tiny_config("tiny:llamagen")
  model = tm.load_transformer(fixtures_dir / "llamagen_gpt_tiny.pt", config.model.to_dict())
  io = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  idx, cond = torch.tensor(io["idx"]), torch.tensor(io["cond_idx"])
  with torch.no_grad():
    np.testing.assert_allclose(model.ar_logits(idx, cond), io["logits_tf"], atol=ATOL, rtol=0)
    null = torch.full((2,), 10)
    np.testing.assert_allclose(model.ar_logits(idx, null), io["logits_tf_null"], atol=ATOL, rtol=0)
  np.testing.assert_array_equal(tm.greedy_ar(model, cond), io["gen_greedy_cfg1"])
  # LlamaGen's cfg_scale 4 is 1 + w with w = 3 in MaskGIL's convention
  np.testing.assert_array_equal(tm.greedy_ar(model, cond, cfg_scale=3.0), io["gen_greedy_cfg4"])


def test_maskgil_fixture_loads_strictly_and_reproduces_logits(fixtures_dir):
  config = tiny_config("tiny:maskgil_reference")
  model = tm.load_transformer(fixtures_dir / "maskgil_gpt_tiny.safetensors",
                              config.model.to_dict())
  io = np.load(fixtures_dir / "maskgil_gpt_tiny_io.npz")
  tokens, labels = torch.tensor(io["masked_code"]).view(2, 16), torch.tensor(io["labels"])
  with torch.no_grad():
    np.testing.assert_allclose(model(tokens, labels), io["logits_cond"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(model(tokens, torch.full((2,), 10)), io["logits_uncond"],
                               atol=ATOL, rtol=0)


def test_vq_fixture_loads_strictly_and_reproduces_codes_and_images(fixtures_dir):
  vq = tm.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.pt",
                         vq_fixture_config().tokenizer.to_dict())
  io = np.load(fixtures_dir / "llamagen_vq_tiny_io.npz")
  images = torch.tensor(io["images"])
  with torch.no_grad():
    np.testing.assert_allclose(vq.quant_conv(vq.encoder(images)), io["pre_quant"], atol=ATOL,
                               rtol=0)
  codes = vq.encode(images)
  np.testing.assert_array_equal(codes.reshape(-1), io["indices"])
  np.testing.assert_allclose(vq.decode_code(codes), io["decoded"], atol=ATOL, rtol=0)


def test_strict_loading_names_the_wrong_keys(fixtures_dir):
  config = tiny_config("tiny:maskgil")  # native layout: QK-norm keys the fixture lacks
  with pytest.raises(RuntimeError, match="q_norm.weight"):
    tm.load_transformer(fixtures_dir / "llamagen_gpt_tiny.pt", config.model.to_dict())
  with pytest.raises(ValueError, match="carries no config"):
    tm.load_transformer(fixtures_dir / "llamagen_gpt_tiny.pt")


# ---- native exports match JAX ---------------------------------------------------------------
@pytest.fixture(scope="module")
def native(tmp_path_factory):
  """A random tiny MaskGIL (grouped KV heads) and tokenizer, exported in the native layout."""
  tmp = tmp_path_factory.mktemp("native")
  config = tiny_config("tiny:maskgil", {"model.n_kv_head": 2})
  gpt = random_transformer(config, seed=1)
  vq = random_tokenizer(config, seed=2)
  export.export(save_run(tmp / "gpt", gpt, config), "native", tmp / "gpt.safetensors")
  export.export(save_run(tmp / "vq", vq, tokenizer_run_config(config)), "native", tmp / "vq.pt")
  return dict(config=config, gpt=gpt, vq=vq, gpt_file=tmp / "gpt.safetensors",
              vq_file=tmp / "vq.pt")


def test_native_transformer_matches_jax_logits(native):
  model = tm.load_transformer(native["gpt_file"])  # the config comes from the file
  assert model.config.qk_norm and model.config.norm_placement == "post"
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 513, (3, 16))  # 512 is MASK
  labels = np.array([0, 4, 10])  # 10: the null class
  for mode in ("bidirectional", "causal"):
    forward = jax.jit(lambda m, t, l: m(t, l, mode=mode))
    expected = forward(native["gpt"], jnp.asarray(tokens), jnp.asarray(labels))
    with torch.no_grad():
      actual = model(torch.tensor(tokens), torch.tensor(labels), mode)
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)
    assert np.abs(np.asarray(expected)).max() > 0.1  # not a comparison of near-zeros


def test_native_tokenizer_matches_jax_codes_and_images(native):
  vq = tm.load_tokenizer(native["vq_file"])
  images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  expected_codes, expected = jax_vq.reconstruct(native["vq"], jnp.asarray(images))
  codes = vq.encode(torch.tensor(images).permute(0, 3, 1, 2))
  np.testing.assert_array_equal(codes, expected_codes)
  np.testing.assert_allclose(vq.decode_code(codes).permute(0, 2, 3, 1), expected, atol=ATOL,
                             rtol=0)


def greedy(**kw):
  return sampling.DecodeSettings.create(temperature=0.0, choice_temperature=0.0, **kw)


def test_greedy_mar_matches_the_jax_decoder(native):
  cfg_scale = 2.0
  model = tm.load_transformer(native["gpt_file"])
  labels = np.array([3, 7])
  tokens = tm.greedy_mar(model, torch.tensor(labels), steps=4, cfg_scale=cfg_scale)
  expected = mar.generate_jit(native["gpt"], jnp.asarray(labels), jax.random.key(0),
                              greedy(cfg_scale=cfg_scale, steps=4)).tokens
  np.testing.assert_array_equal(tokens, expected)
  assert (tokens < 512).all()  # every position committed, never to MASK


def test_greedy_ar_matches_the_jax_decoder(native):
  model = tm.load_transformer(native["gpt_file"])
  labels = np.array([3, 7])
  tokens = tm.greedy_ar(model, torch.tensor(labels), cfg_scale=1.5)
  expected = ar.generate_jit(native["gpt"], jnp.asarray(labels), jax.random.key(0),
                             greedy(cfg_scale=1.5)).tokens
  np.testing.assert_array_equal(tokens, expected)


@pytest.mark.parametrize("schedule", ["arccos", "cosine", "linear", "square"])
def test_tokens_per_step_is_the_shared_schedule(schedule):
  for steps, n in ((8, 256), (12, 1024), (3, 2)):
    assert tm.tokens_per_step(schedule, steps, n) == list(
        np.asarray(schedules.tokens_per_step(schedule, steps, n)))


def test_runs_from_a_copy_of_the_file_without_jax(native, tmp_path):
  """Exported models run where only torch is installed: load the file alone, JAX blocked."""
  script = f"""
import importlib.util, sys
for name in ("jax", "jaxlib", "flax", "maskgil_jax"):
    sys.modules[name] = None  # any import of them fails
spec = importlib.util.spec_from_file_location("torch_model", {tm.__file__!r})
tm = importlib.util.module_from_spec(spec)
sys.modules["torch_model"] = tm
spec.loader.exec_module(tm)
import torch
gpt = tm.load_transformer({str(native["gpt_file"])!r})
vq = tm.load_tokenizer({str(native["vq_file"])!r})
codes = tm.greedy_mar(gpt, torch.tensor([1, 2]), steps=4, cfg_scale=1.0)
images = vq.decode_code(codes.view(2, 4, 4))
print(tuple(images.shape), bool(torch.isfinite(images).all()))
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "(2, 3, 8, 8) True"
