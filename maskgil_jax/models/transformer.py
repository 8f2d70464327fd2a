"""The one LLaMA transformer: bidirectional it is MaskGIL, causal with a KV cache it is LlamaGen.

The condition prefix is a class token (`config.model.condition='class'`) or a caption
(`'caption'`): `cls_token_num` slots of text-encoder features through LlamaGen's caption MLP
(`cls_embedding.cap_proj.fc1/fc2`, tanh GELU) with a learned null caption
(`cls_embedding.uncond_embedding`); padded caption slots are hidden from every query (each
slot still sees itself), in the causal and the bidirectional mode alike.

Parameters (names as the PyTorch reference keys) are plain pytree leaves; layer parameters are
stacked on a leading `layers` axis and run by `lax.scan` (or an unrolled loop, same outputs)
under `jax.checkpoint`. Every call is a pure function of the module, its inputs, an explicit
RNG key (dropout) and, for decoding, a `KVCache` that it returns updated. The attention kernel
(`config.model.attention_kernel`) is chosen once per traced call from the call's shapes and
passed down to every layer (models/attention_kernels.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax.configlib.model import ffn_hidden_dim, vocab_rows
from maskgil_jax.models import attention_kernels, conditions, factorized, masks
from maskgil_jax.models.attention import Attention
from maskgil_jax.models.attention_kernels import Kernel
from maskgil_jax.models.kv_cache import KVCache, LayerCache
from maskgil_jax.models.layers import Embedding, Linear, RMSNorm, stacked
from maskgil_jax.models.layouts import Layout
from maskgil_jax.models.model_spec import ModelSpec
from maskgil_jax.models.remat import remat
from maskgil_jax.parallel.rules import constrain

ACT = ("act_batch", "act_length", "act_embed")


def dropout(x, rate: float, key):
  if rate == 0.0 or key is None:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class FeedForward(nnx.Module):
  """SwiGLU: w2(silu(w1 x) * w3 x)."""

  def __init__(self, dim: int, hidden: int, init_std: float, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    p = dict(std=init_std, param_dtype=param_dtype, rngs=rngs)
    self.w1 = Linear(dim, hidden, ("embed", "mlp"), **p)
    self.w3 = Linear(dim, hidden, ("embed", "mlp"), **p)
    self.w2 = Linear(hidden, dim, ("mlp", "embed"), **p)

  def __call__(self, x):
    h = jax.nn.silu(self.w1(x)) * self.w3(x)
    return self.w2(constrain(h, ("act_batch", "act_length", "act_mlp")))


class Block(nnx.Module):
  """Pre-norm (LlamaGen): h = x + attn(norm(x)); out = h + ffn(norm(h)).
  Post-norm (MaskGIL paper): h = x + norm(attn(x)); out = h + norm(ffn(h))."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    pd = jnp.dtype(m.param_dtype)
    self.attention = Attention(m.dim, m.n_head, m.n_kv_head, qk_norm=m.qk_norm,
                               norm_eps=m.norm_eps, init_std=m.init_std, param_dtype=pd,
                               rngs=rngs)
    self.feed_forward = FeedForward(m.dim, ffn_hidden_dim(m), m.init_std, param_dtype=pd,
                                    rngs=rngs)
    self.attention_norm = RMSNorm(m.dim, m.norm_eps, param_dtype=pd)
    self.ffn_norm = RMSNorm(m.dim, m.norm_eps, param_dtype=pd)
    self.post_norm = m.norm_placement == "post"
    self.rates = (float(m.attn_dropout), float(m.resid_dropout), float(m.ffn_dropout))

  def __call__(self, x, cos, sin, mask, key, cache=None, cache_start=None,
               kernel: Kernel = attention_kernels.XLA):
    attn_rate, resid_rate, ffn_rate = self.rates
    keys = jax.random.split(key, 3) if key is not None else (None,) * 3
    attn_in = x if self.post_norm else self.attention_norm(x)
    a, cache = self.attention(attn_in, cos, sin, mask, cache=cache, cache_start=cache_start,
                              dropout_rate=attn_rate, dropout_key=keys[0], kernel=kernel)
    a = dropout(a, resid_rate, keys[1])
    h = x + (self.attention_norm(a) if self.post_norm else a)
    f = dropout(self.feed_forward(h if self.post_norm else self.ffn_norm(h)), ffn_rate, keys[2])
    out = h + (self.ffn_norm(f) if self.post_norm else f)
    return constrain(out, ACT), cache


class Transformer(nnx.Module):
  """Embeddings of one token layout, the layer stack, the final norm and the output head."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    m = ModelSpec.from_config(m)  # config.model, or its spec
    self.layout = Layout.from_config(m)
    self.dtype = jnp.dtype(m.dtype)
    self.scan_layers = bool(m.scan_layers)
    self.remat_policy = m.remat_policy
    self.token_dropout = float(m.token_dropout)
    self.attn_dropout = float(m.attn_dropout)
    self.attention_kernel = m.attention_kernel
    self.n_layer, self.n_kv_head, self.head_dim = m.n_layer, m.n_kv_head, m.dim // m.n_head
    table_rows, out_classes = vocab_rows(m)
    pd = jnp.dtype(m.param_dtype)  # fp32 master weights unless a config says otherwise
    emb = dict(std=m.init_std, param_dtype=pd, rngs=rngs)
    self.condition = m.condition
    # LFQ codes as two sub-tokens (models/factorized.py); None: one flat table and head
    self.factorization = tuple(m.token_factorization) or None
    if m.layout == "maskgil_reference":
      self.tok_emb = Embedding(table_rows, m.dim, **emb)
    elif self.condition == "caption":
      c = m.caption_dim
      null = (jax.random.normal(rngs.params(), (m.cls_token_num, c)) * c ** -0.5).astype(pd)
      self.cls_embedding = nnx.Dict(
          cap_proj=nnx.Dict(fc1=Linear(c, m.dim, ("caption_embed", "mlp"), **emb),
                            fc2=Linear(m.dim, m.dim, ("mlp", "embed"), **emb)),
          uncond_embedding=nnx.Param(null, out_sharding=("caption_slots", "caption_embed")))
      self._token_tables(m, table_rows, emb)
    else:
      self.cls_embedding = nnx.Dict(embedding_table=Embedding(m.num_classes + 1, m.dim, **emb))
      self._token_tables(m, table_rows, emb)
    self.layers = stacked(lambda r: Block(m, rngs=r), m.n_layer, rngs)
    self.norm = RMSNorm(m.dim, m.norm_eps, param_dtype=pd)
    # zero-initialised like LlamaGen: every class starts equally likely
    head = lambda classes: Linear(m.dim, classes, ("embed", "vocab"), zero=True, param_dtype=pd,
                                  rngs=rngs)
    if self.factorization is None:
      self.output = head(out_classes)
    else:  # Open-MAGVIT2's intra-position transformer and one head per sub-token
      self.factorized_n_layer = int(m.factorized_n_layer)
      self.factorized_blocks = stacked(lambda r: Block(m, rngs=r), self.factorized_n_layer, rngs)
      self.head = nnx.List([head(n) for n in factorized.num_classes(self.factorization)])

  def _token_tables(self, m, table_rows: int, emb: dict):
    """The image-token table: one of `table_rows`, or a table per sub-token (each with a MASK
    row where the layout has MASK) for a factorized model."""
    if self.factorization is None:
      self.tok_embeddings = Embedding(table_rows, m.dim, **emb)
      return
    extra = 1 if m.layout == "maskgil" else 0
    pre, post = factorized.num_classes(self.factorization)
    self.pre_emb = Embedding(pre + extra, m.dim, **emb)
    self.post_emb = Embedding(post + extra, m.dim, **emb)

  def _embed_tokens(self, tokens):
    if self.factorization is None:
      return self.tok_embeddings(tokens, self.dtype)
    return factorized.embed(self, tokens, self.dtype)

  def sub_logits(self, h, s0=None):
    """A factorized model's sub-token logits from the hidden states its calls return
    (models/factorized.py `sub_logits`)."""
    return factorized.sub_logits(self, h, s0)

  # ---- the layer stack ------------------------------------------------------------------
  def _run_layers(self, h, cos, sin, mask, key, kernel: Kernel = attention_kernels.XLA):
    """The layer stack of a full-sequence pass (training, MAR): `lax.scan` over the stacked
    parameters, each layer under the remat policy."""
    keys = (jax.random.split(key, self.n_layer) if key is not None else None)

    def body(h, layer, layer_key):
      return layer(h, cos, sin, mask, layer_key, kernel=kernel)[0]

    body = remat(body, self.remat_policy)
    if self.scan_layers:
      return jax.lax.scan(lambda h, xs: (body(h, *xs), None), h, (self.layers, keys))[0]
    for i in range(self.n_layer):
      take = lambda t: None if t is None else jax.tree.map(lambda a: a[i], t)
      h = body(h, take(self.layers), take(keys))
    return h

  def unstacked_layers(self) -> tuple:
    """The blocks as a tuple of per-layer modules, sliced out of the stacked parameters.

    Decoders slice once, before their token loop, and pass the tuple to every `decode` call:
    each weight is then its own buffer that a matmul reads in place, where slicing the stack
    inside the loop copies every weight at every token on backends that cannot read a slice
    in place (XLA:CPU; docs/performance.md).
    """
    return tuple(jax.tree.map(lambda a: a[i], self.layers) for i in range(self.n_layer))

  def _decode_layers(self, h, cos, sin, mask, cache: KVCache, start, layers=None):
    """The layer stack of a cached decode call, (h, k, v) out.

    The loop carries the whole cache and every layer writes its new keys/values into the one
    cache array in place (kv_cache.LayerCache): slicing the cache into per-layer loop inputs
    and stacking the outputs back copies all of it at every token. With `layers` (from
    `unstacked_layers`) the loop is unrolled over them; otherwise a `fori_loop` (or Python
    loop without `scan_layers`) indexes the stacked parameters. No gradient flows here, so
    there is nothing to rematerialise.
    """
    def body(i, carry, layer=None):
      h, k, v = carry
      if layer is None:
        layer = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False),
                             self.layers)
      h, c = layer(h, cos, sin, mask, None, LayerCache(k, v, i), start)
      return h, c.k, c.v

    carry = (h, cache.k, cache.v)
    if layers is not None:
      for i, layer in enumerate(layers):
        carry = body(i, carry, layer)
      return carry
    if self.scan_layers:
      return jax.lax.fori_loop(0, self.n_layer, body, carry)
    for i in range(self.n_layer):
      carry = body(i, carry)
    return carry

  def _attention_kernel(self, t: int, s: int, key_mask, *, dropout=False, decode=False):
    """The kernel of one call's attention (`config.model.attention_kernel` resolved for these
    shapes on the running platform)."""
    shape = attention_kernels.Shape(t, s, self.head_dim, self.dtype.name,
                                    masked=key_mask is not None,
                                    dropout=dropout and self.attn_dropout > 0, decode=decode)
    return attention_kernels.resolve(self.attention_kernel, shape)

  def _head(self, h):
    """Logits [.., V] (fp32); a factorized model returns the hidden states [.., D] instead:
    its logits of the second sub-token depend on the first (`sub_logits`)."""
    if self.factorization is not None:
      return h
    return self.output(self.norm(h)).astype(jnp.float32)

  # ---- sequences --------------------------------------------------------------------------
  def embed_caption(self, cap: conditions.Caption):
    """[B, P, D]: caption features (or the null caption where `cap.null`) through the MLP."""
    e = self.cls_embedding
    null = e["uncond_embedding"][...].astype(cap.features.dtype)
    x = jnp.where(cap.null[:, None, None], null[None], cap.features).astype(self.dtype)
    proj = e["cap_proj"]
    return proj["fc2"](jax.nn.gelu(proj["fc1"](x), approximate=True))

  def key_mask(self, cond, length: int, key_mask=None):
    """[B, S] keys that may be attended: a caption's padding hidden, `key_mask` applied."""
    if conditions.is_caption(cond):
      image = jnp.ones((cond.mask.shape[0], length - cond.mask.shape[1]), bool)
      cap = jnp.concatenate([cond.mask, image], axis=1)
      key_mask = cap if key_mask is None else cap & key_mask.astype(bool)
    return key_mask

  def embed(self, tokens, labels):
    """[B, S, D] embeddings of the layout's sequence for image tokens [B, T] and the condition
    (labels [B] or a `conditions.Caption`)."""
    lay = self.layout
    conditions.check_kind(labels, self.condition)
    if conditions.is_caption(labels):
      cap = self.embed_caption(labels)
      return jnp.concatenate([cap, self._embed_tokens(tokens)], axis=1)
    if lay.name == "maskgil_reference":
      ids = jnp.concatenate([tokens, lay.reference_class_ids(labels)[:, None]], axis=1)
      return self.tok_emb(ids, self.dtype)
    cls = self.cls_embedding["embedding_table"](labels, self.dtype)[:, None]
    cls = jnp.repeat(cls, lay.cls_token_num, axis=1)
    return jnp.concatenate([cls, self._embed_tokens(tokens)], axis=1)

  def __call__(self, tokens, labels, *, mode: str, key=None, key_mask=None):
    """Logits [B, S, V] (fp32) at every slot of the sequence built from tokens and labels
    (a factorized model: hidden states [B, S, D] for `sub_logits`).

    mode: 'bidirectional' (MaskGIL) or 'causal' (teacher-forced AR). `key` enables dropout
    (training); without it the call is deterministic. `key_mask` [B, S] hides padded slots
    (a caption's own padding is hidden without it).
    """
    if mode not in ("bidirectional", "causal"):
      raise ValueError(f"mode {mode!r}: use 'bidirectional' or 'causal' (decode via decode())")
    h = self.embed(tokens, labels)
    s = h.shape[1]
    cos, sin = (jnp.asarray(t[:s]) for t in self.layout.rope_tables())
    keys = jax.random.split(key) if key is not None else (None, None)
    h = constrain(dropout(h, self.token_dropout, keys[0]), ACT)
    key_mask = self.key_mask(labels, s, key_mask)
    mask = masks.AttentionMask.create(mode, s, key_mask=key_mask)
    kernel = self._attention_kernel(s, s, key_mask, dropout=key is not None)
    h = self._run_layers(h, cos, sin, mask, keys[1], kernel)
    return self._head(h)

  def mar_logits(self, tokens, labels, **kw):
    """Bidirectional logits [B, L, V] at the L image slots (tokens may hold MASK ids)."""
    logits = self(tokens, labels, mode="bidirectional", **kw)
    p, n = self.layout.prefix_len, tokens.shape[1]
    return logits[:, p:p + n]

  def ar_logits(self, targets, labels, **kw):
    """Teacher-forced causal logits [B, L, V]: slot j predicts targets[:, j]."""
    if self.layout.prefix_len == 0:
      raise ValueError("AR needs a condition prefix (layout llamagen or maskgil)")
    logits = self(targets[:, :-1], labels, mode="causal", **kw)
    return logits[:, self.layout.prefix_len - 1:]

  # ---- cached decoding --------------------------------------------------------------------
  def init_cache(self, batch: int, dtype=None) -> KVCache:
    return KVCache.init(self.n_layer, batch, self.layout.seq_len, self.n_kv_head,
                        self.head_dim, dtype or self.dtype)

  def decode(self, tokens, labels, cache: KVCache, layers=None):
    """Feed the next slots into the cache and return (logits [B, T, V], cache).

    With `labels` given (and `tokens` None) the call is the prefill of the condition prefix;
    otherwise `tokens` [B, T] are image tokens placed right after the filled slots. Logits at
    the last fed slot predict the next image token. `layers` (from `unstacked_layers`, made
    once per decoding loop) saves re-slicing the stacked weights at every call.
    """
    if self.layout.prefix_len == 0:
      raise ValueError("cached decoding needs a condition prefix (layout llamagen or maskgil)")
    if tokens is None:
      h = self.embed(jnp.zeros((conditions.batch_size(labels), 0), jnp.int32), labels)
      if conditions.is_caption(labels):  # padded caption slots stay hidden from every query
        cache = cache.replace(valid=jax.lax.dynamic_update_slice_in_dim(
            cache.valid, labels.mask, cache.length, axis=1))
    else:
      h = self._embed_tokens(tokens)
    t, start = h.shape[1], cache.length
    cos_all, sin_all = (jnp.asarray(x) for x in self.layout.rope_tables())
    cos = jax.lax.dynamic_slice_in_dim(cos_all, start, t)
    sin = jax.lax.dynamic_slice_in_dim(sin_all, start, t)
    mask = masks.AttentionMask.create("decode", t, cache.max_len, start=start,
                                      key_mask=cache.valid)
    # cached decoding runs XLA (attention_kernels says why); resolving still refuses an explicit
    # kernel that the platform cannot run, as full-sequence calls do
    self._attention_kernel(t, cache.max_len, cache.valid, decode=True)
    h, k, v = self._decode_layers(h, cos, sin, mask, cache, start, layers)
    return self._head(h), KVCache(k, v, start + t, cache.valid)


def at_grid(model: Transformer, grid) -> Transformer:
  """The same parameters over an h x w token grid (rows, columns).

  The grid is static layout data, not a parameter: the returned module shares every array
  with `model` and differs only in its sequence length and RoPE table, so a jitted function
  compiles once per grid shape and reuses that program for every later call of the shape.
  Works on traced modules too (inside a loss), where the gradient flows to `model`.
  """
  layout = model.layout.at_grid(grid)
  if layout == model.layout:
    return model
  copy = jax.tree.map(lambda x: x, model)  # a new module object over the same leaves
  object.__setattr__(copy, "layout", layout)
  return copy


def num_params(module) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))
