"""Every shipped config compiled for TPU slices on this host: fits, memory, remat, estimates.

  python bench/tpu_table.py [--out bench/tpu_table.jsonl] [--configs maskgil_b,vq16]
      [--slices v5litepod-8,v5p-8,v6e-8] [--markdown]

Each cell is `python -m maskgil_jax.train --config C --memory-report --topology SLICE` (the
real train step at the config's own global batch, remat 'auto' choosing against the slice's
HBM) run in its own process, one JSON line per cell appended to --out as it finishes, so an
interrupted table resumes with the cells still missing (rerun the same command). A cell that
fails to compile is recorded with its error. `--markdown` prints the table docs/performance.md
holds from the JSON lines alone (no compiling), marking the cells not done.

Step time and MFU are XLA's cost-model ESTIMATES for the slice, not measurements. libtpu is
needed (`pip install "maskgil_jax[tpu-compile]"`).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# (name in the table, --config argument)
CONFIGS = (("maskgil_b", "maskgil_b"), ("maskgil_l", "maskgil_l"), ("maskgil_xl", "maskgil_xl"),
           ("maskgil_1b", "maskgil_1b"), ("maskgil_t2i_xl 256", "maskgil_t2i_xl:256"),
           ("maskgil_t2i_xl 512", "maskgil_t2i_xl:512"), ("llamagen_b", "llamagen_b"),
           ("llamagen_l", "llamagen_l"), ("llamagen_xl", "llamagen_xl"),
           ("llamagen_xxl", "llamagen_xxl"), ("llamagen_t2i_xl", "llamagen_t2i_xl"),
           ("vq16", "vq16"))
SLICES = ("v5litepod-8", "v5p-8", "v6e-8")
# the slice a config's launch command names, where one does (launch/tpu_pod.sh's example)
LAUNCH_SLICES = {"maskgil_1b": "v5p-128"}
DEFAULT_OUT = REPO / "bench" / "tpu_table.jsonl"


def cell(config: str, slice_name: str, timeout: int) -> dict:
  """One compile in a subprocess; the report's fields, or the error."""
  code = ("import json, sys; from maskgil_jax import configlib; from maskgil_jax.train import "
          "train; from maskgil_jax.parallel import topology; "
          f"r = train(configlib.load_config({config!r}, []), '/nonexistent', memory_report=True,"
          f" topology=topology.parse({slice_name!r})); "
          "print('RESULT ' + json.dumps(r['report']))")
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  start = time.time()
  try:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"compile did not finish in {timeout} s"}
  out = {"compile_s": round(time.time() - start, 1)}
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return {**out, **json.loads(line[len("RESULT "):])}
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  if "does not fit in a device's memory" in tail:  # memory.DoesNotFit: refused by the compiler
    return {**out, "fits": False, "refused": tail.removeprefix("error: ")[:300]}
  return {**out, "error": tail[:300]}


def done_cells(path: pathlib.Path) -> dict:
  rows = {}
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        row = json.loads(line)
        rows[(row["config"], row["slice"])] = row
  return rows


def plan(configs, slices) -> list[tuple[str, str, str]]:
  """(table name, --config, slice) of every cell, the named launch slices included."""
  cells = []
  for s in slices:
    cells += [(name, arg, s) for name, arg in configs]
  cells += [(name, arg, LAUNCH_SLICES[name]) for name, arg in configs if name in LAUNCH_SLICES]
  return cells


def with_estimate(row: dict) -> dict:
  """A row whose cost-model answer was negative and not yet read back (rows written before
  `compile_report.timed_part`): its timed part, MFU and images/s filled in."""
  if row.get("raw_seconds") is None:
    return row
  from maskgil_jax.training import compile_report
  seconds, untimed = compile_report.timed_part(row["raw_seconds"])
  fields = ("what", "devices", "device_kind", "memory", "hbm_gib", "xla_flops", "model_flops",
            "collectives", "peak_tflops", "target", "remat_policy", "items_per_call")
  report = compile_report.Report(**{k: row.get(k) for k in fields}, seconds=seconds,
                                 raw_seconds=row["raw_seconds"], untimed_ops=untimed)
  return {**row, **report.as_dict()}


def markdown(rows: dict, cells) -> str:
  head = ("| config | slice | fits | GiB per chip (HBM) | remat | est. step (ms) | est. MFU | "
          "est. img/s per chip |\n|---|---|---|---|---|---|---|---|")
  lines = [head]
  for name, _, s in cells:
    row = rows.get((name, s))
    row = with_estimate(row) if row else row
    if row is None:
      lines.append(f"| {name} | {s} | not done | | | | | |")
    elif "refused" in row:
      need = re.search(r"needs ([\d.]+) GiB for ([\w ]+) alone", row["refused"])
      policy = re.search(r"\(remat (\w+)\)", row["refused"])
      lines.append(f"| {name} | {s} | **no**: XLA needs {need.group(1)} GiB of "
                   f"{need.group(2).removeprefix('HLO ')} alone | | "
                   f"{policy.group(1) if policy else '-'} | | | |")
    elif "error" in row and "memory" not in row:
      lines.append(f"| {name} | {s} | error: {row['error'][:80]} | | | | | |")
    else:
      low, high = ("≥ ", "≤ ") if row.get("untimed_ops") else ("", "")
      mfu = f"{high}{100 * row['mfu']:.0f}%" if row.get("mfu") else "-"
      ips = row.get("items_per_second_per_chip")
      lines.append(
          f"| {name} | {s} | {'yes' if row['fits'] else '**no**'} | "
          f"{row['memory']['total']:.1f} ({row['hbm_gib']:g}) | {row['remat_policy'] or '-'} | "
          f"{low}{1e3 * row['seconds']:.0f} | {mfu} | {high}{ips:.1f} |" if row.get("seconds") else
          f"| {name} | {s} | {'yes' if row['fits'] else '**no**'} | "
          f"{row['memory']['total']:.1f} ({row['hbm_gib']:g}) | {row['remat_policy'] or '-'} | "
          f"- | - | - |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python bench/tpu_table.py", description=__doc__.split(
      "\n\n")[0])
  p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines, one per cell (resumed)")
  p.add_argument("--configs", help="comma-separated table names (default: all)")
  p.add_argument("--slices", default=",".join(SLICES))
  p.add_argument("--timeout", type=int, default=3600, help="seconds per compile")
  p.add_argument("--markdown", action="store_true", help="print the table from --out, exit")
  args = p.parse_args(argv)
  wanted = set(args.configs.split(",")) if args.configs else None
  configs = [c for c in CONFIGS if wanted is None or c[0] in wanted]
  cells = plan(configs, args.slices.split(","))
  out = pathlib.Path(args.out)
  rows = done_cells(out)
  if args.markdown:
    print(markdown(rows, cells))
    return 0
  for name, arg, s in cells:
    if (name, s) in rows:
      continue
    result = cell(arg, s, args.timeout)
    row = {"config": name, "slice": s, **result}
    with out.open("a") as f:
      f.write(json.dumps(row) + "\n")
    status = result.get("error") or (f"{result['memory']['total']:.1f} GiB, "
                                     f"{result.get('remat_policy')}")
    print(f"{name} on {s}: {status} ({result.get('compile_s', '-')} s)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
