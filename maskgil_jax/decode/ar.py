"""AR decoding (LlamaGen): prefill the class condition, then one token per step with a KV cache.

The cache is an explicit pytree carried through a `jax.lax.scan` over positions; every step
feeds the token just sampled through the same transformer (`model.decode`) and samples the next
one from the last slot's logits. With guidance the batch is doubled (cond, null class) and both
rows are fed the same token, as LlamaGen does at prefill and at every step; the combination is
the shared (1 + w) * cond - w * uncond, which is LlamaGen's uncond + s * (cond - uncond) with
s = 1 + w (see sampling.py).

A decode step attends to every slot of the cache it is given, so the token loop runs in chunks:
each chunk is a `lax.scan` over the steps whose slots fit in the next multiple of
`cache_chunk` slots, on a view of that many slots (`KVCache.view`), written back after it. A
step then reads the filled part of the cache rounded up to the chunk, not all of it (one
compiled step per chunk, all in the one jitted decoder). The hidden slots add exact zeros to
the attention's sums, so the logits are those over the whole cache up to the rounding of the
shorter sums' order (1e-6 relative); the tests find the same greedy and sampled tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from maskgil_jax.decode.sampling import (DecodeSettings, doubled, fold_rows, guide, row_keys,
                                         sample_factorized, sample_tokens)
from maskgil_jax.models import conditions
from maskgil_jax.models.kv_cache import CACHE_AXES
from maskgil_jax.parallel.rules import constrain


@struct.dataclass
class ArResult:
  tokens: jax.Array  # int32 [B, N]: the first N image tokens in raster order
  logits: jax.Array | None  # fp32 [B, N, codebook] guided logits each token was drawn from


def _next_logits(model, logits, settings: DecodeSettings):
  """Guided code logits [B, V] from the last fed slot's logits [B', T, V']."""
  last = logits[:, -1, :model.layout.codebook_size]
  return guide(last, settings.cfg_scale) if settings.guided else last


CACHE_CHUNK = 128  # slots; a multiple of 8 (XLA:CPU's vector width in fp32) and of 128 (TPU)


def _draw(model, out, keys, settings: DecodeSettings):
  """(next token [B], the guided logits it was drawn from) of the last fed slot; a factorized
  model (models/factorized.py) draws its two sub-tokens in turn and has no one logits array."""
  if getattr(model, "factorization", None) is None:
    logits = _next_logits(model, out, settings)
    return sample_tokens(keys, logits, settings)[0], logits
  w = settings.cfg_scale if settings.guided else None
  return sample_factorized(model, out[:, -1], keys, settings, w)[0], None


def generate(model, labels, key, settings: DecodeSettings, num_tokens: int | None = None,
             return_logits: bool = False, cache_chunk: int = CACHE_CHUNK) -> ArResult:
  """Decode labels [B] (or a `conditions.Caption`) into the first `num_tokens` (default: all)
  image tokens.

  `key` is one key or one per sample ([B]; see sampling.row_keys).

  `num_tokens - 1` cached forward passes follow the prefill (the last token is never fed).
  `return_logits` also returns the logits of every step (to score or to test against the
  teacher-forced forward). `cache_chunk` (static) is the step of the cache views the token
  loop reads (module docstring); at least the whole cache, it reads the whole cache.
  """
  layout = model.layout
  n = layout.num_image_tokens if num_tokens is None else num_tokens
  if not 1 <= n <= layout.num_image_tokens:
    raise ValueError(f"AR decoding writes 1..{layout.num_image_tokens} tokens, asked for {n}")
  if return_logits and getattr(model, "factorization", None) is not None:
    raise ValueError("return_logits: a factorized model has no single logits array per token")
  keys = row_keys(key, conditions.batch_size(labels))
  feed_labels = conditions.doubled(labels, layout.null_label) if settings.guided else labels
  cache = model.init_cache(conditions.batch_size(feed_labels))
  cache = cache.replace(k=constrain(cache.k, CACHE_AXES), v=constrain(cache.v, CACHE_AXES))
  layers = model.unstacked_layers()  # sliced once, read in place at every token
  logits, cache = model.decode(None, feed_labels, cache, layers)
  first, first_logits = _draw(model, logits, fold_rows(keys, 0), settings)

  def step(carry, position):
    token, cache = carry
    fed = doubled(token) if settings.guided else token
    logits, cache = model.decode(fed[:, None], None, cache, layers)
    token, logits = _draw(model, logits, fold_rows(keys, position), settings)
    return (token, cache), (token, logits if return_logits else None)

  # step p feeds token p - 1 into slot prefix + p - 1: it needs prefix + p slots
  token, outs, p = first, [], 1
  while p < n:
    slots = min(cache.max_len, -(-(layout.prefix_len + p) // cache_chunk) * cache_chunk)
    end = min(n, slots - layout.prefix_len + 1)
    (token, view), out = jax.lax.scan(step, (token, cache.view(slots)), jnp.arange(p, end))
    cache, p = cache.absorb(view), end
    outs.append(out)
  if not outs:  # one token: nothing fed after the prefill
    rest = jnp.zeros((0, first.shape[0]), first.dtype)
    rest_logits = (jnp.zeros((0,) + first_logits.shape, first_logits.dtype) if return_logits
                   else None)
  else:
    rest = jnp.concatenate([o[0] for o in outs])
    rest_logits = jnp.concatenate([o[1] for o in outs]) if return_logits else None
  tokens = jnp.concatenate([first[:, None], rest.T], axis=1)
  if not return_logits:
    return ArResult(tokens=tokens, logits=None)
  all_logits = jnp.concatenate([first_logits[:, None], jnp.swapaxes(rest_logits, 0, 1)], axis=1)
  return ArResult(tokens=tokens, logits=all_logits)


generate_jit = jax.jit(generate, static_argnames=("num_tokens", "return_logits",
                                                 "cache_chunk"))
