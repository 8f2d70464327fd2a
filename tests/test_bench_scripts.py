"""Every script in bench/ runs on a tiny config in a fresh process (none can break unseen), and
prints the figures it promises."""
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
# bench/ files and the test that runs them: the scripts here, the side-by-side's modules in
# tests/test_bench_versus_torch.py (which runs each side's workers).
COVERED = {
    "train_step.py": "test_train_step_runs_tiny",
    "sample_speed.py": "test_sample_speed_runs_tiny",
    "versus_torch.py": "test_bench_versus_torch.py",
    "workloads.py": "test_bench_versus_torch.py",
    "jax_side.py": "test_bench_versus_torch.py",
    "torch_side.py": "test_bench_versus_torch.py",
    "reference_side.py": "test_bench_versus_torch.py",
    "tpu_attention.py": "test_tpu_attention_compiles_tiny",
    "tpu_table.py": "test_tpu_table_prints_its_stored_cells",
}


def run_script(*args: str, timeout: int = 600) -> str:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_every_bench_script_has_a_smoke_test():
  assert sorted(p.name for p in (REPO / "bench").glob("*.py")) == sorted(COVERED)
  here = pathlib.Path(__file__).read_text()
  for test in COVERED.values():
    assert (f"def {test}(" in here if test.startswith("test_") and not test.endswith(".py")
            else (REPO / "tests" / test).exists()), test


def test_train_step_runs_tiny():
  out = run_script("bench/train_step.py", "--sizes", "tiny", "--steps", "1", "--matmul", "256")
  (row,) = re.findall(r"^tiny\s+([\d.]+)M\s+8\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+"
                      r"([\d.]+)\s+([\d.]+)%\s+(\w+)$", out, re.M)
  params, _, step_s, tokens_s, images_s, _, of_matmul, _ = row
  assert float(params) > 0 and float(step_s) > 0 and float(of_matmul) > 0
  # images/s is 8 / step s before the step time is rounded to 3 decimals for printing
  assert abs(float(images_s) * float(step_s) - 8) <= 0.0005 * float(images_s) + 0.02 * 8
  assert "train_step: tiny at" in out


def test_sample_speed_runs_tiny():
  out = run_script("bench/sample_speed.py", "--config", "configs/tiny.py", "--batch-size", "2",
                   "--steps", "2", "--repeats", "1")
  assert "grid 4x4" in out, out
  rows = dict(re.findall(r"^(mar|hybrid|ar) \(.*?\)\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+[\d.]+x$",
                         out, re.M))
  assert sorted(rows) == ["ar", "hybrid", "mar"], out  # the tiny layout runs all three
  assert all(float(s) > 0 for s in rows.values())
  assert re.search(r"^MAR step [\d.]+ ms vs one full forward [\d.]+ ms", out, re.M), out
  assert "sample_speed: fastest" in out


def test_tpu_attention_compiles_tiny():
  """Splash against XLA attention by the TPU cost model, for the tiny config on one v5e chip
  (compiled here through libtpu, no TPU)."""
  out = run_script("bench/tpu_attention.py", "--configs", "tiny", "--chips", "1")
  rows = [l for l in out.splitlines() if l.startswith("| tiny |")]
  assert len(rows) == 2, out  # forward, forward + backward
  assert all(re.search(r"\| (splash|XLA) \([\d.]+x\) \|$", r) for r in rows), out


def test_tpu_table_prints_its_stored_cells(tmp_path):
  """The table from its resumable JSON lines (the cells are compiles of full-size models, far
  too slow for a test): every stored cell appears, the missing ones are marked."""
  import json
  stored = [json.loads(l) for l in (REPO / "bench" / "tpu_table.jsonl").read_text().splitlines()
            if l.strip()]
  out = run_script("bench/tpu_table.py", "--markdown")
  for row in stored:
    assert re.search(rf"^\| {re.escape(row['config'])} \| {re.escape(row['slice'])} \|", out,
                     re.M), (row["config"], row["slice"], out)
