"""Cloud TPU slices by name, and their devices for compiling on a host without a TPU.

`python -m maskgil_jax.train --config C --memory-report --topology v5p-64` compiles the real
train step for that slice here (training/compile_report.py). The names are Cloud TPU's
accelerator types: `v4-N` and `v5p-N` count TensorCores (two per chip, which JAX drives as one
megacore device), `v5litepod-N` (alias `v5e-N`) and `v6e-N` count chips. `--num-slices N` joins N
such slices over the data-centre network (multi-slice; the mesh's `data` axis spans them).

The devices come from libtpu's compiler (`jax.experimental.topologies`): compile-only devices
with the slice's real layout (torus coordinates, hosts, slice indices), so XLA partitions,
schedules and sizes the program exactly as on the slice, but nothing can run on them. libtpu is
a separate package (`pip install "maskgil_jax[tpu-compile]"`); `devices()` names that extra when
it is missing.

Chip figures (HBM per chip, dense bf16 peak per chip) are Cloud TPU's published ones; they size
the memory check (remat 'auto' chooses against the target chip, not this host) and the MFU
estimate. Nothing here touches a device at import time.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os

from maskgil_jax.errors import UserError

INSTALL = 'pip install "maskgil_jax[tpu-compile]"'  # the setup.py extra with libtpu, for a CPU host
GIB = 1024 ** 3


class TopologyError(UserError):
  """An unknown slice name, a slice count that is not a positive int, or no libtpu."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation as Cloud TPU sells it."""
  prefix: str  # the accelerator type's prefix ('v5p' in 'v5p-64')
  libtpu: str  # the generation as libtpu's topology names spell it ('v5p:2x4x4')
  device_kind: str  # JAX's `device_kind` of its devices (a chip each: v4 / v5p as megacore)
  hbm_gib: float  # HBM per chip
  cores_per_unit: int  # accelerator-type units per chip: 2 (TensorCores) for v4 / v5p, 1 else
  dims: int  # torus dimensions: 3 (v4, v5p) or 2 (v5e, v6e)
  max_chips: int  # the largest slice (chips)
  megacore: bool = False  # libtpu must be told to fuse a chip's two cores into one device

  @property
  def peak_tflops(self) -> float:
    """Dense bf16 peak per chip, from the one table of peaks (parallel/chips.py)."""
    from maskgil_jax.parallel.chips import peak_tflops
    return peak_tflops(self.device_kind)

  def shape(self, chips: int) -> tuple[int, ...] | None:
    """The slice's chip grid (Cloud TPU's standard shapes), None for a size that has none."""
    if chips < 1 or chips & (chips - 1) or chips > self.max_chips:
      return None
    if self.dims == 2:  # 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16
      if chips == 2:
        return None
      x = 2 ** (int(math.log2(chips)) // 2)
      return (x, chips // x)
    if chips < 4:
      return None
    shape = [2, 2, 1]  # then double the smallest side, the last such first: 2x2x2, 2x2x4, ...
    while math.prod(shape) < chips:
      i = max(j for j in range(3) if shape[j] == min(shape))
      shape[i] *= 2
    return tuple(shape)


# HBM per chip as Cloud TPU publishes it (cloud.google.com/tpu/docs/system-architecture-tpu-vm)
CHIPS = {
    "v4": Chip("v4", "v4", "TPU v4", 32, 2, 3, 4096, megacore=True),
    "v5p": Chip("v5p", "v5p", "TPU v5", 95, 2, 3, 8192),
    "v5litepod": Chip("v5litepod", "v5e", "TPU v5 lite", 16, 1, 2, 256),
    "v6e": Chip("v6e", "v6e", "TPU v6 lite", 32, 1, 2, 256),
}
ALIASES = {"v5e": "v5litepod"}


@dataclasses.dataclass(frozen=True)
class Topology:
  """`num_slices` slices of `chips` chips each, laid out as `shape`."""
  name: str  # as given, normalised ('v5litepod-16')
  chip: Chip
  chips: int  # per slice
  shape: tuple[int, ...]
  num_slices: int = 1

  @property
  def total_chips(self) -> int:
    return self.chips * self.num_slices

  @property
  def libtpu_name(self) -> str:
    return f"{self.chip.libtpu}:{'x'.join(map(str, self.shape))}"

  @property
  def hbm_bytes(self) -> int:
    return int(self.chip.hbm_gib * GIB)

  def describe(self) -> str:
    slices = f"{self.num_slices} x " if self.num_slices > 1 else ""
    return (f"{slices}{self.name} ({self.total_chips} chips, {self.libtpu_name}"
            f"{' per slice' if self.num_slices > 1 else ''}; {self.chip.hbm_gib:g} GiB HBM and "
            f"{self.chip.peak_tflops:g} bf16 TFLOP/s per chip)")

  def devices(self) -> list:
    """Compile-only devices of the whole target (every slice), from libtpu."""
    return list(_devices(self.libtpu_name, self.chip.megacore, self.num_slices,
                        (*self.shape, 1)[:3] if self.chips < 4 else None))


def sizes(chip: Chip) -> list[int]:
  """The accelerator-type numbers a generation comes in (standard shapes)."""
  out, chips = [], 1
  while chips <= chip.max_chips:
    if chip.shape(chips):
      out.append(chips * chip.cores_per_unit)
    chips *= 2
  return out


def known_names() -> str:
  return "; ".join(f"{c.prefix}-{{{','.join(map(str, sizes(c)))}}}" for c in CHIPS.values())


def parse(name: str, num_slices: int = 1) -> Topology:
  """The Topology of a Cloud TPU accelerator type ('v5p-64', 'v5litepod-16', 'v6e-8', ...);
  TopologyError listing the known names otherwise."""
  prefix, _, count = str(name).strip().lower().rpartition("-")
  prefix = ALIASES.get(prefix, prefix)
  chip = CHIPS.get(prefix)
  if chip is None or not count.isdigit():
    raise TopologyError(f"--topology {name}: unknown TPU slice; known: {known_names()}")
  units = int(count)
  if units % chip.cores_per_unit:
    raise TopologyError(f"--topology {name}: {chip.prefix} counts TensorCores, two per chip, "
                        f"so the number is even; known: {known_names()}")
  chips = units // chip.cores_per_unit
  shape = chip.shape(chips)
  if shape is None:
    raise TopologyError(f"--topology {name}: no standard {chip.prefix} slice of {units} "
                        f"{'TensorCores' if chip.cores_per_unit > 1 else 'chips'}; known: "
                        f"{known_names()}")
  if not isinstance(num_slices, int) or num_slices < 1:
    raise TopologyError(f"--num-slices {num_slices}: must be a positive int")
  return Topology(f"{chip.prefix}-{units}", chip, chips, shape, num_slices)


def for_device_kind(device_kind: str) -> Chip | None:
  """The Chip of a JAX device kind ('TPU v5 lite'), None for anything else."""
  kind = device_kind.lower()
  for chip in sorted(CHIPS.values(), key=lambda c: len(c.device_kind), reverse=True):
    if chip.device_kind.lower() in kind:
      return chip
  return None


def _quiet_libtpu_env() -> None:
  """libtpu looks for a TPU VM's metadata (accelerator type, worker hosts) when it loads and
  prints warnings where there is none; compiling needs none of it. Only unset variables are
  given values, so a real TPU VM's environment is left as it is."""
  for key, value in (("TPU_ACCELERATOR_TYPE", "v5litepod-1"), ("TPU_WORKER_HOSTNAMES",
                     "localhost"), ("TPU_WORKER_ID", "0"), ("TPU_SKIP_MDS_QUERY", "1"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
    os.environ.setdefault(key, value)


def check_libtpu() -> None:
  """TopologyError naming the extra that installs libtpu, where it is missing."""
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise TopologyError(f"--topology compiles with libtpu, which is not installed: {INSTALL} "
                        "(or the 'tpu' extra on a TPU VM)") from None


@functools.lru_cache(maxsize=None)
def _devices(libtpu_name: str, megacore: bool, num_slices: int, host_bounds) -> tuple:
  """libtpu's compile-only devices; `host_bounds` for slices smaller than a host's default 2x2
  chips (v5litepod-1), which libtpu refuses otherwise."""
  check_libtpu()
  _quiet_libtpu_env()
  from jax.experimental import topologies
  kw = {"chip_config_name": "megacore"} if megacore else {}
  if num_slices > 1:
    kw["num_slices"] = num_slices
  if host_bounds:
    kw["chips_per_host_bounds"] = tuple(host_bounds)
  return tuple(topologies.get_topology_desc(platform="tpu", topology_name=libtpu_name,
                                            **kw).devices)


def configure(config, topology: Topology | None):
  """`config` for compiling on `topology`: a copy whose mesh spans its `num_slices` slices
  (config.mesh.slices, the `data` axis split across them); unchanged without a topology."""
  if topology is None or topology.num_slices == config.mesh.get("slices", 1):
    return config
  config = config.copy_and_resolve_references()
  config.mesh.slices = topology.num_slices
  return config


def add_flags(parser) -> None:
  """`--topology NAME` and `--num-slices N` on a command that has `--memory-report`."""
  parser.add_argument("--topology", metavar="NAME", help="with --memory-report: compile for "
                      "this Cloud TPU slice (v4-8, v5litepod-16, v5p-128, v6e-256, ...) on this "
                      f"host, no TPU needed (libtpu: {INSTALL})")
  parser.add_argument("--num-slices", type=int, default=1, metavar="N", help="with "
                      "--topology: N such slices joined over the data-centre network")


def from_args(args) -> Topology | None:
  """The Topology the flags name (None without --topology); TopologyError for a bad name or
  slice count, or flags used without --memory-report (a TPU slice cannot run here)."""
  if not args.topology:
    if args.num_slices != 1:
      raise TopologyError("--num-slices needs --topology")
    return None
  if not args.memory_report:
    raise TopologyError(f"--topology {args.topology}: compiles only, for the memory report; "
                        "add --memory-report")
  topo = parse(args.topology, args.num_slices)
  check_libtpu()
  return topo
