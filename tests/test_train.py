"""The trainer end to end on tiny configs: both tasks through the command line, exact resume,
preemption, the non-finite guard, the memory report and clear errors for bad input."""
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from maskgil_jax import checkpoints, configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.data import code_shards
from maskgil_jax.training.metrics import read_jsonl

REPO = pathlib.Path(__file__).resolve().parents[1]
# tiny CPU programs: the unoptimised XLA backend compiles about twice as fast
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
LIGHT_DATA = ["--config.data.read_threads=0", "--config.data.prefetch=0"]
# a smaller tiny tokenizer (half the channels, one res block per level), for both tasks
SMALL_VQ = ["--config.tokenizer.ch=32", "--config.tokenizer.z_channels=32",
            "--config.tokenizer.enc_res_blocks=1", "--config.tokenizer.dec_res_blocks=1"]


def entry_point(workdir, *overrides, timeout=240):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_XLA)
  cmd = [sys.executable, "-m", "maskgil_jax.train", "--config", "configs/tiny.py",
         "--workdir", str(workdir), *LIGHT_DATA, *SMALL_VQ, *overrides]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
  """Two steps of the tiny tokenizer task (discriminator on from step 2) via the command line."""
  workdir = tmp_path_factory.mktemp("tokenizer_run")
  proc = entry_point(workdir, "--config.task=tokenizer", "--config.total_steps=2",
                     "--config.log.every_steps=1", "--config.tokenizer.loss.disc_start=1",
                     "--config.tokenizer.loss.disc_layers=1",
                     "--config.tokenizer.loss.disc_channels=8")
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def test_tokenizer_task_end_to_end(tokenizer_run):
  workdir, proc = tokenizer_run
  assert "done at step 2 of 2" in proc.stdout
  records = read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  # the terminal: notices and one line per log step; no orbax chatter
  lines = proc.stderr.splitlines()
  assert any(l.startswith("training steps 1..2 of tokenizer") for l in lines), proc.stderr
  steps = [l for l in lines if l.startswith("step ")]
  assert [l.split()[1] for l in steps] == ["1/2", "2/2"]
  assert all(k in steps[-1] for k in ("loss", "lr", "gnorm", "tok/s", "ETA")), steps
  assert "orbax" not in proc.stderr.lower() and "Traceback" not in proc.stderr
  assert records[1]["train/disc_loss"] > 0 and np.isfinite(records[1]["train/loss"])
  assert records[1]["perf/images_per_s"] > 0 and records[1]["perf/tflops_per_device"] > 0
  assert list(workdir.glob("events.out.tfevents.*")) and list(workdir.glob("train*.INFO"))
  assert checkpoints.latest_step(workdir) == 2
  assert (workdir / "checkpoints" / "2" / "data_iter" / "process_0-of-1.json").is_file()
  assert checkpoints.restore_config(workdir).task == "tokenizer"


def test_generator_task_end_to_end_on_images(tokenizer_run, tmp_path):
  """MaskGIL on demo images encoded inside the step by the tokenizer trained above; a sample
  grid from the MAR decoder at the last step."""
  proc = entry_point(tmp_path, f"--config.tokenizer.ckpt={tokenizer_run[0]}",
                     "--config.total_steps=2", "--config.log.every_steps=1",
                     "--config.log.sample_every_steps=2", "--config.log.sample_count=4",
                     "--config.optim.ema_decay=0.9", "--config.decode.steps=2")
  assert proc.returncode == 0, proc.stderr[-4000:]
  records = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  assert {"train/loss", "train/accuracy", "train/grad_norm", "train/lr", "train/mask_ratio"} <= set(
      records[0])
  assert {"perf/tokens_per_s", "perf/tflops_per_device"} <= set(records[1])
  from PIL import Image
  grid = Image.open(tmp_path / "samples" / "step_00000002.png")
  assert grid.size == (16, 16)  # 4 samples of 8x8 pixels, 2 x 2
  config = checkpoints.restore_config(tmp_path)
  from flax import nnx
  from maskgil_jax.models.transformer import Transformer
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  ema = checkpoints.restore_params(tmp_path, abstract, ema=True)
  assert np.all(np.isfinite(np.asarray(ema.output.weight[...])))


# ---- in-process runs on pre-tokenized codes (one compiled program, cached between runs) ------
def write_codes(folder, codes):
  meta = code_shards.CodesMeta(source="test", image_size=8, grid=(4, 4), views=1,
                               codebook_size=1024, ten_crop=False, random_flip=False,
                               crop_range=1.1, fit="center_crop", tokenizer="random",
                               num_images=len(codes))
  code_shards.write_meta(folder, meta)
  code_shards.write_shard(folder, 0, len(codes), [
      code_shards.encode_record(i, i % 10, c[None], meta) for i, c in enumerate(codes)])
  return folder


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory):
  codes = np.random.default_rng(0).integers(0, 512, (40, 4, 4))
  return write_codes(tmp_path_factory.mktemp("codes"), codes)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """Identical programs compile once for the whole module (the runs below share one)."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  before = {n: getattr(jax.config, n) for n in names}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  yield
  for n, v in before.items():
    jax.config.update(n, v)


def codes_config(codes_dir, **overrides):
  base = {"data.name": "codes", "data.path": str(codes_dir), "data.read_threads": 0,
          "data.prefetch": 0, "log.every_steps": 1, "ckpt.every_steps": 2}
  return configlib.load_config("tiny", {**base, **overrides})


def test_restart_continues_exactly(codes_dir, compile_cache, tmp_path):
  from maskgil_jax.training.trainer import train
  straight = train(codes_config(codes_dir), tmp_path / "straight")
  assert straight["step"] == 6 and straight["stopped"] == "done"
  train(codes_config(codes_dir, total_steps=3), tmp_path / "restarted")
  assert checkpoints.latest_step(tmp_path / "restarted") == 3
  train(codes_config(codes_dir), tmp_path / "restarted")  # the same workdir: resumes at 3
  resumed = read_jsonl(tmp_path / "restarted" / "metrics.jsonl")
  assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
  assert losses(tmp_path / "restarted") == losses(tmp_path / "straight")  # bit for bit


def test_lost_data_position_counts_as_damage(codes_dir, compile_cache, tmp_path):
  """A newest step without its data position is not resumed with a restarted stream: the
  previous step is (and the run then equals the uninterrupted one), unless
  ckpt.restart_data says a restart is meant."""
  from maskgil_jax.training.trainer import train
  straight = tmp_path / "straight"
  train(codes_config(codes_dir), straight)
  for name, restart in (("fallback", False), ("restart", True)):
    run = tmp_path / name
    train(codes_config(codes_dir, total_steps=4), run)  # checkpoints at 2 and 4
    for f in (run / "checkpoints" / "4" / "data_iter").glob("*.json"):
      f.unlink()
    (run / "metrics.jsonl").unlink()
    train(codes_config(codes_dir, **{"ckpt.restart_data": restart}), run)
    resumed = read_jsonl(run / "metrics.jsonl")
    if not restart:
      assert [r["step"] for r in resumed] == [3, 4, 5, 6]  # from step 2
      assert list((run / "checkpoints").glob("4.unreadable-*"))
      assert losses(run) == {s: l for s, l in losses(straight).items() if s > 2}
    else:
      assert [r["step"] for r in resumed] == [5, 6]  # from step 4, the stream from its start
      assert losses(run) != {s: l for s, l in losses(straight).items() if s > 4}


def test_sigterm_saves_and_stops(codes_dir, compile_cache, tmp_path):
  from maskgil_jax.training.trainer import train
  jsonl = tmp_path / "metrics.jsonl"

  def preempt_after_first_step():
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().strip()):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  handler = signal.getsignal(signal.SIGTERM)
  threading.Thread(target=preempt_after_first_step, daemon=True).start()
  result = train(codes_config(codes_dir, total_steps=10_000, **{"ckpt.every_steps": 10_000}),
                 tmp_path)
  assert result["stopped"] == "preempted" and result["step"] < 10_000
  assert checkpoints.latest_step(tmp_path) == result["step"]  # saved on the way out
  assert signal.getsignal(signal.SIGTERM) == handler  # the previous handler is back


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(codes_dir, compile_cache,
                                                                   tmp_path):
  from maskgil_jax.training.trainer import TrainingError, train
  train(codes_config(codes_dir, total_steps=2), tmp_path / "run")
  # the data goes bad: codes beyond the embedding table make NaN embeddings (jnp.take fills)
  bad = write_codes(tmp_path / "bad_codes", np.full((40, 4, 4), 1000))
  with pytest.raises(TrainingError, match="non-finite loss or gradient at step 3"):
    train(codes_config(bad), tmp_path / "run")
  assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
  assert checkpoints.latest_step(tmp_path / "run") == 2  # nothing written after the bad step
  config = checkpoints.restore_config(tmp_path / "run")
  from flax import nnx
  from maskgil_jax.models.transformer import Transformer
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  kept = checkpoints.restore_params(tmp_path / "run", abstract)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(kept))


def test_memory_report_compiles_without_running(codes_dir, compile_cache, tmp_path, capsys):
  from maskgil_jax.training.trainer import train
  result = train(codes_config(codes_dir), tmp_path / "unused", memory_report=True)
  assert result["memory"]["arguments"] > 0 and result["memory"]["total"] > 0
  assert "train step memory per device" in capsys.readouterr().out
  assert not (tmp_path / "unused").exists()
  # remat_policy 'auto' (the default): the host's RAM holds a tiny step without recomputation
  assert result["remat_policy"] == "none"
  explicit = train(codes_config(codes_dir, **{"model.remat_policy": "dots_saveable"}),
                   tmp_path / "unused", memory_report=True)
  assert explicit["remat_policy"] == "dots_saveable"


def test_bad_config_value_and_unwritable_workdir(codes_dir, tmp_path):
  from maskgil_jax.training.trainer import TrainingError, train
  with pytest.raises(ConfigError, match="config.optim.schedule: 'cosine'"):
    train(codes_config(codes_dir, **{"optim.schedule": "cosine"}), tmp_path)
  with pytest.raises(ConfigError, match="config.optim.grad_accum"):
    train(codes_config(codes_dir, **{"optim.grad_accum": 3}), tmp_path)
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(TrainingError, match="--workdir .*a_file/run: not writable"):
    train(codes_config(codes_dir), blocker / "run")


def test_command_line_reports_bad_input_in_one_line(tmp_path):
  proc = entry_point(tmp_path, "--config.optim.lr=-1", timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == "error: config.optim.lr: must be > 0, got -1.0"


def test_logged_metrics_are_means_over_the_interval(codes_dir, compile_cache, tmp_path):
  """A log step every 2 steps records the mean of the per-step values it covers (the learning
  rate, instantaneous, is the logged step's own)."""
  from maskgil_jax.training.trainer import train
  train(codes_config(codes_dir, total_steps=4), tmp_path / "every")
  train(codes_config(codes_dir, total_steps=4, **{"log.every_steps": 2}), tmp_path / "pairs")
  every = {r["step"]: r for r in read_jsonl(tmp_path / "every" / "metrics.jsonl")}
  pairs = {r["step"]: r for r in read_jsonl(tmp_path / "pairs" / "metrics.jsonl")}
  assert sorted(pairs) == [2, 4]
  for step in (2, 4):
    for name in ("train/loss", "train/accuracy", "train/grad_norm"):
      mean = (every[step - 1][name] + every[step][name]) / 2
      np.testing.assert_allclose(pairs[step][name], mean, rtol=1e-6, err_msg=name)
    assert pairs[step]["train/lr"] == every[step]["train/lr"]
  assert every[1]["train/loss"] != every[2]["train/loss"]  # the means are not trivial
