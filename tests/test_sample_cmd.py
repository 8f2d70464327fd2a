"""`python -m maskgil_jax.sample`: outputs, determinism, checkpoint kinds, one-line errors."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from maskgil_jax import checkpoints, configlib, sample
from maskgil_jax.decode import generate_tokens, sample_grid
from maskgil_jax.interop import torch_io, vq_names
from maskgil_jax.models.vq import VQModel, load_tokenizer

MASKGIL = ["--config", "tiny:maskgil_reference", "--decode", "mar", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
  """A tiny VQ with the tiny generator's 512 codes and random weights, saved as LlamaGen would
  (filled from shapes: building it eagerly takes far longer)."""
  config = configlib.finalize(configlib.load_config("tiny"))
  abstract = nnx.eval_shape(lambda: VQModel(config.tokenizer, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  fill = lambda a: (rng.normal(0, 0.3, a.shape).astype(a.dtype)
                    if np.issubdtype(a.dtype, np.floating) else np.zeros(a.shape, a.dtype))
  path = tmp_path_factory.mktemp("vq") / "vq_tiny.pt"
  torch_io.save_state_dict(vq_names.export_vq_state_dict(jax.tree.map(fill, abstract)), path)
  return path


def run(*argv):
  return sample.main([str(a) for a in argv])


def test_mar_writes_images_tokens_and_settings_deterministically(fixtures_dir, tokenizer_file,
                                                                  tmp_path):
  ckpt = fixtures_dir / "maskgil_gpt_tiny.pt"
  compiled = generate_tokens._cache_size()
  assert run(*MASKGIL, "--ckpt", ckpt, "--per-class", 1, "--tokenizer", tokenizer_file,
             "--out", tmp_path / "a") == 0
  assert generate_tokens._cache_size() == compiled + 1  # 3 batches (last padded), one program
  out = np.load(tmp_path / "a" / "samples.npz")
  images, tokens = out["arr_0"], out["tokens"]
  assert images.shape == (10, 8, 8, 3) and images.dtype == np.uint8
  assert tokens.shape == (10, 4, 4) and ((tokens >= 0) & (tokens < 512)).all()
  np.testing.assert_array_equal(out["labels"], np.arange(10))
  settings = json.loads(str(out["settings"]))
  assert settings["decode"] == "mar" and settings["cfg_scale"] == 3.0 and settings["steps"] == 8
  assert settings["cfg_scale_llamagen"] == 4.0 and settings["num_samples"] == 10
  png = np.asarray(Image.open(tmp_path / "a" / "grid.png"))
  assert png.shape == (3 * 8, 4 * 8, 3)  # 10 images: 4 columns, 3 rows, 2 cells black
  np.testing.assert_array_equal(png[8:16, 8:16], images[5])  # row 1, column 1
  assert not png[16:, 16:].any()

  # the trainer's sample_grid, given samples 0..3's labels and keys, draws the same images
  config = configlib.finalize(configlib.load_config("tiny:maskgil_reference"))
  model = sample.load_generator(ckpt, config.model)
  vq = load_tokenizer(tokenizer_file, config.tokenizer)
  keys = sample.sample_keys(jax.random.PRNGKey(0), jnp.arange(4))  # samples 0..3 of seed 0
  grid = sample_grid(model, vq, jnp.arange(4), keys, config)
  np.testing.assert_array_equal(grid, images[:4])

  # the same command and seed: the same tokens, with or without a tokenizer
  assert run(*MASKGIL, "--ckpt", ckpt, "--per-class", 1, "--tokens-only",
             "--out", tmp_path / "b") == 0
  again = np.load(tmp_path / "b" / "samples.npz")
  np.testing.assert_array_equal(again["tokens"], tokens)
  assert "arr_0" not in again and not (tmp_path / "b" / "grid.png").exists()

  # our own checkpoint (config read from it) holds the same model: the same first batch
  checkpoints.save_params(tmp_path / "run", model, config)
  assert run("--ckpt", tmp_path / "run", "--decode", "mar", "--batch-size", 4,
             "--labels", "0,1,2,3", "--tokens-only", "--out", tmp_path / "c") == 0
  np.testing.assert_array_equal(np.load(tmp_path / "c" / "samples.npz")["tokens"], tokens[:4])


def test_hybrid_with_a_separate_llamagen_model_reproduces_its_greedy_prefix(fixtures_dir,
                                                                           tmp_path):
  io = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  assert run("--config", "tiny:maskgil_reference", "--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt",
             "--ar-config", "tiny:llamagen", "--ar-ckpt", fixtures_dir / "llamagen_gpt_tiny.pt",
             "--decode", "hybrid", "--ar-tokens", 8, "--steps", 4, "--cfg-scale", 3,
             "--temperature", 0, "--labels", "3,7", "--tokens-only", "--out", tmp_path) == 0
  out = np.load(tmp_path / "samples.npz")
  # w = 3 is LlamaGen's cfg 4.0; greedy, so the AR half is the fixture's generate
  np.testing.assert_array_equal(out["tokens"].reshape(2, 16)[:, :8], io["gen_greedy_cfg4"][:, :8])
  settings = json.loads(str(out["settings"]))
  assert settings["ar_tokens"] == 8 and settings["temperature"] == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--labels", "3,12"], "--labels: [12]; classes are 0..9"),
    (["--labels", "3", "--decode", "ar"], "--decode ar: layout 'maskgil_reference'"),
    (["--labels", "3"], "images need a tokenizer"),
    (["--labels", "3", "--tokens-only", "--steps", "0"], "config.decode.steps"),
    (["--labels", "3", "--ar-ckpt", "ar.pt"], "--ar-ckpt is only used with --decode hybrid"),
    (["--labels", "3", "--ema", "--tokens-only"], "--ema reads the EMA parameters"),
])
def test_bad_requests_fail_with_one_line(fixtures_dir, tmp_path, capsys, argv, message):
  code = run("--config", "tiny:maskgil_reference", "--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt",
             *argv, "--out", tmp_path)
  err = capsys.readouterr().err
  assert code == 2 and message in err and "Traceback" not in err


def test_checkpoint_problems_are_named(fixtures_dir, tmp_path, capsys):
  assert run("--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt", "--out", tmp_path) == 2
  assert "--config is required with a PyTorch checkpoint" in capsys.readouterr().err
  assert run("--config", "tiny:llamagen", "--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt",
             "--decode", "ar", "--tokens-only", "--out", tmp_path) == 2
  assert "missing tok_embeddings.weight" in capsys.readouterr().err
  assert run("--config", "tiny:llamagen", "--ckpt", tmp_path / "nothing.pt", "--out", tmp_path) == 2
  assert "no such file" in capsys.readouterr().err


def test_two_devices_share_each_batch_and_draw_the_same_tokens(fixtures_dir, tmp_path):
  """The data axis spans two CPU devices (a subprocess: XLA_FLAGS must precede JAX's start);
  batch 3 becomes 4 there, other batches, yet every sample draws the same tokens."""
  common = ["--config", "tiny:maskgil_reference", "--ckpt",
            fixtures_dir / "maskgil_gpt_tiny.safetensors", "--decode", "mar",
            "--labels", "0,1,2,3,4", "--batch-size", 3, "--tokens-only"]
  assert run(*common, "--out", tmp_path / "one") == 0
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(pathlib.Path(sample.__file__).parents[1]))
  proc = subprocess.run([sys.executable, "-m", "maskgil_jax.sample", *map(str, common),
                         "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one = np.load(tmp_path / "one" / "samples.npz")
  two = np.load(tmp_path / "two" / "samples.npz")
  np.testing.assert_array_equal(one["tokens"], two["tokens"])
  assert json.loads(str(two["settings"]))["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
