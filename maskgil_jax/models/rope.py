"""Rotary position embeddings on interleaved pairs (x[2k], x[2k+1]), in fp32.

A table holds, for every sequence slot, the rotation angles of the head_dim/2 pairs and a
`scale` that is 1 for normal slots and 0 for slots the reference code zeroes (LlamaGen's class
token, the public MaskGIL code's first image token): a zero row multiplies q and k by 0.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def frequencies(n: int, base: float) -> np.ndarray:
  """base^(-2k / (2n)) for k < n: the per-pair frequencies of an axis rotating 2n features."""
  exponent = np.arange(0, 2 * n, 2)[:n].astype(np.float32) / np.float32(2 * n)
  return (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)


def angles_1d(positions: np.ndarray, head_dim: int, base: float) -> np.ndarray:
  """[S, head_dim/2] angles for integer positions (LlamaGen `precompute_freqs_cis`)."""
  return np.outer(np.asarray(positions, np.float32), frequencies(head_dim // 2, base))


def angles_2d(rows: np.ndarray, cols: np.ndarray, head_dim: int, base: float) -> np.ndarray:
  """[S, head_dim/2] = concat(row angles, column angles), head_dim/4 pairs per axis (LlamaGen)."""
  freqs = frequencies(head_dim // 4, base)
  rows, cols = np.asarray(rows, np.float32), np.asarray(cols, np.float32)
  return np.concatenate([np.outer(rows, freqs), np.outer(cols, freqs)], axis=-1)


def table(angles: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin), each [S, head_dim/2] float32, with zeroed rows where scale == 0.

  Everything is fp32, as in the reference code, so the tables match it to rounding.
  """
  a = angles.astype(np.float32)
  s = scale.astype(np.float32)[:, None]
  return np.cos(a) * s, np.sin(a) * s


def apply(x, cos, sin):
  """Rotate interleaved pairs of x [B, S, H, D] by per-slot tables [S, D/2] or [B, S, D/2]."""
  x32 = x.astype(jnp.float32)
  pairs = x32.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  if cos.ndim == 2:
    cos, sin = cos[None], sin[None]
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  x0, x1 = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)
