"""Hybrid decoding (the paper's AR + MAR): AR writes the first tokens, MAR completes the grid.

One jitted program: the AR model writes `settings.ar_tokens` tokens in raster order (one per
step, KV-cached), then the MAR model fills the remaining positions in `settings.steps` steps,
the schedule spread over what is left. The two may be one model (layout `maskgil` does both) or
two parameter sets that share the tokenizer: same codebook, classes and grid.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from maskgil_jax.decode import ar, mar
from maskgil_jax.decode.sampling import DecodeSettings, row_keys
from maskgil_jax.models import conditions


def check_pair(ar_model, mar_model) -> None:
  """The AR and MAR models must speak the same tokens; raises ValueError naming the mismatch."""
  if ar_model.condition != mar_model.condition:
    raise ValueError(f"hybrid: the AR model is conditioned on {ar_model.condition}s but the MAR "
                     f"model on {mar_model.condition}s")
  a, m = ar_model.layout, mar_model.layout
  for field in ("codebook_size", "num_classes", "grid"):
    if getattr(a, field) != getattr(m, field):
      raise ValueError(f"hybrid: the AR model has {field} {getattr(a, field)} but the MAR "
                       f"model has {getattr(m, field)}")
  if a.prefix_len == 0:
    raise ValueError(f"hybrid: layout {a.name!r} cannot decode AR (use llamagen or maskgil)")
  if m.mask_id is None:
    raise ValueError(f"hybrid: layout {m.name!r} cannot decode MAR (use maskgil or "
                     "maskgil_reference)")


def generate(ar_model, mar_model, labels, key, settings: DecodeSettings) -> mar.MarState:
  """Tokens [B, L] for labels [B] or a `conditions.Caption`; commit_step is -1 where AR wrote the token. `key` is one
  key or one per sample."""
  check_pair(ar_model, mar_model)
  layout = mar_model.layout
  n_ar, length = settings.ar_tokens, layout.num_image_tokens
  if n_ar > length:
    raise ValueError(f"config.decode.ar_tokens: {n_ar} is more than the {length} tokens of "
                     "the grid")
  b = conditions.batch_size(labels)
  pairs = jax.vmap(jax.random.split)(row_keys(key, b))
  k_ar, k_mar = pairs[:, 0], pairs[:, 1]
  grid = jnp.full((b, length), layout.mask_id, jnp.int32)
  if n_ar > 0:
    grid = grid.at[:, :n_ar].set(ar.generate(ar_model, labels, k_ar, settings, n_ar).tokens)
  if n_ar == length:
    return mar.MarState(tokens=grid, commit_step=jnp.full_like(grid, -1))
  return mar.generate(mar_model, labels, k_mar, settings, init_tokens=grid)


generate_jit = jax.jit(generate)
