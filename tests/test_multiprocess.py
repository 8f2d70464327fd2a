"""Real multi-process runs on one machine: 2 processes joined by `jax.distributed` (coordinator
on 127.0.0.1, gloo CPU collectives), 4 simulated devices each, against one process of 8.

One launch of 2 processes does, in order: train the tiny model straight to step 4, train another
workdir to step 2 and resume it to 4 (both 2-process); sample from the checkpoint through
`sample.main` (one merged `samples.npz`); extract codes (each process its share). The one-process
run trains straight to step 6, resumes a copy of the 2-process checkpoint to 6, and samples and
extracts the same. A second launch kills one process mid-run: the other must stop with an error
within a bounded time instead of waiting forever in a collective.
"""
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
HEARTBEAT_S = 5

WORKER = textwrap.dedent("""
    import os, sys, signal, threading, pathlib
    process_id, num_processes, port, role, root = (int(sys.argv[1]), int(sys.argv[2]),
                                                   sys.argv[3], sys.argv[4], pathlib.Path(sys.argv[5]))
    devices = 8 // num_processes
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                               "--xla_backend_optimization_level=0 "
                               "--xla_llvm_disable_expensive_passes=true")
    import jax, numpy as np
    from maskgil_jax.parallel import mesh as mesh_lib
    if num_processes > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      mesh_lib.initialize_distributed("yes", heartbeat_timeout_s=int(sys.argv[6]),
                                      coordinator_address=f"127.0.0.1:{port}",
                                      num_processes=num_processes, process_id=process_id)
    from maskgil_jax import configlib, sample
    from maskgil_jax.training import trainer
    from maskgil_jax import extract_codes as ec
    from maskgil_jax.configlib import base_config
    from maskgil_jax.models.vq import VQModel
    from flax import nnx

    def config(**overrides):
      base = {"data.name": "codes", "data.path": str(root / "codes"), "data.read_threads": 0,
              "data.prefetch": 0, "log.every_steps": 1, "ckpt.every_steps": 2,
              "model.remat_policy": "none", "mesh.heartbeat_timeout_s": int(sys.argv[6]),
              "batch_size": 8}
      return configlib.load_config("tiny", {**base, **overrides})

    if role == "killed":  # train long; process 1 dies once the first checkpoint is there
      if process_id == 1:
        def watch():
          while not (root / "killed" / "checkpoints" / "2").exists():
            threading.Event().wait(0.2)
          print("KILLING", flush=True)
          os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=watch, daemon=True).start()
      trainer.train(config(total_steps=10000), root / "killed")
      sys.exit(0)

    tag = f"p{num_processes}"
    if num_processes > 1:
      trainer.train(config(total_steps=4), root / "straight")
      trainer.train(config(total_steps=2), root / "resumed")
      trainer.train(config(total_steps=4), root / "resumed")
    else:  # the same run on 1 process of 8 devices, and the 2-process checkpoint resumed here
      import shutil
      trainer.train(config(total_steps=6), root / "straight_p1")
      shutil.copytree(root / "straight", root / "on_one")
      trainer.train(config(total_steps=6), root / "on_one")
    sample.main(["--ckpt", str(root / "straight"), "--decode", "mar", "--labels",
                 ",".join(str(i % 10) for i in range(12)), "--tokens-only", "--steps", "2",
                 "--batch-size", "8", "--out", str(root / f"samples_{tag}")])
    c = base_config(tokenizer="tiny")
    c.data.update(dict(name="folder", path=str(root / "images"), image_size=16,
                       read_threads=0, prefetch=0))
    tok = VQModel(c.tokenizer, rngs=nnx.Rngs(0))
    summary = ec.extract_codes(c, root / f"codes_{tag}", tok, batch_size=2, shard_size=2,
                               progress=False)
""")

pytestmark = pytest.mark.slow


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(n, role, root):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  port = str(free_port())
  return [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(n), port, role, str(root),
                            str(HEARTBEAT_S)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(n)]


def finish(procs, timeout):
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  return outs


def write_inputs(root):
  """40 tiny code grids (training) and 8 small images (extraction)."""
  from PIL import Image
  from maskgil_jax.data import code_shards
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 512, (40, 4, 4))
  meta = code_shards.CodesMeta(source="test", image_size=8, grid=(4, 4), views=1,
                               codebook_size=1024, ten_crop=False, random_flip=False,
                               crop_range=1.1, fit="center_crop", tokenizer="random",
                               num_images=len(codes))
  code_shards.write_meta(root / "codes", meta)
  code_shards.write_shard(root / "codes", 0, len(codes), [
      code_shards.encode_record(i, i % 10, c[None], meta) for i, c in enumerate(codes)])
  for i in range(8):
    folder = root / "images" / f"class{i % 2}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  write_inputs(root)
  finish(start(2, "main", root), timeout=900)
  finish(start(1, "main", root), timeout=600)
  return root


def test_resume_on_two_processes_is_exact(runs):
  straight, resumed = losses(runs / "straight"), losses(runs / "resumed")
  assert sorted(straight) == [1, 2, 3, 4]
  assert resumed == straight
  positions = (runs / "straight" / "checkpoints" / "4" / "data_iter").glob("*.json")
  assert sorted(p.name for p in positions) == ["process_0-of-2.json", "process_1-of-2.json"]


def losses(workdir):
  from maskgil_jax.training.metrics import read_jsonl
  return {r["step"]: r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


def test_two_processes_train_as_one_process_of_eight_devices(runs):
  """One data stream for any number of processes: the same global batches on the same mesh."""
  two, one = losses(runs / "straight"), losses(runs / "straight_p1")
  assert sorted(two) == [1, 2, 3, 4]
  assert [two[s] for s in two] == pytest.approx([one[s] for s in two], rel=1e-6, abs=1e-6)


def test_a_two_process_checkpoint_resumes_exactly_on_one_process(runs):
  """The saved position is the global batch: the 1-process continuation of a 2-process run
  equals the 1-process run from the start."""
  resumed, one = losses(runs / "on_one"), losses(runs / "straight_p1")
  assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # 1-4 written by the 2-process run, 5-6 here
  assert [resumed[5], resumed[6]] == pytest.approx([one[5], one[6]], rel=1e-6, abs=1e-6)


def test_two_processes_write_one_sample_set_equal_to_one_process(runs):
  two, one = (np.load(runs / f"samples_{t}" / "samples.npz") for t in ("p2", "p1"))
  assert two["tokens"].shape == (12, 4, 4)
  np.testing.assert_array_equal(two["tokens"], one["tokens"])
  np.testing.assert_array_equal(two["labels"], one["labels"])


def test_extract_codes_splits_the_work_and_the_union_is_complete(runs):
  from maskgil_jax.data import code_shards

  def records(out):
    meta = code_shards.read_meta(out)
    import grain
    found = {}
    for path in code_shards.list_shards(out):
      source = grain.sources.ArrayRecordDataSource([str(path)])
      for i in range(len(source)):
        index, label, codes = code_shards.decode_record(source[i], meta)
        found[index] = (label, np.asarray(codes).tolist())
    return found

  two, one = records(runs / "codes_p2"), records(runs / "codes_p1")
  assert sorted(one) == list(range(8))
  assert two == one


def test_a_killed_process_stops_the_others(tmp_path):
  write_inputs(tmp_path)
  survivor, victim = start(2, "killed", tmp_path)
  out, err = victim.communicate(timeout=600)
  killed_at = time.monotonic()
  assert "KILLING" in out and victim.returncode == -9, err[-3000:]
  try:
    _, err = survivor.communicate(timeout=HEARTBEAT_S * 6 + 60)
  except subprocess.TimeoutExpired:
    survivor.kill()
    survivor.communicate()
    pytest.fail("the surviving process still runs long after the other was killed")
  waited = time.monotonic() - killed_at
  assert survivor.returncode != 0
  # gloo's collective fails at once, the coordination service then names the dead task
  assert "another task died" in err or "heartbeat timeout" in err, err[-3000:]
  assert waited < HEARTBEAT_S * 6 + 60
