"""Running a test's worker script in a fresh Python (its own XLA_FLAGS, e.g. simulated devices)
and reading back the one `RESULT {json}` line it prints."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_worker(script: str, *args: str, timeout: int = 600):
  """The JSON after the worker's last `RESULT ` line; fails the test with the worker's stderr
  when it exits with an error or prints no result."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1][len("RESULT "):])
