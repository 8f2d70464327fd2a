"""What a compiled program will need and do on its devices, read from XLA without running it.

The report behind `--memory-report` (train and sample commands), for this host's devices or for
a TPU slice compiled ahead of time (`--topology`, parallel/topology.py):
- memory per chip (XLA's memory analysis: arguments, outputs, temporaries, total) against the
  chip's HBM;
- FLOPs per chip per call as XLA counts them in the partitioned program (remat recomputation
  included), beside the model FLOPs of training/flops.py where the caller has them;
- the collectives of the compiled program, parsed from its HLO text: count and bytes per kind,
  each multiplied by the trip count of the loops around it (the layer scan), so they are per
  call, not per line of text;
- XLA's cost-model time (`optimal_seconds` of the TPU compiler's cost analysis) and the MFU it
  implies. This is an ESTIMATE from a model of the chip, not a measurement: it does not see
  host input, launch overheads or contention, and how far it accounts for communication
  across chips is the compiler's business; ops it cannot time at all (`timed_part`) are left
  out and counted. Backends without a cost model (CPU) report none.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re

import numpy as np

from maskgil_jax.training import memory

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_CALLS = re.compile(r"\b(?:calls|to_apply|body|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_ASYNC_NAME = re.compile(r'async_collective_name="([^"]+)"')
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")
_CONSTANT = re.compile(r"^s32\[\]\S*$")


def _array_bytes(text: str) -> list[float]:
  """Bytes of each array shape in an HLO result type ('(bf16[8,128]{1,0}, f32[4])')."""
  out = []
  for dtype, dims in _ARRAY.findall(text):
    if dtype in DTYPE_BYTES:
      n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
      out.append(n * DTYPE_BYTES[dtype])
  return out


@dataclasses.dataclass
class _Computation:
  ops: list = dataclasses.field(default_factory=list)  # (identity, kind, bytes)
  calls: list = dataclasses.field(default_factory=list)  # (callee, times or condition name)
  bound: int | None = None  # as a loop condition `i < N`: N


def _parse(hlo_text: str) -> tuple[str | None, dict[str, _Computation]]:
  comps: dict[str, _Computation] = collections.defaultdict(_Computation)
  entry, current, consts, root_lt = None, None, [], False
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      current, consts, root_lt = head.group(1), [], False
      entry = current if line.startswith("ENTRY") else entry
      continue
    if line.startswith("}") and current is not None:
      if root_lt and len(consts) == 1:
        comps[current].bound = consts[0]
      current = None
      continue
    inst = _INSTRUCTION.match(line)
    if current is None or not inst:
      continue
    name, result, opcode, rest = inst.groups()
    if opcode == "constant" and _CONSTANT.match(result):
      consts.append(int(rest.split(")")[0]))
    if line.lstrip().startswith("ROOT") and opcode == "compare" and "direction=LT" in rest:
      root_lt = True
    kind = opcode.removesuffix("-start")
    if kind in COLLECTIVES and not opcode.endswith("-done"):
      if kind == "all-reduce" and "reduce-scatter" in current:
        kind = "reduce-scatter"  # TPU's reduce-scatter: a fusion of an all-reduce and a slice
      ident = _ASYNC_NAME.search(rest) or _CHANNEL.search(rest)
      sizes = _array_bytes(result)
      comps[current].ops.append((f"{kind}:{ident.group(1)}" if ident else f"{current}/{name}", kind,
                                 sizes[-1] if sizes else 0.0))
    if opcode == "while":
      trip, cond = _TRIP.search(rest), _CONDITION.search(rest)
      times = int(trip.group(1)) if trip else (cond.group(1) if cond else 1)
      comps[current].calls += [(callee, times) for callee in _CALLS.findall(rest)]
      continue
    callees = _CALLS.findall(rest)
    for group in _BRANCHES.findall(rest):
      callees += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
    comps[current].calls += [(callee, 1) for callee in callees]
  return entry, comps


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """{kind: {'count', 'bytes'}} of the collectives one call of the program executes.

  Bytes are each op's result buffer (an all-gather's gathered array; TPU compiles a
  reduce-scatter as an all-reduce fused with the slice, so its bytes are the buffer reduced).
  One collective split by the TPU compiler into start / continuation / done pieces (one
  `async_collective_name` or channel) counts once. An op inside a while loop counts once per
  iteration: the loop's `known_trip_count`, else N of its condition `i < N`, else 1 (nested
  loops multiply).
  """
  out = {k: {"count": 0, "bytes": 0.0} for k in COLLECTIVES}
  entry, comps = _parse(hlo_text)
  if entry is None:
    return out
  runs: dict[str, int] = collections.Counter()

  def visit(name: str, times: int, depth: int = 0) -> None:
    if depth > 64 or name not in comps:
      return
    runs[name] += times
    for callee, n in comps[name].calls:
      if isinstance(n, str):  # a loop body: its condition's bound
        n = comps[n].bound if n in comps and comps[n].bound else 1
      visit(callee, times * n, depth + 1)

  visit(entry, 1)
  seen: dict[str, tuple[str, float, int]] = {}  # identity -> (kind, bytes, runs)
  for name, comp in comps.items():
    for ident, kind, size in comp.ops:
      if runs.get(name, 0) and (ident not in seen or seen[ident][2] < runs[name]):
        seen[ident] = (kind, max(size, seen.get(ident, (0, 0.0))[1]), runs[name])
  for kind, size, n in seen.values():
    out[kind]["count"] += n
    out[kind]["bytes"] += n * size
  return out


def timed_part(raw: float) -> tuple[float, int]:
  """(seconds of the ops the cost model timed, how many it could not) from its negative answer.

  XLA's TPU cost model adds -1 s for each op it cannot time (seen: a cross-slice all-reduce, a
  Pallas kernel, an attention backward): one layer's attention timing 1.87 ms with one such op
  answers -0.99813 s, a tiny two-slice step of 0.05 ms with twelve -11.99995 s. The answer
  gives the timed part only above its whole seconds, so it is read as under a second (true of
  every program measured here, by a wide margin). It leaves the untimed ops out, so it is a
  lower bound of the step (the report says "at least").
  """
  k = math.ceil(-raw)
  if raw + k <= 0:
    k += 1
  return raw + k, k


def _size(n: float) -> str:
  for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
    if n >= scale:
      return f"{n / scale:9.2f} {unit}"
  return f"{n:9.0f} B"


def cost_analysis(compiled) -> dict:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return dict(analysis or {})


@dataclasses.dataclass
class Report:
  """One compiled program on its devices (per chip unless said otherwise)."""
  what: str  # 'train step', 'MAR-8 decode of 32 samples', ...
  devices: int
  device_kind: str
  memory: dict[str, float]  # GiB per chip: arguments, outputs, temporaries, aliased, total
  hbm_gib: float | None  # memory of one chip (None: unknown)
  xla_flops: float | None  # FLOPs per chip per call, as XLA counts them
  model_flops: float | None  # model FLOPs per call over all chips (training/flops.py)
  collectives: dict[str, dict[str, float]]
  seconds: float | None  # XLA's cost-model time per call (an estimate)
  peak_tflops: float | None  # per chip
  target: str = ""  # the slice, as topology.describe() says it
  remat_policy: str | None = None
  items_per_call: int | None = None  # images a call trains on or draws
  raw_seconds: float | None = None  # the cost model's answer, where it is negative
  untimed_ops: int = 0  # ops the cost model could not time (each counted as -1 s)

  @property
  def fits(self) -> bool | None:
    return None if self.hbm_gib is None else self.memory["total"] <= self.hbm_gib

  @property
  def mfu(self) -> float | None:
    """Model FLOPs (XLA's when the model count is missing) over the estimated time at peak."""
    flops = self.model_flops or (self.xla_flops * self.devices if self.xla_flops else None)
    if not (flops and self.seconds and self.peak_tflops):
      return None
    mfu = flops / (self.seconds * self.devices * self.peak_tflops * 1e12)
    # from a lower bound of the time (untimed ops left out) it is an upper bound; above 100%
    # the untimed ops carry much of the work and the bound says nothing
    return None if self.untimed_ops and mfu > 1 else mfu

  @property
  def items_per_second_per_chip(self) -> float | None:
    if not (self.items_per_call and self.seconds):
      return None
    return self.items_per_call / self.seconds / self.devices

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d.update(fits=self.fits, mfu=self.mfu, items_per_second_per_chip=self.items_per_second_per_chip)
    return d

  def format(self) -> str:
    target = self.target or f"{self.devices} x {self.device_kind}"
    lines = [f"{self.what} memory per device, compiled for {target}"]
    if self.remat_policy:
      lines.append(f"  remat policy {self.remat_policy}")
    memory_kind = " HBM" if "tpu" in self.device_kind.lower() else " device memory"
    have = f" of {self.hbm_gib:.2f} GiB{memory_kind}" if self.hbm_gib else ""
    lines.append(f"  per chip{have}:")
    for name in ("arguments", "outputs", "temporaries", "aliased", "total"):
      lines.append(f"    {name:<12} {self.memory[name]:9.3f} GiB")
    if self.fits is not None:
      verdict = "fits" if self.fits else "does NOT fit"
      lines.append(f"    -> {verdict} ({100 * self.memory['total'] / self.hbm_gib:.0f}%)")
    if self.xla_flops:
      lines.append(f"  FLOPs per chip per call (XLA, remat included): {self.xla_flops:.4g}")
    if self.model_flops:
      lines.append(f"  model FLOPs per call, all chips: {self.model_flops:.4g}")
    lines.append("  collectives per call (count, bytes per chip):")
    for kind in COLLECTIVES:
      c = self.collectives[kind]
      lines.append(f"    {kind:<19} {int(c['count']):6d}  {_size(c['bytes'])}")
    if self.seconds:
      # with untimed ops the time is a lower bound (the timed part, smallest reading), so the
      # rates derived from it are upper bounds
      low, high = ("at least ", "at most ") if self.untimed_ops else ("", "")
      lines.append(f"  ESTIMATE (XLA's cost model, not a measurement): {low}"
                   f"{self.seconds * 1e3:.3g} ms per call")
      if self.untimed_ops:
        lines.append(f"    without {self.untimed_ops} op(s) the cost model could not time (it "
                     f"answered {self.raw_seconds:.6g} s, -1 s for each such op; e.g. "
                     "collectives across slices)")
      if self.mfu is not None:
        lines.append(f"  ESTIMATE: MFU {high}{100 * self.mfu:.1f}% at {self.peak_tflops:g} "
                     f"TFLOP/s per chip")
      if self.items_per_second_per_chip:
        lines.append(f"  ESTIMATE: {high}{self.items_per_second_per_chip:.1f} images/s per chip")
    else:
      lines.append("  no cost-model time on this backend")
    return "\n".join(lines)


def report(compiled, what: str, devices: list, *, hbm_bytes: int | None = None,
           peak_tflops: float | None = None, model_flops: float | None = None,
           target: str = "", remat_policy: str | None = None,
           items_per_call: int | None = None) -> Report:
  """The Report of `compiled`, partitioned over `devices` (a flat list)."""
  costs = cost_analysis(compiled)
  flops = costs.get("flops")
  raw = costs.get("optimal_seconds")
  seconds, untimed = (float(raw), 0) if raw and raw > 0 else (None, 0)
  if raw is not None and raw < 0:
    seconds, untimed = timed_part(float(raw))
  return Report(
      what=what, devices=len(devices), device_kind=devices[0].device_kind,
      memory=memory.memory_summary(compiled),
      hbm_gib=hbm_bytes / memory.GIB if hbm_bytes else None,
      xla_flops=float(flops) if flops and flops > 0 else None, model_flops=model_flops,
      collectives=collectives(compiled.as_text()),
      seconds=seconds, peak_tflops=peak_tflops, target=target, remat_policy=remat_policy,
      items_per_call=items_per_call, raw_seconds=float(raw) if untimed else None,
      untimed_ops=untimed)


def for_mesh(compiled, mesh, what: str, *, topology=None, model_flops: float | None = None,
             remat_policy: str | None = None, items_per_call: int | None = None,
             peak_override: float = 0.0) -> Report:
  """The Report of `compiled` over `mesh`'s devices: HBM and peak of their chip (the target
  slice's with `topology`, else what this host's devices report)."""
  from maskgil_jax.training import flops as flops_lib
  from maskgil_jax.training import remat_choice
  devices = list(mesh.devices.flat)
  return report(compiled, what, devices,
                hbm_bytes=remat_choice.device_memory_bytes(devices[0]),
                peak_tflops=flops_lib.peak_tflops(devices[0].device_kind, peak_override),
                model_flops=model_flops, target=topology.describe() if topology else "",
                remat_policy=remat_policy, items_per_call=items_per_call)
