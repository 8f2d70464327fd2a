"""The tokenizer's quantizers: L2-normalised nearest-neighbour VQ (LlamaGen) and lookup-free (LFQ).

Both take channel-last latents [B, h, w, D] in float32 and return the straight-through
quantised latents plus a dict of losses and statistics. Nothing is updated in place: the new
codebook-usage window is returned in the dict and written back with
`maskgil_jax.models.vq.record_usage`.

Codebooks are searched in chunks of `chunk` codes with `lax.scan`, so no [positions x codes]
matrix is ever built for the whole codebook (262,144 codes at 256 positions per image would
need 256 MiB per image). The entropy loss, which needs a softmax over every code, is computed
the same way in two passes (log-normaliser, then entropies) with each chunk rematerialised in
the backward pass.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# LlamaGen keeps the last 65,536 code indices in the `quantize.codebook_used` buffer.
USAGE_WINDOW = 65536
_HIGHEST = jax.lax.Precision.HIGHEST  # the search must not run in TF32/bf16 on accelerators


class CodebookUsage(nnx.Variable):
  """A rolling window of recently used code indices (float32, like LlamaGen's buffer).

  Not a Param: optimizers never see it. It round-trips through the PyTorch state dict as
  `quantize.codebook_used`.
  """


def l2_normalize(x, eps: float = 1e-12):
  """x / max(||x||, eps) along the last axis (torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _chunking(num_codes: int, chunk: int) -> tuple[int, int]:
  """(number of chunks, chunk size); the last chunk is padded and masked."""
  chunk = max(1, min(chunk, num_codes))
  return -(-num_codes // chunk), chunk


def nearest_codes(z, codebook, chunk: int):
  """argmin_j ||z_i - e_j||^2 for flat z [N, D] and codebook [K, D], `chunk` codes at a time.

  Scores are ||e||^2 - 2 z.e (||z||^2 is the same for every code). Ties go to the lowest index,
  as `argmin` over the full matrix would.
  """
  num_codes = codebook.shape[0]
  n_chunks, chunk = _chunking(num_codes, chunk)
  pad = n_chunks * chunk - num_codes
  book = jnp.pad(codebook, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
  sq = jnp.sum(jnp.square(book), axis=-1)
  valid = (jnp.arange(n_chunks * chunk) < num_codes).reshape(n_chunks, chunk)

  def step(carry, xs):
    best, best_idx = carry
    e, e_sq, ok, start = xs
    score = e_sq[None, :] - 2.0 * jnp.dot(z, e.T, precision=_HIGHEST)
    score = jnp.where(ok[None, :], score, jnp.inf)
    # argmin as two plain reductions (the minimum, then the lowest index holding it): the
    # same index, at half the time of XLA:CPU's (value, index) pair reduction
    val = jnp.min(score, axis=-1)
    cols = jnp.arange(score.shape[-1], dtype=jnp.int32)[None, :]
    idx = jnp.min(jnp.where(score == val[:, None], cols, score.shape[-1]), axis=-1)
    better = val < best
    return (jnp.where(better, val, best), jnp.where(better, idx + start, best_idx)), None

  init = (jnp.full(z.shape[:1], jnp.inf, z.dtype), jnp.zeros(z.shape[:1], jnp.int32))
  starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk
  (_, best_idx), _ = jax.lax.scan(step, init, (book, sq, valid, starts))
  return best_idx


def entropy_terms(z, affinity, num_codes: int, chunk: int, temperature: float):
  """(mean per-position entropy, entropy of the mean distribution) of softmax(affinity / T).

  `affinity(z, start, size)` returns the [N, size] logits of codes start..start+size-1 (codes
  past `num_codes` are masked). This is the MAGVIT / LlamaGen entropy loss, whose value is
  `sample_entropy - avg_entropy`; it is computed chunk by chunk in two passes.
  """
  n_chunks, chunk = _chunking(num_codes, chunk)
  starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk

  def logits(start):
    a = affinity(z, start, chunk) / temperature
    ok = (start + jnp.arange(chunk)) < num_codes
    return jnp.where(ok[None, :], a, -jnp.inf)

  @jax.checkpoint
  def max_sum(carry, start):
    m, s = carry
    a = logits(start)
    m_new = jnp.maximum(m, a.max(axis=-1))
    s = s * jnp.exp(m - m_new) + jnp.exp(a - m_new[:, None]).sum(axis=-1)
    return (m_new, s), None

  n = z.shape[0]
  (m, s), _ = jax.lax.scan(max_sum, (jnp.full((n,), -jnp.inf), jnp.zeros((n,))), starts)
  lse = m + jnp.log(s)

  @jax.checkpoint
  def accumulate(carry, start):
    plogp, avg_ent = carry
    logp = logits(start) - lse[:, None]
    p = jnp.exp(logp)
    plogp = plogp + jnp.sum(jnp.where(p > 0, p * logp, 0.0))
    avg = p.mean(axis=0)
    avg_ent = avg_ent - jnp.sum(avg * jnp.log(avg + 1e-5))
    return (plogp, avg_ent), None

  (plogp, avg_entropy), _ = jax.lax.scan(accumulate, (jnp.zeros(()), jnp.zeros(())), starts)
  return -plogp / n, avg_entropy


def usage_stats(indices, window, num_codes: int) -> dict:
  """The new usage window and its statistics for flat int32 `indices`.

  `codebook_usage` is the fraction of codes present in the window (LlamaGen's number: the
  all-zero initial window counts code 0 as used); `batch_usage` and `perplexity` describe this
  batch alone.
  """
  size = window.shape[0]
  recent = indices[-size:].astype(window.dtype)
  window = jnp.concatenate([window, recent])[-size:]
  in_window = jnp.zeros((num_codes,), jnp.bool_).at[window.astype(jnp.int32)].set(True)
  counts = jnp.zeros((num_codes,), jnp.float32).at[indices].add(1.0)
  probs = counts / indices.shape[0]
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0))
  return dict(codebook_used=window,
              codebook_usage=in_window.mean(dtype=jnp.float32),
              batch_usage=(counts > 0).mean(dtype=jnp.float32),
              perplexity=jnp.exp(entropy))


class Embedding(nnx.Module):
  """The codebook table, `weight` [codes, dim] like torch.nn.Embedding."""

  def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, l2_norm: bool,
               param_dtype=jnp.float32):
    # LlamaGen: U(-1/K, 1/K), then normalised rows when the codebook is L2-normalised.
    w = jax.random.uniform(rngs.params(), (num, dim), jnp.float32, -1.0 / num, 1.0 / num)
    if l2_norm:
      w = l2_normalize(w)
    self.weight = nnx.Param(w.astype(param_dtype), out_sharding=("codebook", "codebook_dim"))


class VectorQuantizer(nnx.Module):
  """Nearest-neighbour VQ with optional L2 normalisation of latents and codebook (LlamaGen).

  Losses (float32 scalars): `vq_loss` = mean((z_q - sg z)^2) moves the codebook,
  `commit_loss` = beta * mean((sg z_q - z)^2) moves the encoder, `entropy_loss` =
  entropy_weight * (sample_weight * sample entropy - batch_weight * codebook entropy) of
  softmax(-distance / T) (LlamaGen: both weights 1).
  """

  def __init__(self, codebook_size: int, dim: int, *, rngs: nnx.Rngs, l2_norm: bool = True,
               beta: float = 0.25, entropy_weight: float = 0.0, entropy_temperature: float = 0.01,
               sample_weight: float = 1.0, batch_weight: float = 1.0, chunk: int = 4096,
               param_dtype=jnp.float32):
    self.codebook_size = codebook_size
    self.dim = dim
    self.l2_norm = l2_norm
    self.beta = beta
    self.entropy_weight = entropy_weight
    self.entropy_temperature = entropy_temperature
    self.sample_weight = sample_weight
    self.batch_weight = batch_weight
    self.chunk = chunk
    self.embedding = Embedding(codebook_size, dim, rngs=rngs, l2_norm=l2_norm,
                               param_dtype=param_dtype)
    self.codebook_used = CodebookUsage(jnp.zeros((USAGE_WINDOW,), jnp.float32))

  def codebook(self):
    e = self.embedding.weight[...].astype(jnp.float32)
    return l2_normalize(e) if self.l2_norm else e

  def _prepare(self, z):
    z = z.astype(jnp.float32)
    return l2_normalize(z) if self.l2_norm else z

  def indices(self, z):
    """int32 code indices [B, h, w] of latents [B, h, w, D]."""
    z = self._prepare(z)
    flat = z.reshape(-1, self.dim)
    return nearest_codes(flat, self.codebook(), self.chunk).reshape(z.shape[:-1])

  def lookup(self, indices):
    """Codebook vectors [..., D] (normalised when the codebook is) for int indices [...]."""
    return jnp.take(self.codebook(), indices, axis=0)

  def __call__(self, z):
    z = self._prepare(z)
    book = self.codebook()
    flat = z.reshape(-1, self.dim)
    idx = nearest_codes(jax.lax.stop_gradient(flat), jax.lax.stop_gradient(book), self.chunk)
    z_q = jnp.take(book, idx, axis=0).reshape(z.shape)
    aux = dict(
        vq_loss=jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z))),
        commit_loss=self.beta * jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z)),
        entropy_loss=jnp.zeros((), jnp.float32))
    if self.entropy_weight > 0:
      padded = jnp.pad(book, ((0, self.chunk), (0, 0)))  # slices past the end stay in bounds

      def affinity(x, start, size):  # -distance up to a per-row constant
        e = jax.lax.dynamic_slice_in_dim(padded, start, size)
        return 2.0 * jnp.dot(x, e.T, precision=_HIGHEST) - jnp.sum(jnp.square(e), -1)[None]
      sample, avg = entropy_terms(flat, affinity, self.codebook_size, self.chunk,
                                  self.entropy_temperature)
      aux["entropy_loss"] = self.entropy_weight * (
          self.sample_weight * sample - self.batch_weight * avg)
    aux.update(usage_stats(idx, self.codebook_used[...], self.codebook_size))
    aux["indices"] = idx.reshape(z.shape[:-1])
    return z + jax.lax.stop_gradient(z_q - z), aux


class LookupFreeQuantizer(nnx.Module):
  """Lookup-free quantisation (MAGVIT-2 / Open-MAGVIT2): each of log2(K) latent channels is
  quantised to its sign, and the index is sum_k [z_k > 0] 2^k (bit k = channel k).

  No codebook parameters. `commit_loss` = beta * mean((sg q - z)^2); `vq_loss` is zero;
  `entropy_loss` = entropy_weight * (sample_weight * sample entropy - batch_weight * codebook
  entropy) of softmax(2 z.c / T) over all K codes c in {-1, 1}^D, computed exactly in chunks.
  """

  def __init__(self, codebook_size: int, *, beta: float = 0.25, entropy_weight: float = 0.1,
               entropy_temperature: float = 0.01, sample_weight: float = 1.0,
               batch_weight: float = 1.0, chunk: int = 4096):
    bits = int(round(math.log2(codebook_size)))
    if 2 ** bits != codebook_size:
      raise ValueError(f"LFQ needs a power-of-two codebook size, got {codebook_size}")
    self.codebook_size = codebook_size
    self.dim = bits
    self.beta = beta
    self.entropy_weight = entropy_weight
    self.entropy_temperature = entropy_temperature
    self.sample_weight = sample_weight
    self.batch_weight = batch_weight
    self.chunk = chunk
    self.codebook_used = CodebookUsage(jnp.zeros((USAGE_WINDOW,), jnp.float32))

  def indices(self, z):
    bits = (z > 0).astype(jnp.int32)
    return jnp.sum(bits << jnp.arange(self.dim, dtype=jnp.int32), axis=-1)

  def lookup(self, indices):
    bits = (indices[..., None] >> jnp.arange(self.dim, dtype=jnp.int32)) & 1
    return bits.astype(jnp.float32) * 2.0 - 1.0

  def __call__(self, z):
    z = z.astype(jnp.float32)
    q = jnp.where(z > 0, 1.0, -1.0)
    idx = self.indices(z)
    aux = dict(vq_loss=jnp.zeros((), jnp.float32),
               commit_loss=self.beta * jnp.mean(jnp.square(jax.lax.stop_gradient(q) - z)),
               entropy_loss=jnp.zeros((), jnp.float32))
    if self.entropy_weight > 0:
      def affinity(x, start, size):
        codes = self.lookup(start + jnp.arange(size, dtype=jnp.int32))
        return 2.0 * jnp.dot(x, codes.T, precision=_HIGHEST)
      sample, avg = entropy_terms(z.reshape(-1, self.dim), affinity, self.codebook_size,
                                  self.chunk, self.entropy_temperature)
      aux["entropy_loss"] = self.entropy_weight * (
          self.sample_weight * sample - self.batch_weight * avg)
    aux.update(usage_stats(idx.reshape(-1), self.codebook_used[...], self.codebook_size))
    aux["indices"] = idx
    return z + jax.lax.stop_gradient(q - z), aux

