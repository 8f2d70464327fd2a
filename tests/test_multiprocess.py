"""Real multi-process runs on one machine, started exactly as the launchers start them.

`launch/slurm_gpu.sbatch` runs with a stand-in `srun` (tests/standins/srun: 2 local tasks with
SLURM's task environment) and `launch/tpu_pod.sh` with a stand-in `gcloud` (each worker's
command run here, in a home of its own). Nothing is initialised by the test: each command sets
up jax.distributed from its environment (4 simulated CPU devices per process, gloo collectives,
coordinator on 127.0.0.1). The results are compared with the same commands run as one process
of 8 devices: training (straight, and resumed on 2 and on 1 process), sampling, code and caption
feature extraction. Then one process is killed mid-run: the other must stop with an `error:`
line naming it, within the heartbeat timeout, instead of a native abort.
"""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "standins"
HEARTBEAT_S = 5
FIXTURES = REPO / "tests" / "fixtures"
pytestmark = pytest.mark.slow


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(root: pathlib.Path, processes: int, **extra) -> dict:
  """What each process inherits: CPU devices (8 in all), gloo, a shared compilation cache."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                              "TPU_WORKER", "MEGASCALE", "MASKGIL_JAX_DISTRIBUTED"))}
  env.update(PATH=f"{STANDINS}:{env['PATH']}", JAX_PLATFORMS="cpu",
             XLA_FLAGS=(f"--xla_force_host_platform_device_count={8 // processes} "
                        "--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true"),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"), PYTHONUNBUFFERED="1",
             STANDIN_LOGS=str(root / "tasks"), **extra)
  env.pop("PYTHONPATH", None)  # the commands import the checkout they are started in
  return env


def run(cmd, env, timeout=900, ok=True):
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  if ok:
    tasks = pathlib.Path(env["STANDIN_LOGS"])
    errs = "".join(p.read_text()[-3000:] for p in sorted(tasks.glob("task-*.err"))) \
        if tasks.exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + errs
  return proc


def slurm(root, command, *args, timeout=900):
  """`COMMAND=command bash launch/slurm_gpu.sbatch ARGS`: 2 tasks of 4 devices."""
  env = environment(root, 2, COMMAND=command, JAX_COORDINATOR_PORT=str(free_port()),
                    GPUS_PER_PROCESS="4")  # each task drives its 4 simulated devices
  return run(["bash", "launch/slurm_gpu.sbatch", *args], env, timeout)


def one_process(root, command, *args):
  """The same command as one process of 8 devices, no launcher."""
  return run([sys.executable, "-m", f"maskgil_jax.{command}", *args], environment(root, 1))


def train_args(root, workdir, steps):
  return ["configs/tiny.py", str(workdir),
          "--config.data.name=codes", f"--config.data.path={root / CODES}",
          "--config.data.read_threads=0", "--config.data.prefetch=0",
          "--config.log.every_steps=1", "--config.ckpt.every_steps=2",
          "--config.model.remat_policy=none", f"--config.mesh.heartbeat_timeout_s={HEARTBEAT_S}",
          "--config.batch_size=8", f"--config.total_steps={steps}"]


def one_process_train(root, workdir, steps):
  config, work, *rest = train_args(root, workdir, steps)
  return one_process(root, "train", "--config", config, "--workdir", work, *rest)


SAMPLE = ["--decode", "mar", "--labels", ",".join(str(i % 10) for i in range(12)),
          "--tokens-only", "--steps", "2", "--batch-size", "8"]
CODES = "it's codes"  # a quote and a space: arguments must reach every process intact


def extract_codes_args(root, out):
  return ["--config", "configs/tiny.py", "--out", str(out),
          "--config.data.name=folder", f"--config.data.path={root / 'images'}",
          "--config.data.image_size=16", "--config.data.read_threads=0",
          "--config.data.prefetch=0", "--config.tokenizer.codebook_size=64",
          f"--config.tokenizer.ckpt={FIXTURES / 'llamagen_vq_tiny.safetensors'}",
          "--batch-size", "2", "--shard-size", "2"]


def extract_text_args(root, out):
  return ["--config", "configs/tiny.py:maskgil_t2i", "--out", str(out),
          "--config.data.name=caption_folder", f"--config.data.path={root / 'captioned'}",
          "--config.data.read_threads=0", "--config.data.prefetch=0",
          f"--config.text.encoder={FIXTURES / 't5_encoder_tiny'}",
          "--batch-size", "2", "--shard-size", "2"]


def write_inputs(root):
  """40 tiny code grids (training), 8 small images (codes), 6 captioned images (features)."""
  from PIL import Image
  from maskgil_jax.data import code_shards
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 512, (40, 4, 4))
  meta = code_shards.CodesMeta(source="test", image_size=8, grid=(4, 4), views=1,
                               codebook_size=1024, ten_crop=False, random_flip=False,
                               crop_range=1.1, fit="center_crop", tokenizer="random",
                               num_images=len(codes))
  code_shards.write_meta(root / CODES, meta)
  code_shards.write_shard(root / CODES, 0, len(codes), [
      code_shards.encode_record(i, i % 10, c[None], meta) for i, c in enumerate(codes)])
  for i in range(8):
    folder = root / "images" / f"class{i % 2}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  (root / "captioned").mkdir()
  for i in range(6):
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
        root / "captioned" / f"{i}.png")
    (root / "captioned" / f"{i}.txt").write_text(f"a picture number {i}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  write_inputs(root)
  # 2 processes, as the SLURM script starts them
  slurm(root, "train", *train_args(root, root / "straight", 4))
  slurm(root, "train", *train_args(root, root / "resumed", 2))
  slurm(root, "train", *train_args(root, root / "resumed", 4))
  slurm(root, "sample", "--ckpt", str(root / "straight"), *SAMPLE, "--out", str(root / "samples_p2"))
  slurm(root, "extract_codes", *extract_codes_args(root, root / "codes_p2"))
  slurm(root, "extract_text", *extract_text_args(root, root / "text_p2"))
  # 2 workers, as the TPU pod script starts them (stand-in gcloud, a home per worker)
  env = environment(root, 2, STANDIN_HOMES=str(root / "homes"), STANDIN_REPO=str(REPO),
                    STANDIN_PYTHON=sys.executable, STANDIN_PORT=str(free_port()), RUN_ID="r1")
  run(["bash", "launch/tpu_pod.sh", "my-tpu", "zone", *train_args(root, root / "pod", 4)], env)
  # 1 process of 8 devices
  one_process_train(root, root / "straight_p1", 6)
  shutil.copytree(root / "straight", root / "on_one")
  one_process_train(root, root / "on_one", 6)
  one_process(root, "sample", "--ckpt", str(root / "straight"), *SAMPLE,
              "--out", str(root / "samples_p1"))
  one_process(root, "extract_codes", *extract_codes_args(root, root / "codes_p1"))
  one_process(root, "extract_text", *extract_text_args(root, root / "text_p1"))
  return root


def losses(workdir):
  from maskgil_jax.training.metrics import read_jsonl
  return {r["step"]: r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


def test_resume_on_two_processes_is_exact(runs):
  straight, resumed = losses(runs / "straight"), losses(runs / "resumed")
  assert sorted(straight) == [1, 2, 3, 4]
  assert resumed == straight
  positions = (runs / "straight" / "checkpoints" / "4" / "data_iter").glob("*.json")
  assert sorted(p.name for p in positions) == ["process_0-of-2.json", "process_1-of-2.json"]


def test_two_processes_train_as_one_process_of_eight_devices(runs):
  """One data stream for any number of processes: the same global batches on the same mesh."""
  two, one = losses(runs / "straight"), losses(runs / "straight_p1")
  assert sorted(two) == [1, 2, 3, 4]
  assert [two[s] for s in two] == pytest.approx([one[s] for s in two], rel=1e-6, abs=1e-6)


def test_the_tpu_pod_script_starts_the_same_run_on_every_worker(runs):
  """Two workers, each in its own home with its own log, train as the SLURM tasks did."""
  assert losses(runs / "pod") == pytest.approx(losses(runs / "straight"), rel=1e-6, abs=1e-6)
  logs = sorted((runs / "homes").glob("worker-*/maskgil_jax/logs/r1/*.log"))
  assert [p.name for p in logs] == ["worker-0-worker-0.log", "worker-0-worker-1.log"]
  assert "done at step 4 of 4" in logs[0].read_text()


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


def test_extract_text_splits_the_work_and_the_union_is_complete(runs):
  def shards(out):
    return {p.name: np.load(p) for p in sorted(out.glob("*.npy"))}

  two, one = shards(runs / "text_p2"), shards(runs / "text_p1")
  assert len(one) == 6 and sorted(two) == sorted(one)  # 3 shards: features + index each
  for name in one:
    np.testing.assert_allclose(two[name], one[name], atol=1e-6)


def test_a_killed_process_stops_the_others_naming_it(tmp_path):
  write_inputs(tmp_path)
  env = environment(tmp_path, 2, COMMAND="train", JAX_COORDINATOR_PORT=str(free_port()),
                    GPUS_PER_PROCESS="4")
  job = subprocess.Popen(["bash", "launch/slurm_gpu.sbatch",
                          *train_args(tmp_path, tmp_path / "killed", 10000)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
  tasks = tmp_path / "tasks"
  deadline = time.monotonic() + 600
  while not (tmp_path / "killed" / "checkpoints" / "2").exists():
    assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
    time.sleep(0.2)
  os.kill(int((tasks / "task-1.pid").read_text()), 9)
  killed_at = time.monotonic()
  try:
    job.communicate(timeout=HEARTBEAT_S * 6 + 60)
  except subprocess.TimeoutExpired:
    job.kill()
    job.communicate()
    pytest.fail("the surviving process still runs long after the other was killed")
  waited = time.monotonic() - killed_at
  err = (tasks / "task-0.err").read_text()
  assert job.returncode == 2, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: lost process 1 of 2 (host "), err[-3000:]
  assert "Check failure" not in err and "Terminating process" not in err
  assert waited < HEARTBEAT_S + 30
