"""Mask schedules: how much of the grid is masked, shared by MAR training and MAR decoding.

A schedule maps progress r in [0, 1] to the fraction of tokens that are masked (MaskGIT's
gamma, in the convention of the MaskGIL code): training draws r ~ U(0, 1) per sample and masks
each token with probability `mask_ratio(name, r)`; decoding with T steps evaluates it at
r = linspace(1, 0, T) and turns the values into a number of tokens committed per step
(docs/reference.md section 6: 8 arccos steps over 256 tokens commit 1, 18, 26, 32, 38, 43, 48, 50).

`square` is 1 - r^2 here, where the reference code has r^2: every schedule here falls from 1 at
r = 0 to 0 at r = 1, so training and decoding read it the same way; the reference's r^2 runs
the other way (a third of the tokens masked on average in training instead of two thirds).
arccos, the default of both, is the same (docs/generation.md, differences from the reference).
"""
from __future__ import annotations

import math

import jax.numpy as jnp

_RATIOS = {
    "arccos": lambda r: jnp.arccos(r) / (math.pi / 2),
    "cosine": lambda r: jnp.cos(r * (math.pi / 2)),
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
}
SCHEDULES = tuple(_RATIOS)


def check_schedule(name: str) -> None:
  if name not in _RATIOS:
    raise ValueError(f"mask schedule {name!r} unknown; one of {SCHEDULES}")


def mask_ratio(name: str, r):
  """Fraction of tokens masked at progress `r` (array in [0, 1]); float32."""
  check_schedule(name)
  return _RATIOS[name](jnp.asarray(r, jnp.float32))


def tokens_per_step(name: str, steps: int, num_masked):
  """int32 [..., steps]: tokens committed at each decoding step, summing to `num_masked`.

  `num_masked` is an int or an int array (one count per sample, possibly traced): the
  reference rule round(v_t / sum(v) * n), zeros raised to 1, the last step takes the rest,
  is applied per count. When n < steps the raised zeros overshoot and the last entry goes
  negative; decoders commit min(k, still masked), so every position is still committed once.
  """
  if steps < 1:
    raise ValueError(f"decoding needs at least one step, got {steps}")
  v = mask_ratio(name, jnp.linspace(1.0, 0.0, steps, dtype=jnp.float32))
  total = jnp.sum(v)
  share = jnp.where(total > 0, v / jnp.where(total > 0, total, 1.0), 0.0)  # steps=1: v = [0]
  n = jnp.asarray(num_masked, jnp.int32)[..., None]
  counts = jnp.round(share * n.astype(jnp.float32)).astype(jnp.int32)
  counts = jnp.maximum(counts, 1)
  rest = n[..., 0] - jnp.sum(counts[..., :-1], axis=-1)
  return counts.at[..., -1].set(rest)
