"""`model.remat_policy = 'auto'`: the cheapest recomputation whose compiled step fits in memory.

Recomputing the forward pass in the backward pass (`nothing_saveable`) costs about a third more
compute; it is only worth it when the saved activations would not fit. 'auto' compiles the
train step with each policy in `AUTO_ORDER` (least recomputation first) and keeps the first whose
per-device peak (XLA's memory analysis, training/memory.py) fits in `MEMORY_SHARE` of the
device's memory, so a step is compiled once in the common case and a few times at most. Nothing
runs. The memory is that of the devices the step is compiled for: this host's, or the target
chip's HBM when compiling for a TPU slice from another host (`--topology`); a policy the TPU
compiler refuses as larger than HBM counts as not fitting. If none fits, the last (least
memory) is used and the trainer says so, or, where the compiler refuses even that one,
`memory.DoesNotFit` says what to change.

An explicit policy skips all this. Code that builds a model from a config with 'auto' without
the trainer (inference, tools) gets `models.remat.AUTO_FALLBACK`, today's safe choice.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax

from maskgil_jax.parallel import topology
from maskgil_jax.training import memory

AUTO_ORDER = ("none", "dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable")
MEMORY_SHARE = 0.9  # of the device's memory; the rest is headroom for the runtime


@dataclasses.dataclass(frozen=True)
class Choice:
  policy: str
  compiled: object  # the compiled step under `policy`
  need_gib: float | None  # its peak per device (None: no memory analysis on this backend)
  have_gib: float | None  # the device memory it was checked against
  tried: tuple[str, ...]  # policies compiled, in order


def device_memory_bytes(device=None) -> int | None:
  """Memory of one device: the allocator's limit on accelerators, physical RAM on the host,
  and a TPU chip's HBM (parallel/topology.py) for the compile-only devices of a slice compiled
  from another host (`--topology`), which have no allocator to ask."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  except Exception:  # compile-only devices (jax.experimental.topologies) have no runtime
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  chip = topology.for_device_kind(device.device_kind) if device.platform == "tpu" else None
  if chip is not None:
    return int(chip.hbm_gib * memory.GIB)
  if device.platform == "cpu":
    try:
      return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
      return None
  return None


def choose(compile_with: Callable[[str], object], available: int | None) -> Choice:
  """The first policy of AUTO_ORDER whose step `compile_with(policy)` fits in `available`
  bytes (times MEMORY_SHARE); the last one when none fits. Without memory figures (unknown
  device memory, or no analysis from the backend) the host takes the first policy (its memory
  is no hard limit) and an accelerator the last (the safe one)."""
  have = None if available is None else available * MEMORY_SHARE / memory.GIB
  order = AUTO_ORDER if have is not None or jax.default_backend() == "cpu" else AUTO_ORDER[-1:]
  tried = []
  for policy in order:
    tried.append(policy)
    if policy == order[-1]:  # the least memory: compiled, or DoesNotFit saying so
      compiled = memory.compile_within_memory(compile_with, policy,
                                              what=f"the train step (remat {policy})")
    else:
      try:
        compiled = compile_with(policy)
      except Exception as e:  # the TPU compiler refuses a program larger than HBM
        if memory.out_of_memory(e) is None:
          raise
        continue
    try:
      need = memory.memory_summary(compiled)["total"]
    except RuntimeError:
      need = None
    if need is None or have is None or need <= have or policy == order[-1]:
      return Choice(policy, compiled, need, have, tuple(tried))
  raise AssertionError("unreachable: the last policy is always returned")


def describe(choice: Choice) -> str:
  """One line for the trainer's start-up notices."""
  if choice.need_gib is None or choice.have_gib is None:
    return f"remat policy {choice.policy} (auto; no memory figures on this backend)"
  fits = "fits" if choice.need_gib <= choice.have_gib else "does NOT fit (least memory of all)"
  skipped = f"; {', '.join(choice.tried[:-1])} did not fit" if len(choice.tried) > 1 else ""
  return (f"remat policy {choice.policy} (auto): step needs {choice.need_gib:.2f} GiB per device,"
          f" {fits} in {choice.have_gib:.2f} GiB{skipped}")
