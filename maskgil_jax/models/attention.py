"""Multi-head attention with a fused wqkv projection, optional QK-norm and grouped KV heads.

One implementation serves every mode; the caller passes a `masks.AttentionMask` (who may attend
whom), the `attention_kernels.Kernel` chosen for the call, and, for decoding, one layer's KV
cache slice to write into.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax.models import attention_kernels, kv_cache, rope
from maskgil_jax.models.attention_kernels import Kernel
from maskgil_jax.models.layers import Linear, RMSNorm
from maskgil_jax.models.masks import AttentionMask


class Attention(nnx.Module):
  def __init__(self, dim: int, n_head: int, n_kv_head: int, *, qk_norm: bool, norm_eps: float,
               init_std: float, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, dim // n_head
    qkv_dim = (n_head + 2 * n_kv_head) * self.head_dim
    p = dict(std=init_std, param_dtype=param_dtype, rngs=rngs)
    self.wqkv = Linear(dim, qkv_dim, ("embed", "qkv"), **p)
    self.wo = Linear(n_head * self.head_dim, dim, ("heads", "embed"), **p)
    if qk_norm:  # per-head RMSNorm of q and k before RoPE (Chameleon / MaskGIL paper)
      self.q_norm = RMSNorm(self.head_dim, norm_eps, "head_dim", param_dtype)
      self.k_norm = RMSNorm(self.head_dim, norm_eps, "head_dim", param_dtype)
    else:
      self.q_norm = self.k_norm = None

  def __call__(self, x, cos, sin, mask: AttentionMask, *, cache=None, cache_start=None,
               dropout_rate=0.0, dropout_key=None, kernel: Kernel = attention_kernels.XLA):
    """x [B, T, D]; cos/sin [T, D/2] or [B, T, D/2]; `mask` over T queries and S keys.

    With `cache` (a `kv_cache.LayerCache`) the new keys/values are written at `cache_start`
    of this layer's slots and attention runs over all S of them; returns (out, new cache or
    None).
    """
    b, t, _ = x.shape
    hd, nq, nkv = self.head_dim, self.n_head, self.n_kv_head
    qkv = self.wqkv(x)
    q, k, v = jnp.split(qkv, [nq * hd, (nq + nkv) * hd], axis=-1)
    q = q.reshape(b, t, nq, hd)
    k = k.reshape(b, t, nkv, hd)
    v = v.reshape(b, t, nkv, hd)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    new_cache = None
    if cache is not None:
      new_cache = kv_cache.write(cache, k, v, cache_start)
      k, v = (a.astype(x.dtype) for a in kv_cache.read(new_cache))
    out = attend(q, k, v, mask, kernel, dropout_rate, dropout_key)
    return self.wo(out.reshape(b, t, nq * hd)), new_cache


def attend(q, k, v, mask: AttentionMask, kernel: Kernel = attention_kernels.XLA,
           dropout_rate=0.0, dropout_key=None):
  """softmax(q k^T / sqrt(d)) v with grouped KV heads; softmax in fp32.

  q [B, T, Hq, D], k/v [B, S, Hkv, D]. Without attention dropout this is the chosen kernel: XLA's
  `jax.nn.dot_product_attention` over the dense mask, cuDNN flash attention or Pallas splash
  attention (models/attention_kernels.py). Attention dropout needs the explicit probabilities,
  so it always runs the einsum path here (`attention_kernels.choose` never picks a fused kernel
  for it).
  """
  if dropout_rate == 0.0 or dropout_key is None:
    if kernel.name == "cudnn":
      return attention_kernels.cudnn_attention(q, k, v, mask)
    if kernel.name == "pallas":
      return attention_kernels.splash_attention(q, k, v, mask, interpret=kernel.interpret)
    return jax.nn.dot_product_attention(q, k, v, mask=mask.dense(), implementation="xla")
  if kernel.name != "xla":
    raise ValueError(f"attention dropout runs the XLA path, not {kernel.name}")
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
  scores = scores / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  scores = jnp.where(mask.dense(), scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, probs.shape)
  probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(v.dtype)
  return jnp.einsum("bhts,bshd->bthd", probs, v)
