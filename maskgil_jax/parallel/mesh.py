"""The device mesh: axes ('data', 'fsdp', 'tensor'), sizes from `config.mesh`, multi-host set-up.

Sizes are totals over every device of the job; one of them may be -1 (the remaining devices).
With `mesh.slices` > 1 (TPU multi-slice) the `data` axis is split as slices x within-slice, the
slices outermost, so only data-parallel gradient reductions cross the slower data-centre
network; `fsdp` and `tensor` stay inside a slice. Batches are sharded over ('data', 'fsdp').
"""
from __future__ import annotations

import logging
import math
import os

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from maskgil_jax.configlib.finalize import ConfigError
from maskgil_jax.parallel import peers
from maskgil_jax.parallel.rules import MESH_AXES

BATCH_AXES = ("data", "fsdp")
DISTRIBUTED_MODES = ("auto", "yes", "no")
DEFAULT_HEARTBEAT_S = 100  # jax.distributed.initialize's own default


def _several(name: str) -> bool:
  value = os.environ.get(name, "")
  return len([v for v in value.split(",") if v]) > 1


def launched_on_several_processes() -> bool:
  """Whether the environment describes a multi-process job (TPU pod or multi-slice, SLURM or
  Open MPI with several tasks, or an explicit JAX coordinator)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  if _several("TPU_WORKER_HOSTNAMES") or _several("TPU_PROCESS_ADDRESSES"):
    return True
  for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(count, "1") or 1) > 1:
      return True
  return False


MODE_ENV = "MASKGIL_JAX_DISTRIBUTED"  # what mode 'auto' means, where a launcher knows better
MANUAL_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def manual_settings() -> dict:
  """coordinator_address / num_processes / process_id from the environment, for launchers JAX
  cannot detect (a process started by hand or by a plain ssh loop): all three or none."""
  given = {k: os.environ.get(k, "") for k in MANUAL_ENV}
  if not any(given.values()):
    return {}
  if not given["JAX_NUM_PROCESSES"] and not given["JAX_PROCESS_ID"]:
    return {}  # a coordinator address alone: JAX's cluster detection supplies the rest
  missing = [k for k, v in given.items() if not v]
  if missing:
    raise ConfigError(f"environment: {', '.join(MANUAL_ENV)} go together; {', '.join(missing)} "
                      "not set")
  try:
    count, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
  except ValueError:
    raise ConfigError(f"environment: JAX_NUM_PROCESSES={given['JAX_NUM_PROCESSES']!r} and "
                      f"JAX_PROCESS_ID={given['JAX_PROCESS_ID']!r} must be integers") from None
  if not 0 <= index < count:
    raise ConfigError(f"environment: JAX_PROCESS_ID={index} is not in 0..{count - 1}")
  return {"coordinator_address": given["JAX_COORDINATOR_ADDRESS"], "num_processes": count,
          "process_id": index}


def initialize_distributed(mode: str = "auto", *, heartbeat_timeout_s: int | None = None,
                           local_devices: int = 0, **explicit) -> bool:
  """`jax.distributed.initialize()` (cluster auto-detection) before JAX touches a device.

  mode 'auto' initialises when `launched_on_several_processes()`, unless the environment's
  MASKGIL_JAX_DISTRIBUTED says 'yes' or 'no' (a TPU pod launcher whose workers do not export
  their host list sets 'yes'); 'yes' always; 'no' never. Returns whether it initialised.
  `heartbeat_timeout_s` bounds how long the others wait for a process that died; a
  `peers.PeerWatch` then names it in an `error:` line. Settings come from the cluster
  (SLURM, Open MPI, Cloud TPU), from JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES +
  JAX_PROCESS_ID, or from `explicit` (coordinator_address, num_processes, process_id,
  local_device_ids), which wins. With `local_devices` > 0 the process's devices are checked
  (`check_local_devices`).
  """
  if mode not in DISTRIBUTED_MODES:
    raise ConfigError(f"config.mesh.distributed: {mode!r}; one of {DISTRIBUTED_MODES}")
  if mode == "auto" and os.environ.get(MODE_ENV):
    mode = os.environ[MODE_ENV]
    if mode not in DISTRIBUTED_MODES:
      raise ConfigError(f"environment: {MODE_ENV}={mode!r}; one of {DISTRIBUTED_MODES}")
  started = not (mode == "no" or (mode == "auto" and not launched_on_several_processes()))
  if started:
    kw = {**manual_settings(), **explicit}
    kw["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s or DEFAULT_HEARTBEAT_S)
    jax.distributed.initialize(**kw)
    peers.start(kw["heartbeat_timeout_seconds"])
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
  if local_devices:
    check_local_devices(local_devices)
  return started


def initialize_for(mesh_cfg) -> bool:
  """`initialize_distributed` as `config.mesh` asks (the commands that take a `--config`)."""
  return initialize_distributed(mesh_cfg.distributed, heartbeat_timeout_s=mesh_cfg.heartbeat_timeout_s,
                                local_devices=mesh_cfg.local_devices)


GIVEN_DEVICES_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS",
                     "JAX_LOCAL_DEVICE_IDS", "TPU_VISIBLE_CHIPS")


def check_local_devices(expected: int) -> str:
  """Print one start-up line naming this process's devices beside the accelerators its
  launcher gave it, and refuse to start (ConfigError) unless it drives `expected` of them.

  A multi-GPU node run as one process that JAX binds to a single GPU fills the mesh with one
  GPU per node without any error; this makes the mismatch stop the run at once.
  """
  devices = jax.local_devices()
  given = " ".join(f"{k}={os.environ[k]}" for k in GIVEN_DEVICES_ENV if os.environ.get(k))
  line = (f"process {jax.process_index()} of {jax.process_count()} on {os.uname().nodename}"
          f" (local rank {os.environ.get('SLURM_LOCALID', '-')}): {len(devices)} devices "
          f"[{', '.join(f'{d.platform}:{d.id}' for d in devices)}], expected {expected}; "
          f"given {given or 'no device variables'}")
  print(line, flush=True)
  if len(devices) != expected:
    raise ConfigError(f"config.mesh.local_devices: expected {expected} devices in this process "
                      f"but JAX drives {len(devices)} ({line})")
  return line


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with a -1 filled in; ConfigError naming the field otherwise."""
  sizes = {a: mesh_cfg[a] for a in MESH_AXES}
  for a, s in sizes.items():
    if not isinstance(s, int) or (s < 1 and s != -1):
      raise ConfigError(f"config.mesh.{a}: must be a positive int or -1, got {s!r}")
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {fill}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % fixed:
      raise ConfigError(f"config.mesh.{fill[0]}=-1: {num_devices} devices are not divisible by "
                        f"the other axes' product {fixed}")
    sizes[fill[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ConfigError(f"config.mesh: data x fsdp x tensor = {fixed} but there are "
                      f"{num_devices} devices (set one axis to -1 to fill)")
  return tuple(sizes[a] for a in MESH_AXES)


def slice_shapes(mesh_cfg, num_devices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(within-slice shape, across-slice shape) of the mesh; only `data` spans slices."""
  shape = mesh_shape(mesh_cfg, num_devices)
  slices = mesh_cfg.slices
  if not isinstance(slices, int) or slices < 1 or shape[0] % slices:
    raise ConfigError(f"config.mesh.slices: {slices!r} must be a positive int dividing the "
                      f"data axis ({shape[0]})")
  return (shape[0] // slices,) + shape[1:], (slices, 1, 1)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """The ('data', 'fsdp', 'tensor') mesh over `devices` (all devices of the job by default)."""
  devices = list(jax.devices() if devices is None else devices)
  within, across = slice_shapes(mesh_cfg, len(devices))
  if across[0] > 1:
    grid = mesh_utils.create_hybrid_device_mesh(within, across, devices,
                                                allow_split_physical_axes=True)
  else:
    shape = mesh_shape(mesh_cfg, len(devices))
    try:
      grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError):  # device kinds without a topology model
      grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over ('data', 'fsdp'), the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """One global array per entry from this process's share of the batch (all processes call
  this with their own rows; on one process it is a plain sharded transfer)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
