"""Our transformer and tokenizer in plain PyTorch, so exported models run without JAX.

This file needs torch (and `safetensors` to read `.safetensors` files) and imports nothing
else from maskgil_jax: it can be copied next to any PyTorch code and used on its own. (Importing
it as `maskgil_jax.interop.torch_model` runs the package `__init__`, which imports Flax.)

It is the reference architecture with exactly the reference key names, plus our options:
- `Transformer` runs the three token layouts (`llamagen`, `maskgil_reference`, `maskgil`) with
  1D/2D RoPE, QK-norm, pre/post-norm and grouped KV heads; `llamagen` and `maskgil_reference`
  weights load with strict=True from the reference PyTorch checkpoints (and our exports of
  them), `maskgil` from a native export.
- `VQModel` is LlamaGen's VQ tokenizer (and the lookup-free variant), with the
  `quantize.codebook_used` buffer, so LlamaGen VQ checkpoints load strictly too.
- `greedy_mar` and `greedy_ar` decode class-conditional images: MaskGIL confidence masking with
  argmax picks, and LlamaGen next-token decoding with a KV cache. A caption model
  (`condition='caption'`) takes a `Caption` (left-padded text-encoder features, their mask) in
  place of the labels everywhere: LlamaGen's CaptionEmbedder (`cls_embedding.cap_proj.fc1/fc2`,
  tanh GELU, `cls_embedding.uncond_embedding` the null caption), padded caption slots hidden
  from every query (each slot still sees itself). Classifier-free guidance uses
  MaskGIL's convention, logits = (1 + w) * cond - w * uncond (LlamaGen's scale s is 1 + w).

Use:
  gpt = load_transformer("gpt.safetensors")      # exports carry their config
  vq = load_tokenizer("vq.safetensors")
  codes = greedy_mar(gpt, torch.tensor([3, 7]), steps=8, cfg_scale=3.0)
  images = vq.decode_code(codes.view(-1, gpt.config.grid_size, gpt.config.grid_size))

Images are NCHW floats in [-1, 1] (the PyTorch convention; the JAX models are NHWC); codes are
int64 [B, h, w] in raster order.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("llamagen", "maskgil_reference", "maskgil")
# Metadata keys of an exported file (safetensors header / `.pt` "metadata" entry).
META_KIND = "maskgil_jax.kind"  # 'transformer' | 'tokenizer'
META_LAYOUT = "maskgil_jax.layout"  # 'llamagen' | 'maskgil-reference' | 'native'
META_CONFIG = "maskgil_jax.config"  # the experiment config as JSON
STATE_DICT_ENTRIES = ("model", "model_state_dict", "state_dict", "module")


# ---- configs ------------------------------------------------------------------------------
def _pick(cls, d: dict):
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """The fields of `config.model` the network needs (extra fields are ignored)."""
  layout: str
  n_layer: int
  n_head: int
  dim: int
  codebook_size: int
  num_classes: int
  grid_size: int
  n_kv_head: int | None = None
  cls_token_num: int = 1
  multiple_of: int = 256
  ffn_dim_multiplier: float | None = None
  norm_eps: float = 1e-5
  rope_base: float = 10000.0
  rope: str = "2d"
  qk_norm: bool = False
  norm_placement: str = "pre"
  condition: str = "class"  # or 'caption'
  caption_dim: int = 2048

  @classmethod
  def from_dict(cls, d: dict) -> "TransformerConfig":
    c = _pick(cls, d)
    if c.layout not in LAYOUTS:
      raise ValueError(f"layout {c.layout!r} unknown; one of {LAYOUTS}")
    return c

  @property
  def kv_heads(self) -> int:
    return self.n_kv_head or self.n_head

  @property
  def head_dim(self) -> int:
    return self.dim // self.n_head

  @property
  def ffn_hidden(self) -> int:
    """LlamaGen's SwiGLU width: round_up(int(2 * 4 * dim / 3) * multiplier, multiple_of)."""
    hidden = int(2 * 4 * self.dim / 3)
    if self.ffn_dim_multiplier is not None:
      hidden = int(self.ffn_dim_multiplier * hidden)
    return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

  @property
  def vocab(self) -> tuple[int, int]:
    """(token-table rows, output classes)."""
    k = self.codebook_size
    if self.layout == "maskgil_reference":  # codes, MASK, classes, null in one table
      return k + 1 + self.num_classes + 1, k + 1
    return (k + 1, k) if self.layout == "maskgil" else (k, k)

  @property
  def num_image_tokens(self) -> int:
    return self.grid_size * self.grid_size

  @property
  def prefix_len(self) -> int:
    return 0 if self.layout == "maskgil_reference" else self.cls_token_num

  @property
  def seq_len(self) -> int:
    return self.num_image_tokens + self.cls_token_num

  @property
  def mask_id(self) -> int | None:
    return None if self.layout == "llamagen" else self.codebook_size

  @property
  def null_label(self) -> int:
    return self.num_classes


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """The fields of `config.tokenizer` the network needs (extra fields are ignored)."""
  kind: str = "vq"
  ch: int = 128
  ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  enc_res_blocks: int = 2
  dec_res_blocks: int = 3
  z_channels: int = 256
  codebook_size: int = 16384
  codebook_dim: int = 8
  l2_norm: bool = True

  @classmethod
  def from_dict(cls, d: dict) -> "TokenizerConfig":
    return _pick(cls, d)


# ---- rotary position embeddings -----------------------------------------------------------
def _frequencies(n: int, base: float) -> torch.Tensor:
  exponent = torch.arange(0, 2 * n, 2, dtype=torch.float32)[:n] / (2 * n)
  return 1.0 / (torch.tensor(base, dtype=torch.float32) ** exponent)


def rope_tables(c: TransformerConfig) -> tuple[torch.Tensor, torch.Tensor]:
  """(cos, sin) [seq_len, head_dim/2] for every slot of the layout's sequence, in float32.

  llamagen: class slots zeroed, image cell (r, c) rotated by concat(row, column) angles.
  maskgil_reference: slot s uses row s of a 1D table whose row 0 is zero (image token 0 gets
  q = k = 0, as the public code does). maskgil: class slots at grid position (-1, -1).
  """
  n, g, p, hd = c.num_image_tokens, c.grid_size, c.cls_token_num, c.head_dim
  cells = torch.arange(n, dtype=torch.float32)
  scale = torch.ones(n + p)
  if c.layout == "maskgil_reference":
    slots = torch.arange(n + p, dtype=torch.float32)
    angles = torch.outer((slots - 1).clamp(min=0), _frequencies(hd // 2, c.rope_base))
    scale = (slots > 0).float()
  elif c.rope == "1d":
    positions = torch.cat([torch.full((p,), -1.0), cells])
    angles = torch.outer(positions, _frequencies(hd // 2, c.rope_base))
  else:
    rows = torch.cat([torch.full((p,), -1.0), torch.div(cells, g, rounding_mode="floor")])
    cols = torch.cat([torch.full((p,), -1.0), cells % g])
    f = _frequencies(hd // 4, c.rope_base)
    angles = torch.cat([torch.outer(rows, f), torch.outer(cols, f)], dim=-1)
  if c.layout == "llamagen":
    scale[:p] = 0.0
  return torch.cos(angles) * scale[:, None], torch.sin(angles) * scale[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
  """Rotate interleaved pairs (x[2k], x[2k+1]) of x [B, S, H, D] by [S, D/2] tables, in fp32."""
  pairs = x.float().reshape(*x.shape[:-1], -1, 2)
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  x0, x1 = pairs[..., 0], pairs[..., 1]
  out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
  return out.reshape(x.shape).type_as(x)


# ---- the transformer ----------------------------------------------------------------------
class RMSNorm(nn.Module):
  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(dim))

  def forward(self, x):
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return normed.type_as(x) * self.weight.type_as(x)


class Attention(nn.Module):
  def __init__(self, c: TransformerConfig):
    super().__init__()
    self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.kv_heads, c.head_dim
    self.wqkv = nn.Linear(c.dim, (c.n_head + 2 * c.kv_heads) * c.head_dim, bias=False)
    self.wo = nn.Linear(c.n_head * c.head_dim, c.dim, bias=False)
    if c.qk_norm:  # per-head RMSNorm of q and k before RoPE
      self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
      self.k_norm = RMSNorm(c.head_dim, c.norm_eps)
    self.qk_norm = c.qk_norm

  def forward(self, x, cos, sin, mask, cache=None, start: int = 0):
    """x [B, T, D]; mask [T, S] bool (True = may attend) or None. With `cache` = (k, v)
    [B, S, Hkv, Dh] the new keys and values are written at `start` and attention spans S."""
    b, t, _ = x.shape
    hd, nq, nkv = self.head_dim, self.n_head, self.n_kv_head
    q, k, v = self.wqkv(x).split([nq * hd, nkv * hd, nkv * hd], dim=-1)
    q, k, v = q.view(b, t, nq, hd), k.view(b, t, nkv, hd), v.view(b, t, nkv, hd)
    if self.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cache is not None:
      cache[0][:, start:start + t], cache[1][:, start:start + t] = k, v
      k, v = cache
    groups = nq // nkv
    q, k, v = (y.transpose(1, 2) for y in (q, k.repeat_interleave(groups, dim=2),
                                             v.repeat_interleave(groups, dim=2)))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return self.wo(out.transpose(1, 2).reshape(b, t, nq * hd))


class FeedForward(nn.Module):
  """SwiGLU: w2(silu(w1 x) * w3 x)."""

  def __init__(self, c: TransformerConfig):
    super().__init__()
    self.w1 = nn.Linear(c.dim, c.ffn_hidden, bias=False)
    self.w3 = nn.Linear(c.dim, c.ffn_hidden, bias=False)
    self.w2 = nn.Linear(c.ffn_hidden, c.dim, bias=False)

  def forward(self, x):
    return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
  """Pre-norm: h = x + attn(norm(x)); out = h + ffn(norm(h)).
  Post-norm: h = x + norm(attn(x)); out = h + norm(ffn(h))."""

  def __init__(self, c: TransformerConfig):
    super().__init__()
    self.attention = Attention(c)
    self.feed_forward = FeedForward(c)
    self.attention_norm = RMSNorm(c.dim, c.norm_eps)
    self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
    self.post_norm = c.norm_placement == "post"

  def forward(self, x, cos, sin, mask, cache=None, start: int = 0):
    if self.post_norm:
      h = x + self.attention_norm(self.attention(x, cos, sin, mask, cache, start))
      return h + self.ffn_norm(self.feed_forward(h))
    h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, start)
    return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
  """The class table (num_classes + 1 rows; the last is the CFG null class)."""

  def __init__(self, num_classes: int, dim: int):
    super().__init__()
    self.embedding_table = nn.Embedding(num_classes + 1, dim)

  def forward(self, labels):
    return self.embedding_table(labels)


@dataclasses.dataclass
class Caption:
  """A caption condition: left-padded features [B, P, C] (padded rows zeroed), mask [B, P]
  (True on real tokens), null [B] (True: the model's null caption instead, for guidance)."""
  features: torch.Tensor
  mask: torch.Tensor
  null: torch.Tensor | None = None

  def __post_init__(self):
    self.features, self.mask = torch.as_tensor(self.features), torch.as_tensor(self.mask).bool()
    if self.null is None:
      self.null = torch.zeros(self.features.shape[0], dtype=torch.bool)

  @property
  def shape(self):  # the batch, as labels.shape[0]
    return self.features.shape[:1]

  def with_null(self) -> "Caption":
    """The rows followed by the same rows as null captions (same padding mask, as LlamaGen)."""
    return Caption(self.features.repeat(2, 1, 1), self.mask.repeat(2, 1),
                   torch.cat([self.null, torch.ones_like(self.null)]))


class CaptionEmbedder(nn.Module):
  """LlamaGen's caption MLP fc2(gelu_tanh(fc1(x))) and the learned null caption [P, C]."""

  def __init__(self, caption_dim: int, dim: int, slots: int):
    super().__init__()
    self.cap_proj = nn.ModuleDict({"fc1": nn.Linear(caption_dim, dim, bias=False),
                                   "fc2": nn.Linear(dim, dim, bias=False)})
    self.uncond_embedding = nn.Parameter(torch.zeros(slots, caption_dim))

  def forward(self, cap: Caption):
    x = torch.where(cap.null[:, None, None], self.uncond_embedding[None], cap.features)
    return self.cap_proj["fc2"](F.gelu(self.cap_proj["fc1"](x), approximate="tanh"))


def _key_mask(mask, key_valid):
  """`mask` [T, S] or None (all) with padded keys hidden, each query still seeing its own
  slot (the last T of the S keys): [B, 1, T, S]."""
  t, s = (mask.shape if mask is not None else (key_valid.shape[1],) * 2)
  own = torch.arange(s)[None, :] == (torch.arange(t) + s - t)[:, None]
  base = torch.ones(t, s, dtype=torch.bool) if mask is None else mask
  return ((base[None] & key_valid[:, None, :]) | own[None])[:, None]


class Transformer(nn.Module):
  """The LLaMA of a token layout; `forward` returns fp32 logits at every slot.

  Labels are 0..num_classes-1, and num_classes is the null (unconditional) class in every
  layout. Sequences: llamagen / maskgil = [class] + image tokens; maskgil_reference = image
  tokens + [class] from one table (codes, MASK, classes, null).
  """

  def __init__(self, config: TransformerConfig | dict):
    super().__init__()
    c = config if isinstance(config, TransformerConfig) else TransformerConfig.from_dict(config)
    self.config = c
    rows, out_classes = c.vocab
    if c.layout == "maskgil_reference":
      self.tok_emb = nn.Embedding(rows, c.dim)
    elif c.condition == "caption":
      self.cls_embedding = CaptionEmbedder(c.caption_dim, c.dim, c.cls_token_num)
      self.tok_embeddings = nn.Embedding(rows, c.dim)
    else:
      self.cls_embedding = LabelEmbedder(c.num_classes, c.dim)
      self.tok_embeddings = nn.Embedding(rows, c.dim)
    self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
    self.norm = RMSNorm(c.dim, c.norm_eps)
    self.output = nn.Linear(c.dim, out_classes, bias=False)
    cos, sin = rope_tables(c)
    self.register_buffer("rope_cos", cos, persistent=False)  # rebuilt, never in a state dict
    self.register_buffer("rope_sin", sin, persistent=False)

  def embed(self, tokens, labels):
    c = self.config
    if c.layout == "maskgil_reference":
      ids = torch.cat([tokens, (c.codebook_size + 1 + labels)[:, None]], dim=1)
      return self.tok_emb(ids)
    if isinstance(labels, Caption):
      return torch.cat([self.cls_embedding(labels), self.tok_embeddings(tokens)], dim=1)
    cls = self.cls_embedding(labels)[:, None].expand(-1, c.cls_token_num, -1)
    return torch.cat([cls, self.tok_embeddings(tokens)], dim=1)

  def _run(self, h, start: int = 0, mask=None, cache=None):
    t = h.shape[1]
    cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]
    for i, layer in enumerate(self.layers):
      h = layer(h, cos, sin, mask, None if cache is None else cache.layer(i), start)
    return self.output(self.norm(h)).float()

  def forward(self, tokens, labels, mode: str = "bidirectional"):
    """Logits [B, S, V] at every slot; mode 'bidirectional' (MaskGIL) or 'causal' (AR)."""
    if mode not in ("bidirectional", "causal"):
      raise ValueError(f"mode {mode!r}: use 'bidirectional' or 'causal'")
    h = self.embed(tokens, labels)
    s = h.shape[1]
    mask = (torch.ones(s, s, dtype=torch.bool, device=h.device).tril() if mode == "causal"
            else None)
    if isinstance(labels, Caption):
      image = torch.ones(labels.mask.shape[0], s - labels.mask.shape[1], dtype=torch.bool)
      mask = _key_mask(mask, torch.cat([labels.mask, image], dim=1))
    return self._run(h, mask=mask)

  def mar_logits(self, tokens, labels):
    """Bidirectional logits [B, L, V] at the image slots (tokens may hold mask_id)."""
    p = self.config.prefix_len
    return self(tokens, labels, "bidirectional")[:, p:p + tokens.shape[1]]

  def ar_logits(self, targets, labels):
    """Teacher-forced causal logits [B, L, V]: slot j predicts targets[:, j]."""
    p = self.config.prefix_len
    if p == 0:
      raise ValueError("AR needs a condition prefix (layout llamagen or maskgil)")
    return self(targets[:, :-1], labels, "causal")[:, p - 1:]

  def decode(self, tokens, labels, cache: "KVCache"):
    """Feed the class prefix (tokens None) or image tokens [B, T] after the filled slots;
    returns logits [B, T, V] and advances `cache`."""
    if self.config.prefix_len == 0:
      raise ValueError("cached decoding needs a condition prefix (layout llamagen or maskgil)")
    if tokens is None:
      h = self.embed(torch.zeros(labels.shape[0], 0, dtype=torch.long), labels)
      if isinstance(labels, Caption):  # padded caption slots stay hidden from every query
        cache.valid[:, cache.length:cache.length + labels.mask.shape[1]] = labels.mask
    else:
      h = self.tok_embeddings(tokens)
    t, start = h.shape[1], cache.length
    q_slot = torch.arange(start, start + t, device=h.device)[:, None]
    k_slot = torch.arange(cache.max_len, device=h.device)[None, :]
    mask = ((k_slot <= q_slot)[None] & cache.valid[:, None, :] | (k_slot == q_slot)[None])
    logits = self._run(h, start, mask[:, None], cache)
    cache.length += t
    return logits


class KVCache:
  """Per-layer key/value buffers [B, seq_len, kv_heads, head_dim] and the filled length."""

  def __init__(self, model: Transformer, batch: int):
    c = model.config
    p = next(model.parameters())
    shape = (c.n_layer, batch, c.seq_len, c.kv_heads, c.head_dim)
    self.k = torch.zeros(shape, dtype=p.dtype, device=p.device)
    self.v = torch.zeros(shape, dtype=p.dtype, device=p.device)
    self.length = 0
    self.max_len = c.seq_len
    self.valid = torch.ones(batch, c.seq_len, dtype=torch.bool, device=p.device)

  def layer(self, i: int):
    return self.k[i], self.v[i]


# ---- greedy decoding ------------------------------------------------------------------------
_SCHEDULES = {
    "arccos": lambda r: torch.arccos(r) / (math.pi / 2),
    "cosine": lambda r: torch.cos(r * (math.pi / 2)),
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
}


def tokens_per_step(schedule: str, steps: int, n: int) -> list[int]:
  """Tokens committed per MAR step: round(v_t / sum(v) * n), zeros raised to 1, the last step
  takes the rest (v_t = schedule(linspace(1, 0, steps)))."""
  if schedule not in _SCHEDULES:
    raise ValueError(f"mask schedule {schedule!r} unknown; one of {tuple(_SCHEDULES)}")
  v = _SCHEDULES[schedule](torch.linspace(1.0, 0.0, steps, dtype=torch.float32))
  total = v.sum()
  share = v / total if total > 0 else torch.zeros_like(v)
  counts = torch.round(share * n).long().clamp(min=1).tolist()
  counts[-1] = n - sum(counts[:-1])
  return counts


def _guided(logits_fn, labels, w: float, null_label: int):
  """(1 + w) * cond - w * uncond from one forward on the doubled batch (w = 0: cond only)."""
  if w == 0:
    return logits_fn(labels, 1)
  both = logits_fn(labels.with_null() if isinstance(labels, Caption)
                   else torch.cat([labels, torch.full_like(labels, null_label)]), 2)
  cond, uncond = both.chunk(2)
  return (1 + w) * cond - w * uncond


@torch.no_grad()
def greedy_mar(model: Transformer, labels, *, steps: int = 8, schedule: str = "arccos",
               cfg_scale: float = 0.0, cfg_schedule: str = "linear"):
  """MaskGIL decoding with argmax picks: start all MASK; each step predicts every position,
  and the `k` masked positions with the highest log-probability of their argmax are committed
  (k from `tokens_per_step`). CFG weight w_t = cfg_scale * t / (steps - 1) ('linear', as the
  reference; 0 for a single step) or cfg_scale ('constant'). Returns int64 codes [B, L]."""
  c = model.config
  if c.mask_id is None:
    raise ValueError("MAR decoding needs a MASK token (layout maskgil or maskgil_reference)")
  if cfg_schedule not in ("linear", "constant"):
    raise ValueError(f"cfg_schedule {cfg_schedule!r}; one of 'linear', 'constant'")
  b, n = labels.shape[0], c.num_image_tokens
  tokens = torch.full((b, n), c.mask_id, dtype=torch.long)
  for t, k in enumerate(tokens_per_step(schedule, steps, n)):
    w = cfg_scale * t / max(steps - 1, 1) if cfg_schedule == "linear" else cfg_scale
    logits = _guided(lambda l, r: model.mar_logits(tokens.repeat(r, 1), l), labels, w,
                     c.null_label)
    logp = torch.log_softmax(logits[..., :c.codebook_size], dim=-1)  # never pick MASK
    confidence, picks = logp.max(dim=-1)
    masked = tokens == c.mask_id
    confidence = confidence.masked_fill(~masked, -math.inf)
    k = min(k, int(masked.sum(dim=1).min()))
    if k <= 0:
      continue
    chosen = confidence.topk(k, dim=1).indices
    tokens.scatter_(1, chosen, picks.gather(1, chosen))
  return tokens


@torch.no_grad()
def greedy_ar(model: Transformer, labels, *, cfg_scale: float = 0.0):
  """Next-token decoding with argmax picks and a KV cache (LlamaGen `generate` with top_k=1;
  its cfg_scale s is 1 + cfg_scale here). Returns int64 codes [B, L]."""
  c = model.config
  cache = KVCache(model, labels.shape[0] * (2 if cfg_scale else 1))
  token, out = None, []

  def step(step_labels, rows):  # prefill the class prefix first, then feed the last pick
    if token is None:
      return model.decode(None, step_labels, cache)[:, -1]
    return model.decode(token.repeat(rows)[:, None], None, cache)[:, -1]

  for _ in range(c.num_image_tokens):
    token = _guided(step, labels, cfg_scale, c.null_label).argmax(dim=-1)
    out.append(token)
  return torch.stack(out, dim=1)


# ---- the tokenizer ---------------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
  return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
  def __init__(self, in_ch: int, out_ch: int):
    super().__init__()
    self.norm1 = _norm(in_ch)
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    self.norm2 = _norm(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
    if in_ch != out_ch:
      self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1)
    self.shortcut = in_ch != out_ch

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    h = self.conv2(F.silu(self.norm2(h)))
    return (self.nin_shortcut(x) if self.shortcut else x) + h


class AttnBlock(nn.Module):
  """Single-head self-attention over all positions with 1x1-conv q, k, v, proj_out."""

  def __init__(self, channels: int):
    super().__init__()
    self.norm = _norm(channels)
    self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

  def forward(self, x):
    b, c, h, w = x.shape
    hn = self.norm(x)
    q, k, v = (t(hn).flatten(2).transpose(1, 2)[:, None] for t in (self.q, self.k, self.v))
    out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, h, w)
    return x + self.proj_out(out)


class Downsample(nn.Module):
  def __init__(self, channels: int):
    super().__init__()
    self.conv = nn.Conv2d(channels, channels, 3, stride=2)

  def forward(self, x):
    return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
  def __init__(self, channels: int):
    super().__init__()
    self.conv = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConvBlock(nn.Module):
  """One resolution level: `res` blocks, `attn` after each at the lowest resolution, then
  `downsample` or `upsample` unless it is the last level."""

  def __init__(self, in_ch: int, out_ch: int, n_res: int, attention: bool, resample: str | None):
    super().__init__()
    self.res = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch)
                             for j in range(n_res))
    self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_res if attention else 0))
    if resample == "down":
      self.downsample = Downsample(out_ch)
    elif resample == "up":
      self.upsample = Upsample(out_ch)
    self.resample = resample

  def forward(self, h):
    for i, block in enumerate(self.res):
      h = block(h)
      if len(self.attn):
        h = self.attn[i](h)
    if self.resample == "down":
      return self.downsample(h)
    return self.upsample(h) if self.resample == "up" else h


def _mid(channels: int) -> nn.ModuleList:
  return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels),
                        ResnetBlock(channels, channels)])


class Encoder(nn.Module):
  def __init__(self, c: TokenizerConfig):
    super().__init__()
    n = len(c.ch_mult)
    self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
    blocks, block_in = [], c.ch
    for level, mult in enumerate(c.ch_mult):
      blocks.append(ConvBlock(block_in, c.ch * mult, c.enc_res_blocks, level == n - 1,
                              None if level == n - 1 else "down"))
      block_in = c.ch * mult
    self.conv_blocks = nn.ModuleList(blocks)
    self.mid = _mid(block_in)
    self.norm_out = _norm(block_in)
    self.conv_out = nn.Conv2d(block_in, c.z_channels, 3, padding=1)

  def forward(self, x):
    h = self.conv_in(x)
    for block in self.conv_blocks:
      h = block(h)
    for block in self.mid:
      h = block(h)
    return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
  def __init__(self, c: TokenizerConfig):
    super().__init__()
    n = len(c.ch_mult)
    block_in = c.ch * c.ch_mult[-1]
    self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, padding=1)
    self.mid = _mid(block_in)
    blocks = []
    for k, level in enumerate(reversed(range(n))):
      out = c.ch * c.ch_mult[level]
      blocks.append(ConvBlock(block_in, out, c.dec_res_blocks, k == 0,
                              "up" if k != n - 1 else None))
      block_in = out
    self.conv_blocks = nn.ModuleList(blocks)
    self.norm_out = _norm(block_in)
    self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

  def forward(self, z):
    h = self.conv_in(z)
    for block in self.mid:
      h = block(h)
    for block in self.conv_blocks:
      h = block(h)
    return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
  """Nearest neighbour in an (L2-normalised) codebook, or lookup-free signs (`kind='lfq'`:
  index = sum_k [z_k > 0] 2^k). `codebook_used` is LlamaGen's usage buffer, kept for strict
  loading; decoding does not read it."""

  def __init__(self, c: TokenizerConfig):
    super().__init__()
    self.kind, self.l2_norm, self.dim = c.kind, c.l2_norm, c.codebook_dim
    self.register_buffer("codebook_used", torch.zeros(65536))
    if c.kind == "vq":
      self.embedding = nn.Embedding(c.codebook_size, c.codebook_dim)

  def codebook(self):
    e = self.embedding.weight.float()
    return F.normalize(e, dim=-1) if self.l2_norm else e

  def indices(self, z):
    """Codes [B, h, w] of channel-first latents [B, D, h, w]."""
    z = z.float().permute(0, 2, 3, 1)
    if self.kind == "lfq":
      return ((z > 0).long() << torch.arange(self.dim, device=z.device)).sum(-1)
    z = F.normalize(z, dim=-1) if self.l2_norm else z
    e = self.codebook()
    scores = e.pow(2).sum(-1) - 2 * z @ e.T
    return scores.argmin(dim=-1)

  def lookup(self, indices):
    """Channel-first latents [B, D, h, w] of codes [B, h, w]."""
    if self.kind == "lfq":
      bits = (indices[..., None] >> torch.arange(self.dim, device=indices.device)) & 1
      return (bits.float() * 2 - 1).permute(0, 3, 1, 2)
    return self.codebook()[indices].permute(0, 3, 1, 2)


class VQModel(nn.Module):
  """Encoder -> quant_conv -> quantize -> post_quant_conv -> decoder; NCHW images in [-1, 1]."""

  def __init__(self, config: TokenizerConfig | dict):
    super().__init__()
    c = config if isinstance(config, TokenizerConfig) else TokenizerConfig.from_dict(config)
    self.config = c
    self.encoder = Encoder(c)
    self.decoder = Decoder(c)
    self.quantize = Quantizer(c)
    self.quant_conv = nn.Conv2d(c.z_channels, c.codebook_dim, 1)
    self.post_quant_conv = nn.Conv2d(c.codebook_dim, c.z_channels, 1)

  @torch.no_grad()
  def encode(self, images):
    """int64 codes [B, h, w] of images [B, 3, H, W]."""
    return self.quantize.indices(self.quant_conv(self.encoder(images)))

  @torch.no_grad()
  def decode_code(self, indices):
    """Images [B, 3, H, W] (not clamped) of codes [B, h, w]."""
    latents = self.quantize.lookup(indices).to(self.post_quant_conv.weight.dtype)
    return self.decoder(self.post_quant_conv(latents)).float()


# ---- files -------------------------------------------------------------------------------
def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
  """(state dict, metadata) of a `.safetensors` file or a `.pt`/`.pth` checkpoint read with
  weights_only=True; `{"model": sd}`, `{"model_state_dict": sd}`, `{"state_dict": sd}` or a
  bare state dict."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  if path.suffix == ".safetensors":
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
      return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
  if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
    return obj, meta
  for entry in STATE_DICT_ENTRIES:
    if isinstance(obj.get(entry), dict):
      return obj[entry], meta
  raise ValueError(f"{path}: no state dict found; top-level entries: {sorted(obj)[:20]}")


def _config(meta: dict, section: str, config, path) -> dict:
  if config is not None:
    return config
  if META_CONFIG not in meta:
    raise ValueError(f"{path}: carries no config (not written by maskgil_jax.export); pass "
                     f"config= with the {section} fields")
  return json.loads(meta[META_CONFIG])[section]


def load_transformer(path, config: dict | TransformerConfig | None = None) -> Transformer:
  """A `Transformer` in eval mode with the weights of `path`, loaded with strict=True.

  `config` (the `config.model` fields) defaults to the config an export carries; reference
  checkpoints need it given.
  """
  state_dict, meta = read_weights(path)
  model = Transformer(_config(meta, "model", config, path))
  model.load_state_dict(state_dict, strict=True)
  return model.eval()


def load_tokenizer(path, config: dict | TokenizerConfig | None = None) -> VQModel:
  """A `VQModel` in eval mode with the weights of `path`, loaded with strict=True."""
  state_dict, meta = read_weights(path)
  model = VQModel(_config(meta, "tokenizer", config, path))
  model.load_state_dict(state_dict, strict=True)
  return model.eval()
