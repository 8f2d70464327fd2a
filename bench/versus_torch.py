"""Our JAX code against its PyTorch twin and LlamaGen's own code, each in its own process.

  python bench/versus_torch.py [--workloads train,mar,ar1,ar4,vq] [--sizes B[,L,...]]
      [--rounds 3] [--threads all|1] [--reference-llamagen DIR] [--allow-load]

Sides (fp32, the same weights: ours are random and exported through the name tables; the
others load them):
- `ours`: the library as users call it (bench/jax_side.py);
- `twin`: `maskgil_jax/interop/torch_model.py` with the reference code's loops written out in
  bench/torch_side.py (every workload);
- `ref`: LlamaGen's code itself, from the checkout `--reference-llamagen DIR` points to
  (bench/reference_side.py; AR and VQ workloads only: LlamaGen has no MaskGIL).
Workloads: bench/workloads.py. `--sizes tiny` runs the tiny generators and a 32-px tokenizer
(a smoke run, not a speed result).

Each side runs in its own process with its runtime's default threading (`--threads all`), or
pinned to one core with one thread each (`--threads 1`: CPU affinity, `OMP_NUM_THREADS=1`,
`torch.set_num_threads(1)`); no thread-pool setting is changed otherwise. The processes of a
workload are started and built (our compile time reported apart), each run once to warm up,
then run one at a time, alternating, `--rounds` times each (the side that goes first rotates
every round), with a pause between runs; idle ones wait on a pipe, so no two sides compute at
once. Medians are kept; the ratios are the other side's median over ours (above 1: we are
faster).

Load. Ratios taken while other work runs measure that work as much as the code. At start the
1-minute load average must be at most 0.5 per core, else the run stops (exit 2) unless
`--allow-load`; during the runs the CPU time of other processes is measured from /proc/stat
(the machine's busy time less the running side's own), and a workload during which other
work kept more than 0.5 cores busy (median over its runs) has its ratios withheld unless
`--allow-load`. With `--allow-load` every line carries the load average and that measure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import workloads as wl  # noqa: E402  (bench/ is not a package)

SIDES = ("ours", "twin", "ref")
MARK = "@@bench "  # a worker's protocol lines on its stdout; anything else is echoed
MAX_LOAD_PER_CORE = 0.5
PAUSE_S = 0.5  # between runs: a finished side's spinning threads go to sleep meanwhile


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python bench/versus_torch.py",
                              description="JAX against PyTorch, one process per side.")
  p.add_argument("--workloads", default=",".join(wl.WORKLOADS),
                 help=f"comma-separated, of {', '.join(wl.WORKLOADS)}")
  p.add_argument("--sizes", default="B", help="generator sizes, comma-separated: tiny, B, L, XL")
  p.add_argument("--rounds", type=int, default=3, help="timed runs per side (medians kept)")
  p.add_argument("--threads", default="all", choices=("all", "1"),
                 help="each side's default threading, or one core and one thread each")
  p.add_argument("--reference-llamagen", metavar="DIR",
                 help="a checkout of LlamaGen's code: time it too (AR and VQ workloads)")
  p.add_argument("--allow-load", action="store_true",
                 help="report ratios under load (the load then goes into every line)")
  # internal: one side of one workload, driven over stdin/stdout by the main process
  p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
  p.add_argument("--workload", help=argparse.SUPPRESS)
  p.add_argument("--weights", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  unknown = set(args.workloads.split(",")) - set(wl.WORKLOADS)
  if unknown:
    p.error(f"unknown workloads {sorted(unknown)}; of {', '.join(wl.WORKLOADS)}")
  if args.rounds < 1:
    p.error("--rounds must be at least 1")
  if args.reference_llamagen and not args.worker:
    import reference_side
    missing = reference_side.missing_files(args.reference_llamagen)
    if missing:
      p.error(f"--reference-llamagen {args.reference_llamagen}: no {', '.join(missing)}")
  return args


def cores() -> int:
  return len(os.sched_getaffinity(0))


# ---- the worker: one side of one workload -----------------------------------------------------
def send(**message) -> None:
  print(MARK + json.dumps(message), flush=True)


def worker(args) -> int:
  """Build the workload on this side, say ready, then run it once per 'run' line on stdin."""
  if args.threads == "1":
    # before any runtime starts its thread pool: XLA and OpenMP size theirs from the affinity
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  import numpy as np
  if args.worker == "ours":
    import jax_side
    run, compile_s, weights = jax_side.build(args.workload, args.size)
    np.savez(args.weights, **weights)
    finish, threads = jax_side.block, f"{cores()} cpus"
  else:
    import torch
    if args.threads == "1":
      torch.set_num_threads(1)
    with np.load(args.weights) as f:
      weights = dict(f)
    if args.worker == "twin":
      import torch_side
      run, compile_s = torch_side.build(args.workload, args.size, weights)
    else:
      import reference_side
      run, compile_s = reference_side.build(args.workload, args.size, weights,
                                            args.reference_llamagen)
    finish, threads = (lambda out: out), f"{torch.get_num_threads()} threads"
    del weights
  send(ready=True, compile_s=compile_s, threads=threads)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    cpu, start = time.process_time(), time.perf_counter()
    finish(run())
    send(s=time.perf_counter() - start, cpu=time.process_time() - cpu)
  return 0


# ---- the main process -------------------------------------------------------------------------
def busy_seconds() -> float | None:
  """CPU seconds the whole machine has spent busy since boot (/proc/stat), None elsewhere."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Side:
  """A worker process; `run()` times one run of it."""

  def __init__(self, side: str, name: str, size: str, args, weights: str):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--workload", name,
           "--sizes", size, "--threads", args.threads, "--weights", weights]
    if side == "ref":
      cmd += ["--reference-llamagen", os.path.abspath(args.reference_llamagen)]
    env = dict(os.environ)  # this checkout's package, as in the main process
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(BENCH)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if args.threads == "1":
      env["OMP_NUM_THREADS"] = "1"
    self.side, self.name = side, name
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                 text=True, bufsize=1)

  def receive(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith(MARK):
        return json.loads(line[len(MARK):])
      print(line, end="", flush=True)
    code = self.proc.wait()
    raise RuntimeError(f"the {self.side} side of {self.name} exited ({code}) before answering")

  def run(self) -> tuple[float, float]:
    """(wall seconds, seconds other processes kept a core busy meanwhile)."""
    before = busy_seconds()
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    answer = self.receive()
    after = busy_seconds()
    other = None if before is None else max(0.0, after - before - answer["cpu"])
    return answer["s"], other

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.close()
      except BrokenPipeError:
        pass
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()


def measure(name: str, size: str, args, tmp: str) -> dict:
  """Medians per side, the other work's median cores, our compile time and threads."""
  sides = ["ours", "twin"]
  if args.reference_llamagen and name in wl.REFERENCE_WORKLOADS:
    sides.append("ref")
  weights = os.path.join(tmp, f"{name}-{size}.npz")
  started, ready = {}, {}
  try:
    started["ours"] = Side("ours", name, size, args, weights)
    ready["ours"] = started["ours"].receive()  # ours writes the weights the others load
    for side in sides[1:]:
      started[side] = Side(side, name, size, args, weights)
    for side in sides[1:]:
      ready[side] = started[side].receive()
    for side in sides:  # warm-up
      started[side].run()
      time.sleep(PAUSE_S)
    times = {s: [] for s in sides}
    other = []
    for r in range(args.rounds):
      for side in sides[r % len(sides):] + sides[:r % len(sides)]:
        s, o = started[side].run()
        times[side].append(s)
        if o is not None:
          other.append(o / s)
        time.sleep(PAUSE_S)
  finally:
    for proc in started.values():
      proc.close()
    if os.path.exists(weights):
      os.remove(weights)
  return {"median": {s: statistics.median(t) for s, t in times.items()},
          "other": statistics.median(other) if other else None,
          "compile_s": ready["ours"]["compile_s"],
          "threads": {s: ready[s]["threads"] for s in sides}}


def load_refusal(args) -> str | None:
  load = os.getloadavg()[0]
  if args.allow_load or load <= MAX_LOAD_PER_CORE * cores():
    return None
  return (f"load average {load:.2f} on {cores()} cores is over {MAX_LOAD_PER_CORE} per core: "
          "timings now would measure the other work as much as the code; run on an idle "
          "machine, or pass --allow-load to report them with the load")


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    args.size = args.sizes
    return worker(args)
  refusal = load_refusal(args)
  if refusal:
    print(f"error: {refusal}", file=sys.stderr)
    return 2
  from importlib.metadata import version
  print(f"{cores()} cores, fp32, one process per side, threads: {args.threads}, "
        f"jax {version('jax')}, PyTorch {version('torch')}, {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.2f}"
        + (", LlamaGen's code: yes" if args.reference_llamagen else ""), flush=True)
  head = (f"{'workload':<46}{'size':>5}{'ours s':>9}{'twin s':>9}{'ref s':>9}"
          f"{'twin/ours':>11}{'ref/ours':>10}{'compile s':>11}")
  print(head + ("  other cores  load" if args.allow_load else ""), flush=True)
  summary = []
  with tempfile.TemporaryDirectory(prefix="versus_torch") as tmp:
    for size in args.sizes.split(","):
      for name in args.workloads.split(","):
        if name == "vq" and size != args.sizes.split(",")[0]:
          continue  # the tokenizer has one size
        r = measure(name, size, args, tmp)
        m = r["median"]
        loaded = r["other"] is not None and r["other"] > MAX_LOAD_PER_CORE * cores()
        withheld = loaded and not args.allow_load
        ratio = lambda side: ("-" if side not in m else "withheld" if withheld
                              else f"{m[side] / m['ours']:.2f}x")
        secs = lambda side: f"{m[side]:.3f}" if side in m else "-"
        line = (f"{wl.WORKLOADS[name]:<46}{'-' if name == 'vq' else size:>5}{secs('ours'):>9}"
                f"{secs('twin'):>9}{secs('ref'):>9}{ratio('twin'):>11}{ratio('ref'):>10}"
                f"{r['compile_s']:>11.1f}")
        if args.allow_load:
          other = "?" if r["other"] is None else f"{r['other']:.2f}"
          line += f"  {other:>11}  {os.getloadavg()[0]:.2f}"
        print(line, flush=True)
        print(f"  threads: " + ", ".join(f"{s} {t}" for s, t in r["threads"].items()),
              flush=True)
        if withheld:
          print(f"  ratios withheld: other work kept {r['other']:.2f} cores busy during the "
                f"runs (over {MAX_LOAD_PER_CORE} per core)", flush=True)
        summary.append(f"{name}-{size} " + " ".join(
            f"{s}/ours {ratio(s)}" for s in ("twin", "ref") if s in m))
  print("versus_torch: " + "; ".join(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
