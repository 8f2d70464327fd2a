"""The KV cache: an explicit pytree passed into each decode call and returned updated.

Keys and values of every layer live in two arrays [layers, batch, max_len, kv_heads, head_dim]
so the layer scan slices them like the stacked parameters. `length` is how many slots are
filled; a call writes its T new slots at [length, length + T) and attends to slots < length + T.
`valid` marks the slots that may be attended at all: a caption prefix's padded slots are False
(written at prefill), everything else True.

Inside a decode call the layer loop carries the whole [layers, ...] arrays and each layer writes
its T new slots into them in place (`LayerCache`, `write`): the cache is never sliced into
per-layer inputs and stacked back as outputs, which would copy all of it at every token
(docs/performance.md).

A decode call attends to all `max_len` slots it is given (the unfilled ones masked), so a
decoder that hands it the whole cache reads every slot at every token. `view` is a cache of the
first slots only (a static length) and `absorb` writes such a view back: the AR decoder runs
its token loop in chunks, each over the shortest view that holds the slots it fills
(decode/ar.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

CACHE_AXES = ("layers", "cache_batch", "cache_length", "cache_heads", "cache_kv")


@struct.dataclass
class KVCache:
  k: jax.Array
  v: jax.Array
  length: jax.Array  # int32 scalar: filled slots
  valid: jax.Array  # bool [batch, max_len]: slots that may be attended (padding = False)

  @classmethod
  def init(cls, n_layer: int, batch: int, max_len: int, n_kv_head: int, head_dim: int,
           dtype=jnp.float32) -> "KVCache":
    shape = (n_layer, batch, max_len, n_kv_head, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32),
               jnp.ones((batch, max_len), bool))

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  def view(self, length: int) -> "KVCache":
    """A cache of the first `length` slots (static), the filled ones and their `length`:
    decode calls on it attend to those slots only. The whole cache when `length` covers it."""
    if length >= self.max_len:
      return self
    return KVCache(self.k[:, :, :length], self.v[:, :, :length], self.length,
                   self.valid[:, :length])

  def absorb(self, view: "KVCache") -> "KVCache":
    """This cache with the slots of `view` (from `self.view`, then decoded into) written back
    over its first ones, and the view's length."""
    if view.max_len == self.max_len:
      return view
    put = lambda full, part, axis: jax.lax.dynamic_update_slice_in_dim(full, part, 0, axis)
    return KVCache(put(self.k, view.k, 2), put(self.v, view.v, 2), view.length,
                   put(self.valid, view.valid, 1))


class LayerCache(NamedTuple):
  """One layer's view of the cache inside the layer loop: every layer's arrays and the index
  of the layer running (a traced int in the loop)."""
  k: jax.Array  # [layers, B, S, H, D]
  v: jax.Array
  layer: jax.Array | int


def write(cache: LayerCache, k, v, start) -> LayerCache:
  """`cache` with k, v [B, T, H, D] written at slot `start` of its layer (in place)."""
  idx = (cache.layer, 0, start, 0, 0)
  return cache._replace(
      k=jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), idx),
      v=jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), idx))


def read(cache: LayerCache):
  """(k, v) [B, S, H, D] of the cache's layer."""
  take = lambda a: jax.lax.dynamic_index_in_dim(a, cache.layer, 0, keepdims=False)
  return take(cache.k), take(cache.v)
