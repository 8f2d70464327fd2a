"""Improved precision and recall (Kynkaanniemi et al. 2019) as ADM's evaluator computes them.

Each set's manifold is the union of balls around its feature vectors, the radius of a ball being
the squared distance to the k-th nearest neighbour within the set (k = 3; the point itself is the
0-th). Precision = share of samples inside the reference manifold; recall = share of reference
vectors inside the sample manifold. All distances are squared Euclidean.

ADM computes the distances in float16 (features cast to float16, squared norms and the matmul
rounded to float16, the sum `|u|^2 - 2 u.v + |v|^2` in float16, clamped at 0) and falls back to
float32 for a block only when a value overflows; `distances="adm"` reproduces that rounding with
`lax.reduce_precision` (float32 arithmetic rounded where TF rounds, so it runs the same on
CPU, GPU and TPU); `distances="float32"` skips it. The float16 grid is coarse (0.25 between 256
and 512, where pool3 distances live), so the choice moves borderline points; we default to ADM.

Work is blocked like ADM (10,000 x 10,000 distance tiles by default): a jitted call per row block
scans over column blocks, keeping only running k-nearest radii or membership flags, so a
50k x 50k matrix never exists at once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_K = 3
DEFAULT_BLOCK = 10_000
DISTANCES = ("adm", "float32")
_HIGHEST = jax.lax.Precision.HIGHEST


def _to_f16(x):
  return jax.lax.reduce_precision(x, exponent_bits=5, mantissa_bits=10)


def _distances_f32(u, v):
  nu = jnp.sum(u * u, axis=1)
  nv = jnp.sum(v * v, axis=1)
  return jnp.maximum(nu[:, None] - 2 * jnp.dot(u, v.T, precision=_HIGHEST) + nv[None, :], 0.0)


def _distances_adm(u, v):
  u16, v16 = _to_f16(u), _to_f16(v)
  nu = _to_f16(jnp.sum(_to_f16(u16 * u16), axis=1))
  nv = _to_f16(jnp.sum(_to_f16(v16 * v16), axis=1))
  uv = _to_f16(jnp.dot(u16, v16.T, precision=_HIGHEST))
  d = jnp.maximum(_to_f16(_to_f16(nu[:, None] - 2 * uv) + nv[None, :]), 0.0)
  return jax.lax.cond(jnp.isfinite(d).all(), lambda: d, lambda: _distances_f32(u, v))


def pairwise_distances(u, v, distances: str = "adm"):
  """[len(u), len(v)] squared Euclidean distances (float32 result)."""
  if distances not in DISTANCES:
    raise ValueError(f"distances {distances!r}: expected one of {DISTANCES}")
  return (_distances_adm if distances == "adm" else _distances_f32)(u, v)


def _blocks(x: np.ndarray, block: int):
  """Features zero-padded to whole blocks: ([nb, block, D] device array, valid mask [nb, block])."""
  n = x.shape[0]
  nb = -(-n // block)
  padded = np.zeros((nb * block, x.shape[1]), np.float32)
  padded[:n] = x
  valid = np.arange(nb * block) < n
  return jnp.asarray(padded.reshape(nb, block, -1)), jnp.asarray(valid.reshape(nb, block))


@functools.partial(jax.jit, static_argnames=("k", "distances"))
def _radii_row_block(rows, cols, cols_valid, *, k: int, distances: str):
  """Squared distance from each row to its k-th nearest column (itself being the 0-th)."""
  def step(nearest, col):
    block, valid = col
    d = jnp.where(valid[None, :], pairwise_distances(rows, block, distances), jnp.inf)
    merged = jnp.concatenate([nearest, d], axis=1)
    return -jax.lax.top_k(-merged, k + 1)[0], None

  init = jnp.full((rows.shape[0], k + 1), jnp.inf, jnp.float32)
  nearest, _ = jax.lax.scan(step, init, (cols, cols_valid))
  return nearest[:, k]


def manifold_radii(features, k: int = DEFAULT_K, block: int = DEFAULT_BLOCK,
                   distances: str = "adm") -> np.ndarray:
  """[N] float32 k-NN radii of a [N, D] feature set."""
  features = np.asarray(features, np.float32)
  if features.ndim != 2 or features.shape[0] <= k:
    raise ValueError(f"need a [N, D] feature array with N > k = {k}, got shape {features.shape}")
  block = min(block, features.shape[0])
  cols, cols_valid = _blocks(features, block)
  radii = [_radii_row_block(rows, cols, cols_valid, k=k, distances=distances) for rows in cols]
  return np.asarray(jnp.concatenate(radii))[:features.shape[0]]


@functools.partial(jax.jit, static_argnames=("distances",))
def _membership_row_block(rows, rows_radii, rows_valid, cols, cols_radii, cols_valid, *,
                          distances: str):
  """For one block of set-1 rows against all of set 2: (rows inside manifold 2 [rb],
  columns inside this block's part of manifold 1 [nb2, cb])."""
  def step(rows_in, col):
    block, radii, valid = col
    d = pairwise_distances(rows, block, distances)
    rows_in = rows_in | jnp.any((d <= radii[None, :]) & valid[None, :], axis=1)
    cols_in = jnp.any((d <= rows_radii[:, None]) & rows_valid[:, None], axis=0)
    return rows_in, cols_in

  init = jnp.zeros(rows.shape[0], bool)
  return jax.lax.scan(step, init, (cols, cols_radii, cols_valid))


def precision_recall(ref_features, sample_features, k: int = DEFAULT_K,
                     block: int = DEFAULT_BLOCK, distances: str = "adm") -> tuple[float, float]:
  """(precision, recall) of samples against a reference set, both [N, D] features."""
  ref = np.asarray(ref_features, np.float32)
  sam = np.asarray(sample_features, np.float32)
  if ref.ndim != 2 or sam.ndim != 2 or ref.shape[1] != sam.shape[1]:
    raise ValueError(f"features must be [N, D] with the same D, got {ref.shape} and {sam.shape}")
  radii_ref = manifold_radii(ref, k, block, distances)
  radii_sam = manifold_radii(sam, k, block, distances)
  rb, cb = min(block, ref.shape[0]), min(block, sam.shape[0])
  rows, rows_valid = _blocks(ref, rb)
  cols, cols_valid = _blocks(sam, cb)
  rows_radii = _blocks(radii_ref[:, None], rb)[0][..., 0]
  cols_radii = _blocks(radii_sam[:, None], cb)[0][..., 0]
  ref_in, sam_in = [], jnp.zeros(cols_valid.shape, bool)
  for i in range(rows.shape[0]):
    r_in, c_in = _membership_row_block(rows[i], rows_radii[i], rows_valid[i], cols, cols_radii,
                                       cols_valid, distances=distances)
    ref_in.append(r_in)
    sam_in = sam_in | c_in
  recall = np.asarray(jnp.concatenate(ref_in))[:ref.shape[0]].mean()
  precision = np.asarray(sam_in).reshape(-1)[:sam.shape[0]].mean()
  return float(precision), float(recall)
