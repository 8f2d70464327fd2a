"""`python -m maskgil_jax.sample`: outputs, determinism, checkpoint kinds, one-line errors."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from maskgil_jax import checkpoints, configlib, sample
from maskgil_jax.decode import generate_tokens, sample_grid
from maskgil_jax.loading import load_generator, load_tokenizer
from tiny_models import write_random_vq

MASKGIL = ["--config", "tiny:maskgil_reference", "--decode", "mar", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
  return write_random_vq(tmp_path_factory.mktemp("vq") / "vq_tiny.pt")


def run(*argv):
  return sample.main([str(a) for a in argv])


def test_mar_writes_images_tokens_and_settings_deterministically(fixtures_dir, tokenizer_file,
                                                                  tmp_path, capsys):
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
  model = load_generator(ckpt, config.model)
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
  assert json.loads((tmp_path / "c" / "samples.json").read_text())["settings"]["ckpt_step"] == 0

  # the run trains on: its newest step is other weights, so that folder refuses it, while the
  # step folder it was made from (the same checkpoint, step 0) is accepted
  checkpoints.save_params(tmp_path / "run", model, config, step=1)
  argv = ["--decode", "mar", "--labels", "0,1,2,3", "--tokens-only", "--out", tmp_path / "c"]
  assert run("--ckpt", tmp_path / "run", *argv) == 2
  assert "settings.ckpt_step" in capsys.readouterr().err
  assert run("--ckpt", tmp_path / "run" / "checkpoints" / "0", *argv) == 0


def test_hybrid_with_a_separate_llamagen_model_reproduces_its_greedy_prefix(fixtures_dir,
                                                                           tmp_path):
  io = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  assert run("--config", "tiny:maskgil_reference", "--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt",
             "--ar-config", "tiny:llamagen", "--ar-ckpt", fixtures_dir / "llamagen_gpt_tiny.pt",
             "--decode", "hybrid", "--ar-tokens", 8, "--steps", 4, "--cfg-scale", 3,
             "--ar-cfg-scale", 3, "--ar-temperature", 0, "--labels", "3,7", "--tokens-only",
             "--out", tmp_path) == 0
  out = np.load(tmp_path / "samples.npz")
  # w = 3 is LlamaGen's cfg 4.0; greedy, so the AR half is the fixture's generate
  np.testing.assert_array_equal(out["tokens"].reshape(2, 16)[:, :8], io["gen_greedy_cfg4"][:, :8])
  settings = json.loads(str(out["settings"]))
  assert settings["ar_tokens"] == 8 and settings["ar_temperature"] == 0.0
  assert settings["ar_cfg_scale"] == 3.0 and settings["hybrid_schedule"] == "spread"


@pytest.mark.parametrize("argv, message", [
    (["--labels", "3,12"], "--labels: [12]; classes are 0..9"),
    (["--labels", "3", "--decode", "ar", "--tokens-only"],
     "--decode ar: layout 'maskgil_reference'"),
    (["--labels", "3"], "images need a tokenizer"),
    (["--labels", "3", "--tokens-only", "--steps", "0"], "config.decode.steps"),
    (["--labels", "3", "--ar-ckpt", "ar.pt"], "--ar-ckpt is only used with --decode hybrid"),
    (["--labels", "3", "--ema", "--tokens-only"], "--ema reads the EMA parameters"),
    # one MAR-trained checkpoint cannot write the hybrid's AR half
    (["--labels", "3", "--decode", "hybrid", "--tokens-only"],
     "objective 'mar', which never teaches AR; give an AR model with --ar-ckpt"),
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
  assert run("--config", "tiny:llamagen", "--ckpt", tmp_path / "nothing.pt", "--tokens-only",
             "--out", tmp_path) == 2
  assert "no such file" in capsys.readouterr().err
  assert not (tmp_path / "shards" / "settings.json").exists()  # failed runs bind no settings


class Preempted(Exception):
  pass


def count_generation(monkeypatch, fail_at=None):
  """Record the sample indices of every generated batch; raise when batch `fail_at` (0-based)
  starts, as a preemption would."""
  batches = []

  def keys(seed_key, indices):
    if len(batches) == fail_at:
      raise Preempted(f"batch {fail_at}")
    batches.append(np.asarray(indices))
    return original(seed_key, indices)

  original = sample.sample_keys
  monkeypatch.setattr(sample, "sample_keys", keys)
  return batches


def test_an_interrupted_run_resumes_to_the_same_file(fixtures_dir, tokenizer_file, tmp_path,
                                                     monkeypatch, capsys):
  common = [*MASKGIL, "--ckpt", fixtures_dir / "maskgil_gpt_tiny.pt", "--per-class", 1,
            "--tokenizer", tokenizer_file]
  assert run(*common, "--out", tmp_path / "whole") == 0  # 10 samples: 3 batches of 4

  with monkeypatch.context() as m:
    first = count_generation(m, fail_at=2)
    with pytest.raises(Preempted):
      run(*common, "--out", tmp_path / "cut")
  assert not (tmp_path / "cut" / "samples.npz").exists()
  # batch 0 was written; batch 1, in flight when batch 2 failed to start, was written too
  assert len(list((tmp_path / "cut" / "shards").glob("shard_*"))) == 2

  second = count_generation(monkeypatch)
  assert run(*common, "--batch-size", 3, "--out", tmp_path / "cut") == 0
  assert "2 generated now on 1 devices, 8 stored before" in capsys.readouterr().out
  generated = np.concatenate(first + second)
  np.testing.assert_array_equal(np.sort(generated[generated < 10]), np.arange(10))  # each once

  whole, cut = (np.load(tmp_path / d / "samples.npz") for d in ("whole", "cut"))
  assert sorted(cut.files) == ["arr_0", "labels", "settings", "tokens"]
  for name in cut.files:
    np.testing.assert_array_equal(cut[name], whole[name])
  record = json.loads((tmp_path / "cut" / "samples.json").read_text())
  assert record["settings"] == json.loads(str(cut["settings"]))
  assert record["label_counts"] == [1] * 10
  grids = [(tmp_path / d / "grid.png").read_bytes() for d in ("whole", "cut")]
  assert grids[0] == grids[1]
  assert not list((tmp_path / "cut" / "shards").glob("shard_*"))  # merged, then deleted

  # the same command again finds the set complete; other settings are refused, the set kept
  assert run(*common, "--out", tmp_path / "cut") == 0
  assert len(second) == 1 and "0 generated now" in capsys.readouterr().out
  before = (tmp_path / "cut" / "samples.npz").read_bytes()
  for other in (["--seed", 1], ["--cfg-scale", 2], ["--tokens-only"]):
    assert run(*common, *other, "--out", tmp_path / "cut") == 2
    assert "holds samples made with other settings" in capsys.readouterr().err
  assert len(second) == 1 and (tmp_path / "cut" / "samples.npz").read_bytes() == before


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_a_run_resumed_on_two_hosts_draws_the_same_tokens(fixtures_dir, tmp_path, monkeypatch):
  """A run cut after one batch of 3 on one device is finished by two processes with two CPU
  devices each (jax.distributed on localhost; subprocesses, as XLA_FLAGS must precede JAX's
  start): each process generates the missing samples of its own range, in global batches of 4
  (2 rows per process, the process with less to do padding), yet every sample draws the tokens
  of an uninterrupted one-device run."""
  common = ["--config", "tiny:maskgil_reference", "--ckpt",
            fixtures_dir / "maskgil_gpt_tiny.safetensors", "--decode", "mar",
            "--labels", "0,1,2,3,4,5,6,7,8,9,1,2,3", "--batch-size", 3, "--tokens-only"]
  assert run(*common, "--out", tmp_path / "one") == 0
  with monkeypatch.context() as m:
    count_generation(m, fail_at=1)
    with pytest.raises(Preempted):
      run(*common, "--out", tmp_path / "two")  # stores 0..2; process 0 of 2 owns 0..5
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(pathlib.Path(sample.__file__).parents[1]))
  host = ("import sys, jax; jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2])); "
          "from maskgil_jax import sample; sys.exit(sample.main(sys.argv[3:]))")
  address = f"localhost:{free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", host, address, str(i), *map(str, common),
                             "--out", str(tmp_path / "two")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
  assert "10 generated now on 4 devices, 3 stored before" in outputs[0][0]
  one = np.load(tmp_path / "one" / "samples.npz")
  two = np.load(tmp_path / "two" / "samples.npz")
  for name in one.files:
    np.testing.assert_array_equal(one[name], two[name])
