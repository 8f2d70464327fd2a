"""Inception features of an image set: one jitted forward per batch, batch sharded over devices.

The mesh is 1-D (`data`) over every device of every host; the Inception (95 MB) is replicated and
each batch is split along it. Every batch has the same global size (the last one is padded and
trimmed afterwards), so the function compiles once. On several hosts each process supplies only
the rows its devices hold (`jax.make_array_from_process_local_data`) and every process gets the
whole result back (`process_allgather`). The host fetch of batch i happens after batch i + 1 has
been dispatched, so the device never waits on the host.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from maskgil_jax.evaluation.image_sets import ImageSetError
from maskgil_jax.models.inception import FIDInceptionV3
from maskgil_jax.parallel.pump import padded, process_rows, pump

DATA_AXIS = "data"


class Features(NamedTuple):
  """Host float32 arrays, one row per image, in input order."""
  pool3: np.ndarray  # [N, 2048]
  spatial: np.ndarray  # [N, 2023]


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `data` over `devices` (default: all devices of all processes)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def global_batch_size(batch_size: int, mesh: Mesh) -> int:
  """`batch_size` rounded up to a multiple of the device count."""
  n = mesh.devices.size
  return -(-batch_size // n) * n


@functools.partial(jax.jit, static_argnames=("preprocessing",))
def _forward(model: FIDInceptionV3, images, *, preprocessing: str):
  out = model(images, preprocessing=preprocessing)
  return out.pool3, out.spatial


def compute_features(model: FIDInceptionV3, batches: Iterable[np.ndarray], num_images: int, *,
                     batch_size: int, mesh: Mesh | None = None, preprocessing: str = "tf1",
                     desc: str = "inception") -> Features:
  """Features of `num_images` images arriving as uint8 [n, H, W, 3] batches of <= batch_size.

  Every process must iterate the same batches (each keeps only its own rows).
  """
  mesh = mesh or data_mesh()
  gbs = global_batch_size(batch_size, mesh)
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P(DATA_AXIS))
  model = jax.device_put(model, replicated)
  outputs = []
  seen = 0

  def dispatch(batch):
    nonlocal seen
    seen += len(batch)
    shape = (gbs, *batch.shape[1:])
    images = jax.make_array_from_process_local_data(
        sharded, padded(batch, gbs)[process_rows(sharded, shape)], shape)
    return _forward(model, images, preprocessing=preprocessing)

  with tqdm(total=num_images, desc=desc, unit="img",
            disable=jax.process_index() != 0) as bar:
    def collect(batch, out):
      outputs.append(_fetch(out, len(batch)))
      bar.update(len(batch))

    pump(dispatch, _regrouped(batches, gbs), collect)
  if seen == 0:
    raise ImageSetError(f"{desc}: the image set is empty")
  if seen != num_images:
    raise ImageSetError(f"{desc}: expected {num_images} images, the source gave {seen}")
  return Features(*(np.concatenate(parts) for parts in zip(*outputs)))


def _fetch(out: tuple[jax.Array, ...], n: int) -> tuple[np.ndarray, ...]:
  gathered = multihost_utils.process_allgather(out, tiled=True)
  return tuple(np.asarray(x[:n], np.float32) for x in gathered)


def _regrouped(batches: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
  """Batches of exactly `size` rows (the last may be short), whatever sizes come in."""
  buffer, count, image_shape = [], 0, None
  for b in batches:
    b = np.asarray(b)
    if b.dtype != np.uint8 or b.ndim != 4 or b.shape[-1] != 3:
      raise ImageSetError(f"images must be uint8 [N, H, W, 3] in [0, 255], got {b.dtype} "
                          f"{list(b.shape)}")
    if image_shape is not None and b.shape[1:] != image_shape:
      raise ImageSetError(f"images of one set must share one size: {list(image_shape)} then "
                          f"{list(b.shape[1:])}")
    image_shape = b.shape[1:]
    while b.shape[0]:
      take = min(size - count, b.shape[0])
      buffer.append(b[:take])
      count += take
      b = b[take:]
      if count == size:
        yield np.concatenate(buffer)
        buffer, count = [], 0
  if count:
    yield np.concatenate(buffer)
