"""The KV cache: an explicit pytree passed into each decode call and returned updated.

Keys and values of every layer live in two arrays [layers, batch, max_len, kv_heads, head_dim]
so the layer scan slices them like the stacked parameters. `length` is how many slots are
filled; a call writes its T new slots at [length, length + T) and attends to slots < length + T.
`valid` marks the slots that may be attended at all: a caption prefix's padded slots are False
(written at prefill), everything else True.
"""
from __future__ import annotations

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


def write(cache_k, cache_v, k, v, start):
  """One layer's cache [B, S, H, D] with k, v [B, T, H, D] written at slot `start`."""
  idx = (0, start, 0, 0)
  return (jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), idx),
          jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), idx))
