"""The launchers in dry-run mode: each prints its usage on --help and, with DRY_RUN=1, every
command it would run (shell-quoted `+ ` lines), which must be the commands of the design:
one process per GPU with its device check on SLURM; a git archive of one commit, a Python 3.11
venv, stale-run cleanup, per-worker logs and multi-slice queued resources on TPU."""
import os
import pathlib
import shlex
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(script, *args, **env):
  proc = subprocess.run(["bash", str(REPO / "launch" / script), *args], cwd=REPO,
                        env=dict(os.environ, DRY_RUN="1", **env), capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == "dry run: nothing started"  # not "ready" / "finished"
  commands = [shlex.split(l[2:]) for l in proc.stdout.splitlines() if l.startswith("+ ")]
  for c in commands:  # what runs on the workers is valid shell
    if "--command" in c:
      check = subprocess.run(["bash", "-n", "-c", c[c.index("--command") + 1]],
                             capture_output=True, text=True, timeout=60)
      assert check.returncode == 0, check.stderr
  return commands, proc


def test_dry_runs_print_commands_a_person_can_read():
  _, proc = launch("slurm_gpu.sbatch", "configs/tiny.py", "/runs/my run", "--config.seed=1")
  line = next(l for l in proc.stdout.splitlines() if l.startswith("+ srun"))
  assert line.endswith("python -m maskgil_jax.train --config configs/tiny.py --workdir "
                       "'/runs/my run' --config.mesh.local_devices=1 --config.seed=1")
  assert "\\" not in line  # no backslash escapes


def test_every_launcher_has_help():
  for script in ("slurm_gpu.sbatch", "tpu_setup.sh", "tpu_pod.sh"):
    proc = subprocess.run(["bash", str(REPO / "launch" / script), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "DRY_RUN=1" in proc.stdout, script
    assert "SBATCH" not in proc.stdout and "set -euo" not in proc.stdout
    bad = subprocess.run(["bash", str(REPO / "launch" / script)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_slurm_one_process_per_gpu_with_a_device_check():
  sbatch = (REPO / "launch" / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=8" in sbatch and "#SBATCH --gpus-per-node=8" in sbatch
  commands, _ = launch("slurm_gpu.sbatch", "configs/tiny.py", "/runs/x", "--config.mesh.fsdp=8")
  (srun,) = commands
  assert srun[:2] == ["srun", "--kill-on-bad-exit=1"]
  train = srun[srun.index("python"):]
  # jax.distributed is left to SLURM's environment: nothing forced
  assert train == ["python", "-m", "maskgil_jax.train", "--config", "configs/tiny.py",
                   "--workdir", "/runs/x", "--config.mesh.local_devices=1", "--config.mesh.fsdp=8"]
  commands, _ = launch("slurm_gpu.sbatch", "c.py", "/w", GPUS_PER_PROCESS="2")
  assert "--config.mesh.local_devices=2" in commands[0]
  # the per-task wrapper turns GPUS_PER_PROCESS into explicit local device ids
  wrapper = commands[0][commands[0].index("-c") + 1]
  out = subprocess.run(["bash", "-c", wrapper, "task", "sh", "-c", "echo $JAX_LOCAL_DEVICE_IDS"],
                       env=dict(os.environ, GPUS_PER_PROCESS="2", SLURM_LOCALID="3"),
                       capture_output=True, text=True, timeout=60)
  assert out.stdout.strip() == "6,7"


def test_tpu_setup_ships_a_commit_into_a_venv():
  commands, _ = launch("tpu_setup.sh", "my-tpu", "us-east5-a")
  head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                        text=True).stdout.strip()
  archive, scp, ssh = commands
  assert archive[:3] == ["git", "-C", str(REPO)] and archive[3] == "archive" and archive[-1] == head
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  remote = ssh[ssh.index("--command") + 1]
  assert "uv venv --python 3.11" in remote and "'jax[tpu]==0.10.2'" in remote
  assert f"$HOME/maskgil_jax/{head}" in remote and "ln -sfn" in remote
  commands, _ = launch("tpu_setup.sh", "qr", "z", SLICES="2", PYTHON_VERSION="3.12")
  assert commands[1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "scp"]
  assert commands[2][:5] == ["gcloud", "compute", "tpus", "queued-resources", "ssh"]
  assert "--node=all" in commands[2] and "uv venv --python 3.12" in commands[2][-1]


def test_tpu_pod_cleans_up_logs_per_worker_and_spans_slices():
  commands, _ = launch("tpu_pod.sh", "qr", "z", "configs/maskgil_1b.py", "gs://b/run",
                       "--config.batch_size=8", SLICES="2", RUN_ID="r1")
  cleanup, start = commands
  for c in commands:
    assert c[:6] == ["gcloud", "compute", "tpus", "queued-resources", "ssh", "qr"]
    assert "--node=all" in c and "--worker=all" in c
  assert "run.pid" in cleanup[-1] and "kill -TERM -- -$pgid" in cleanup[-1]
  assert "libtpu_lockfile" in cleanup[-1]
  remote = start[-1]
  assert ("-m maskgil_jax.train --config.mesh.slices=2 --config configs/maskgil_1b.py "
          "--workdir gs://b/run --config.batch_size=8") in remote
  assert "--config.mesh.distributed" not in remote and "--batch-size=1024" in start
  assert "$HOME/maskgil_jax/logs/r1/worker-${MEGASCALE_SLICE_ID:-0}-$(hostname).log" in remote
  commands, _ = launch("tpu_pod.sh", "tpu", "z", "c.py", "gs://b/r")
  assert commands[1][:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
  assert "--config.mesh.slices" not in commands[1][-1]
  bad = subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), "a", "b", "c", "d"],
                       env=dict(os.environ, DRY_RUN="1", SLICES="two"), capture_output=True,
                       text=True, timeout=60)
  assert bad.returncode == 2 and "SLICES=two" in bad.stderr


def test_other_commands_start_the_same_way():
  commands, _ = launch("slurm_gpu.sbatch", "--ckpt", "/w", "--out", "/s", COMMAND="sample")
  assert commands[0][commands[0].index("python"):] == [
      "python", "-m", "maskgil_jax.sample", "--ckpt", "/w", "--out", "/s"]
  commands, _ = launch("slurm_gpu.sbatch", "--config", "c.py", "--out", "/o",
                       COMMAND="extract_codes", GPUS_PER_PROCESS="2")
  assert commands[0][-5:] == ["--config.mesh.local_devices=2", "--config", "c.py", "--out", "/o"]
  commands, _ = launch("tpu_pod.sh", "tpu", "z", "--ckpt", "gs://w", COMMAND="sample")
  assert "-m maskgil_jax.sample --ckpt gs://w >" in commands[1][-1]
  for script, args in (("slurm_gpu.sbatch", ()), ("tpu_pod.sh", ("tpu", "z"))):
    bad = subprocess.run(["bash", str(REPO / "launch" / script), *args], cwd=REPO,
                         env=dict(os.environ, DRY_RUN="1", COMMAND="rm"), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "COMMAND=rm" in bad.stderr


def fake_worker(tmp_path, **env):
  """tpu_pod.sh's run through the stand-in gcloud, on 2 workers whose python prints its
  arguments and the distributed mode it was given, instead of training."""
  python = tmp_path / "python"
  python.write_text("#!/bin/sh\nprintf 'mode=%s\\n' \"${MASKGIL_JAX_DISTRIBUTED:-unset}\"\n"
                    "for a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\n")
  python.chmod(0o755)
  proc = subprocess.run(
      ["bash", str(REPO / "launch" / "tpu_pod.sh"), "tpu", "z", "c.py", "/w d",
       "--config.data.path=it's \"here\" $HOME", "--x=a;b"], cwd=REPO,
      env=dict(os.environ, PATH=f"{REPO / 'tests' / 'standins'}:{os.environ['PATH']}",
               STANDIN_HOMES=str(tmp_path / "homes"), STANDIN_REPO=str(REPO),
               STANDIN_PYTHON=str(python), RUN_ID="q", **env),
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  logs = sorted((tmp_path / "homes").glob("worker-*/maskgil_jax/logs/q/*.log"))
  assert len(logs) == 2
  return [log.read_text().splitlines() for log in logs]


def test_tpu_pod_arguments_reach_every_worker_intact(tmp_path):
  """Quotes, spaces, `$` and `;` in arguments arrive as given; a worker whose environment does
  not name the job is told to initialise jax.distributed, one whose environment does is not."""
  for lines in fake_worker(tmp_path):
    assert lines == ["mode=yes", "arg=-m", "arg=maskgil_jax.train", "arg=--config", "arg=c.py",
                     "arg=--workdir", "arg=/w d", "arg=--config.data.path=it's \"here\" $HOME",
                     "arg=--x=a;b"]
  for lines in fake_worker(tmp_path, STANDIN_PORT="1234"):
    assert lines[0] == "mode=unset"
