"""The batch pump every batched loop outside the trainer runs on: sampling, Inception
features, reconstructions, code extraction, the study, the demo judge and the Python API.

Three parts, each one definition:
- **Static shapes.** `padded` fills a short batch up to its fixed size (zeros, or copies of
  the last row), `slices` cuts N rows into (start, count) batches of one size, so a loop
  compiles once and the padding rows are dropped again.
- **One ahead.** `pump` dispatches batch i + 1 before it hands batch i's result to the host,
  so the devices never wait for the host (JAX dispatch is asynchronous; the host only blocks
  when it reads a result).
- **This process's rows.** `local_rows` (a batch-sharded array's rows held by this process,
  in the order `mesh.global_batch` took them) and `process_rows` (the contiguous rows of a
  global batch this process's devices hold).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

FILLS = ("zeros", "edge")


def padded(x: np.ndarray, size: int, fill: str = "zeros") -> np.ndarray:
  """`x` with rows appended up to `size`: zeros, or copies of its last row ('edge')."""
  n = len(x)
  if n >= size:
    return x
  if fill == "edge":
    extra = np.repeat(x[-1:], size - n, axis=0)
  elif fill == "zeros":
    extra = np.zeros((size - n, *x.shape[1:]), x.dtype)
  else:
    raise ValueError(f"fill {fill!r}: one of {FILLS}")
  return np.concatenate([x, extra])


def slices(n: int, size: int) -> list[tuple[int, int]]:
  """(start, real rows) of each batch of `size` over n rows (the last may be short)."""
  return [(start, min(size, n - start)) for start in range(0, n, size)]


def pump(dispatch: Callable[[Any], Any], items: Iterable, collect: Callable[[Any, Any], None],
         *, collect_on_error: bool = False) -> None:
  """`collect(item, dispatch(item))` for every item in order, one step behind its dispatch.

  `dispatch` starts the device work and returns its (not yet read) result; `collect` reads it
  on the host. With `collect_on_error`, the batch in flight when an exception arrives (e.g.
  Ctrl-C) is still collected (only for a `collect` without collectives: the other processes
  may not get there)."""
  running = None
  try:
    for item in items:
      current = (item, dispatch(item))
      if running is not None:
        done, running = running, None
        collect(*done)
      running = current
  except BaseException:
    if collect_on_error and running is not None:
      collect(*running)
    raise
  if running is not None:
    collect(*running)


def ahead(dispatch: Callable[[Any], Any], items: Iterable,
          fetch: Callable[[Any, Any], Any]) -> Iterator:
  """`pump` as a generator: yields `fetch(item, dispatch(item))` in order, one step behind."""
  running = None
  for item in items:
    current = (item, dispatch(item))
    if running is not None:
      yield fetch(*running)
    running = current
  if running is not None:
    yield fetch(*running)


def local_rows(x: jax.Array, sharding) -> np.ndarray:
  """This process's rows of a batch-sharded array, in the order `global_batch` took them."""
  if not x.sharding.is_equivalent_to(sharding, x.ndim):
    x = jax.device_put(x, sharding)
  blocks = {}
  for shard in x.addressable_shards:
    blocks.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate(jax.device_get([blocks[k] for k in sorted(blocks)]))


def process_rows(sharding, shape: tuple[int, ...]) -> slice:
  """The rows of a global batch that this process's devices hold (one contiguous range)."""
  spans = sorted({(s[0].start or 0, s[0].stop or shape[0])
                  for s in sharding.addressable_devices_indices_map(shape).values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError("this process's devices hold non-contiguous rows of the batch; "
                       "order the mesh devices by process")
  return slice(spans[0][0], spans[-1][1])
