"""Attention masks (True = may attend) for the three attention modes.

`bidirectional` is MaskGIL, `causal` is teacher-forced AR, `decode` attends from T new slots
starting at `start` to every filled cache slot at or before each query's own slot.

The model passes an `AttentionMask` (the mode and the valid keys) rather than the dense
[B, 1, T, S] array, because each attention kernel takes the mask in its own form: XLA the dense
boolean array (`attention_mask`), cuDNN `is_causal` plus a padding mask, splash attention a
static causal or full mask plus segment ids (models/attention_kernels.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

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


@struct.dataclass
class AttentionMask:
  """Who may attend whom in one attention call, in parts: the mode and sizes (static), the
  valid keys [B, S] (None = all valid) and, for `decode`, the slot of the first query."""
  key_mask: jax.Array | None = None
  start: jax.Array | int = 0
  mode: str = struct.field(pytree_node=False, default="bidirectional")
  t: int = struct.field(pytree_node=False, default=0)
  s: int = struct.field(pytree_node=False, default=0)

  @classmethod
  def create(cls, mode: str, t: int, s: int | None = None, start=0,
             key_mask=None) -> "AttentionMask":
    if mode not in MODES:
      raise ValueError(f"attention mode {mode!r}; one of {MODES}")
    return cls(key_mask, start, mode, t, t if s is None else s)

  def dense(self):
    """The [B|1, 1, T, S] boolean mask (`attention_mask`)."""
    return attention_mask(self.mode, self.t, self.s, self.start, self.key_mask)
