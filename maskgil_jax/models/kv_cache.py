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
