"""The T5 encoder (FLAN-T5 family) that turns prompts into caption features for the transformer.

What makes it T5 and not the LLaMA block of `transformer.py` (docs/reference.md section 8):
- no absolute positions: a learned bias per (relative-position bucket, head) is added to the
  attention scores; it lives in the first block only and the same bias serves every layer;
- attention scores are not divided by sqrt(d_kv) (T5 folds that into its initialisation);
- T5's LayerNorm is scale-only RMS normalisation (our `RMSNorm`, eps 1e-6), pre-norm;
- the feed-forward is gated GELU (tanh approximation): wo(gelu(wi_0 x) * wi_1 x).

Parameters are stacked on a `layers` axis like the transformer's; names follow the Hugging Face
keys with `layer.0` / `layer.1` spelt `SelfAttention` + `attention_norm` and `DenseReluDense` +
`ffn_norm` (the table is `interop/t5_names.py`). The encoder is a pure function of its
parameters, token ids and padding mask; padded positions are computed but attend only to real
tokens, exactly as Hugging Face's `T5EncoderModel` with an attention mask.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax.models.layers import Embedding, Linear, RMSNorm, stacked
from maskgil_jax.parallel.rules import constrain

ACT = ("act_batch", "act_length", "act_embed")


class T5SpecError(ValueError):
  """A T5 config.json this encoder cannot run; the message names the field."""


@dataclasses.dataclass(frozen=True)
class T5Spec:
  vocab_size: int
  d_model: int
  d_kv: int
  num_heads: int
  d_ff: int
  num_layers: int
  num_buckets: int = 32
  max_distance: int = 128
  eps: float = 1e-6
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @classmethod
  def from_hf_config(cls, hf: dict, dtype: str = "float32", source: str = "config.json"
                     ) -> "T5Spec":
    """The spec of a Hugging Face T5 `config.json` (gated-GELU FLAN-T5 / T5 v1.1 only)."""
    act = hf.get("feed_forward_proj", "relu")
    if act != "gated-gelu":
      raise T5SpecError(f"{source}: feed_forward_proj {act!r}; this encoder runs the gated-GELU "
                        "T5 family (FLAN-T5, T5 v1.1) that LlamaGen uses")
    try:
      return cls(vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"],
                 num_heads=hf["num_heads"], d_ff=hf["d_ff"], num_layers=hf["num_layers"],
                 num_buckets=hf.get("relative_attention_num_buckets", 32),
                 max_distance=hf.get("relative_attention_max_distance", 128),
                 eps=hf.get("layer_norm_epsilon", 1e-6), dtype=dtype)
    except KeyError as e:
      raise T5SpecError(f"{source}: lacks the field {e.args[0]!r}") from e


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """int32 [T, T] bucket of key j seen from query i (bidirectional T5 rule).

  Half the buckets are for keys after the query; within a half, distances below half of it get
  a bucket each and larger ones share log-spaced buckets up to `max_distance` (computed in
  float32, as the reference does, so boundary distances land in the same bucket).
  """
  rel = np.arange(length)[None, :] - np.arange(length)[:, None]
  half = num_buckets // 2
  out = (rel > 0).astype(np.int64) * half
  n = np.abs(rel)
  exact = half // 2
  scaled = (np.log(np.maximum(n, 1).astype(np.float32) / np.float32(exact))
            / np.float32(math.log(max_distance / exact)) * np.float32(half - exact))
  large = np.minimum(exact + scaled.astype(np.int64), half - 1)
  return (out + np.where(n < exact, n, large)).astype(np.int32)


class T5Attention(nnx.Module):
  def __init__(self, s: T5Spec, *, rngs: nnx.Rngs):
    inner = s.num_heads * s.d_kv
    self.heads, self.d_kv = s.num_heads, s.d_kv
    self.q = Linear(s.d_model, inner, ("embed", "qkv"), rngs=rngs)
    self.k = Linear(s.d_model, inner, ("embed", "qkv"), rngs=rngs)
    self.v = Linear(s.d_model, inner, ("embed", "qkv"), rngs=rngs)
    self.o = Linear(inner, s.d_model, ("heads", "embed"), rngs=rngs)

  def __call__(self, x, bias):
    """x [B, T, D]; bias [B|1, H, T, T] fp32 (relative positions plus -inf-like padding)."""
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, self.heads, self.d_kv)
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bhts,bshd->bthd", probs, v)
    return self.o(out.reshape(b, t, self.heads * self.d_kv))


class T5Block(nnx.Module):
  def __init__(self, s: T5Spec, *, rngs: nnx.Rngs):
    self.SelfAttention = T5Attention(s, rngs=rngs)
    self.attention_norm = RMSNorm(s.d_model, s.eps)
    self.DenseReluDense = nnx.Dict(
        wi_0=Linear(s.d_model, s.d_ff, ("embed", "mlp"), rngs=rngs),
        wi_1=Linear(s.d_model, s.d_ff, ("embed", "mlp"), rngs=rngs),
        wo=Linear(s.d_ff, s.d_model, ("mlp", "embed"), rngs=rngs))
    self.ffn_norm = RMSNorm(s.d_model, s.eps)

  def __call__(self, h, bias):
    h = h + self.SelfAttention(self.attention_norm(h), bias)
    ff = self.DenseReluDense
    x = self.ffn_norm(h)
    gated = jax.nn.gelu(ff["wi_0"](x), approximate=True) * ff["wi_1"](x)
    gated = constrain(gated, ("act_batch", "act_length", "act_mlp"))
    return constrain(h + ff["wo"](gated), ACT)


class T5Encoder(nnx.Module):
  """Token ids [B, T] and mask [B, T] -> last hidden states [B, T, d_model] (float32)."""

  def __init__(self, s: T5Spec, *, rngs: nnx.Rngs):
    self.spec = s
    self.shared = Embedding(s.vocab_size, s.d_model, std=1.0, rngs=rngs)
    self.relative_attention_bias = nnx.Param(
        jnp.zeros((s.num_buckets, s.num_heads), jnp.float32), out_sharding=("buckets", "heads"))
    self.block = stacked(lambda r: T5Block(s, rngs=r), s.num_layers, rngs)
    self.final_layer_norm = RMSNorm(s.d_model, s.eps)

  def position_bias(self, length: int):
    """fp32 [H, T, T]: the learned bias of each query/key offset's bucket, per head."""
    buckets = relative_buckets(length, self.spec.num_buckets, self.spec.max_distance)
    return jnp.transpose(jnp.take(self.relative_attention_bias[...], jnp.asarray(buckets),
                                  axis=0), (2, 0, 1))

  def __call__(self, ids, mask):
    dtype = jnp.dtype(self.spec.dtype)
    h = constrain(self.shared(ids, dtype), ACT)
    hidden = jnp.where(mask.astype(bool)[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
    bias = self.position_bias(ids.shape[1])[None] + hidden

    def body(h, block):
      return block(h, bias), None

    h, _ = jax.lax.scan(body, h, self.block)
    return self.final_layer_norm(h).astype(jnp.float32)
