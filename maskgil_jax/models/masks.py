"""Attention masks (True = may attend) for the three attention modes.

`bidirectional` is MaskGIL, `causal` is teacher-forced AR, `decode` attends from T new slots
starting at `start` to every filled cache slot at or before each query's own slot.
"""
from __future__ import annotations

import jax.numpy as jnp

MODES = ("bidirectional", "causal", "decode")


def attention_mask(mode: str, t: int, s: int | None = None, start=0, key_mask=None):
  """[B|1, 1, T, S] boolean mask; `key_mask` [B, S] marks valid keys (padding = False)."""
  if mode not in MODES:
    raise ValueError(f"attention mode {mode!r}; one of {MODES}")
  s = t if s is None else s
  q_slot = jnp.arange(t)[:, None] + (start if mode == "decode" else 0)
  k_slot = jnp.arange(s)[None, :]
  if mode == "bidirectional":
    mask = jnp.ones((t, s), bool)
  else:
    mask = k_slot <= q_slot
  mask = mask[None, None]
  if key_mask is not None:
    # padded keys are hidden; every query still sees its own slot, so no row is empty (NaN)
    own = (k_slot == q_slot)[None, None]
    mask = (mask & key_mask[:, None, None, :].astype(bool)) | own
  return mask
