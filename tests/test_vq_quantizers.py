"""The quantizers: chunked search and entropy equal their dense forms, LFQ codes, usage window."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax.models.quantizers import (USAGE_WINDOW, LookupFreeQuantizer, VectorQuantizer,
                                           entropy_terms, l2_normalize, nearest_codes,
                                           usage_stats)


def dense_nearest(z, book):
  d = (jnp.sum(z ** 2, 1, keepdims=True) + jnp.sum(book ** 2, 1)
       - 2 * jnp.dot(z, book.T, precision="highest"))
  return jnp.argmin(d, axis=1)


def dense_entropy(affinity, temperature=0.01):
  """LlamaGen's compute_entropy_loss terms on a full [N, K] affinity matrix (numpy, float64)."""
  a = np.asarray(affinity, np.float64) / temperature
  a = a - a.max(axis=1, keepdims=True)
  logp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
  p = np.exp(logp)
  avg = p.mean(axis=0)
  return -np.mean(np.sum(p * logp, axis=1)), -np.sum(avg * np.log(avg + 1e-5))


@pytest.mark.parametrize("num_codes,chunk", [(1000, 128), (1000, 4096), (262_144, 4096)])
def test_chunked_search_equals_dense(num_codes, chunk):
  kz, kb = jax.random.split(jax.random.key(num_codes))
  z = l2_normalize(jax.random.normal(kz, (192, 8)))
  book = l2_normalize(jax.random.normal(kb, (num_codes, 8)))
  chunked = jax.jit(nearest_codes, static_argnums=2)(z, book, chunk)
  np.testing.assert_array_equal(chunked, dense_nearest(z, book))
  assert chunked.dtype == jnp.int32


def test_ties_go_to_the_lowest_index_across_chunks():
  book = jnp.tile(jnp.eye(4), (3, 1))  # codes 0-3, 4-7, 8-11 are the same vectors
  z = jnp.eye(4)[jnp.array([2, 0, 3])]
  np.testing.assert_array_equal(nearest_codes(z, book, 4), [2, 0, 3])


def test_chunked_entropy_equals_dense():
  kz, kb = jax.random.split(jax.random.key(1))
  z = jax.random.normal(kz, (96, 4)) * 0.1
  book = jax.random.normal(kb, (50, 4)) * 0.1
  full = 2 * z @ book.T - jnp.sum(book ** 2, 1)[None]
  padded = jnp.pad(book, ((0, 16), (0, 0)))

  def affinity(x, start, size):
    e = jax.lax.dynamic_slice_in_dim(padded, start, size)
    return 2 * x @ e.T - jnp.sum(e ** 2, 1)[None]

  # 4 chunks, the last one padded
  sample, avg = jax.jit(lambda z: entropy_terms(z, affinity, 50, 16, 0.01))(z)
  ref_sample, ref_avg = dense_entropy(full)
  np.testing.assert_allclose([sample, avg], [ref_sample, ref_avg], rtol=2e-4, atol=2e-5)


def test_vq_indices_and_losses():
  q = VectorQuantizer(32, 4, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), entropy_weight=0.1,
                      chunk=8)
  z = jax.random.normal(jax.random.key(2), (2, 3, 5, 4))
  out, aux = jax.jit(lambda q, z: q(z))(q, z)
  zn, book = l2_normalize(z), q.codebook()
  idx = dense_nearest(zn.reshape(-1, 4), book).reshape(2, 3, 5)
  np.testing.assert_array_equal(aux["indices"], idx)
  np.testing.assert_allclose(out, book[idx], atol=1e-6)
  sq = float(jnp.mean((book[idx] - zn) ** 2))
  np.testing.assert_allclose([aux["vq_loss"], aux["commit_loss"]], [sq, 0.25 * sq], rtol=1e-5)
  ref_sample, ref_avg = dense_entropy(2 * zn.reshape(-1, 4) @ book.T - jnp.sum(book ** 2, 1))
  np.testing.assert_allclose(aux["entropy_loss"], 0.1 * (ref_sample - ref_avg), rtol=1e-3,
                             atol=1e-5)


def test_lfq_codes_and_entropy():
  q = LookupFreeQuantizer(64, entropy_weight=1.0, chunk=16)
  z = jax.random.normal(jax.random.key(3), (2, 4, 4, 6))
  out, aux = jax.jit(lambda q, z: q(z))(q, z)
  bits = np.asarray(z > 0).astype(np.int64)
  np.testing.assert_array_equal(aux["indices"], (bits * 2 ** np.arange(6)).sum(-1))
  np.testing.assert_array_equal(out, jnp.where(z > 0, 1.0, -1.0))
  np.testing.assert_array_equal(q.lookup(aux["indices"]), out)
  codes = q.lookup(jnp.arange(64))
  ref_sample, ref_avg = dense_entropy(2 * z.reshape(-1, 6) @ codes.T)
  np.testing.assert_allclose(aux["entropy_loss"], ref_sample - ref_avg, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(aux["commit_loss"], 0.25 * jnp.mean((out - z) ** 2), rtol=1e-6)
  with pytest.raises(ValueError, match="power-of-two"):
    LookupFreeQuantizer(48)


def test_usage_window_rolls_and_counts():
  window = jnp.zeros((USAGE_WINDOW,), jnp.float32)
  stats = jax.jit(usage_stats, static_argnums=2)(jnp.array([3, 3, 5, 7], jnp.int32), window, 16)
  np.testing.assert_array_equal(stats["codebook_used"][-4:], [3, 3, 5, 7])
  assert float(stats["codebook_usage"]) == 4 / 16  # 0 (the empty window), 3, 5, 7
  assert float(stats["batch_usage"]) == 3 / 16
  np.testing.assert_allclose(stats["perplexity"], np.exp(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))),
                             rtol=1e-6)
