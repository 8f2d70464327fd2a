"""Asymmetric token factorization of LFQ codes (Open-MAGVIT2's AR model), for MAR and AR.

An LFQ code of B bits (Open-MAGVIT2: 2^18 codes) makes a flat embedding table and output head
of 2^B rows each, 403M parameters at B's width 768, which would dwarf the transformer. With
`config.model.token_factorization = (b0, b1)` (b0 + b1 = B) a code is two sub-tokens instead:
`s0 = code mod 2^b0` (the code's first b0 LFQ channels: channel i is bit i of the index,
models/quantizers.py) and `s1 = code >> b0` (the other b1). As Open-MAGVIT2's GPT:
- input: `pre_emb(s0) + post_emb(s1)` (tables of 2^b0 and 2^b1 rows; one more row each for
  MASK in the `maskgil` layout, where a MASK token is MASK in both);
- output: the transformer's last hidden state h of a position goes through a small causal
  transformer over the two slots [h, pre_emb(s0)] (`factorized_blocks`, `factorized_n_layer`
  blocks of the main block's kind), then the final `norm`; slot 0 predicts s0 through
  `head.0` (2^b0 classes) and slot 1 predicts s1 given s0 through `head.1` (2^b1 classes),
  so p(code | h) = p(s0 | h) p(s1 | h, s0) exactly;
- the loss is the sum of the two sub-tokens' cross-entropies (Open-MAGVIT2's
  `loss_pre + loss_post`); decoding draws s0, then s1 given the drawn s0.
The same head serves MAR: the bidirectional h of a masked position is factorized alike (the
natural extension: MaskGIL's per-position categorical becomes this two-step one, and its
confidence log p(code) = log p(s0) + log p(s1 | s0)).

Departures from Open-MAGVIT2: the two intra slots carry no rotary position (Open-MAGVIT2 reuses
the first two rows of its image RoPE table, the class row being zero); the intra blocks run
without dropout. Parameter names mirror Open-MAGVIT2's (`pre_emb`, `post_emb`,
`factorized_blocks`, `head.0`, `head.1`); its GPT is otherwise LlamaGen's, so the rest of the
names are ours and LlamaGen's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maskgil_jax.models import masks


def split(codes, bits: tuple[int, int]):
  """(s0, s1) of flat codes: the low b0 bits and the rest."""
  codes = jnp.asarray(codes, jnp.int32)
  return codes & ((1 << bits[0]) - 1), codes >> bits[0]


def join(s0, s1, bits: tuple[int, int]):
  """Flat codes of sub-tokens (the inverse of `split`)."""
  return (jnp.asarray(s0, jnp.int32) + (jnp.asarray(s1, jnp.int32) << bits[0])).astype(jnp.int32)


def embed(model, tokens, dtype):
  """[B, T, D] = pre_emb(s0) + post_emb(s1); MASK tokens take each table's MASK row."""
  bits, mask_id = model.factorization, model.layout.mask_id
  s0, s1 = split(tokens, bits)
  if mask_id is not None:
    masked = tokens == mask_id
    s0 = jnp.where(masked, 1 << bits[0], s0)
    s1 = jnp.where(masked, 1 << bits[1], s1)
  return model.pre_emb(s0, dtype) + model.post_emb(s1, dtype)


def _intra(model, ctx):
  """The factorized blocks over [N, t, D] causal slot sequences, without rotary positions."""
  n, t, _ = ctx.shape
  half = model.head_dim // 2
  cos, sin = jnp.ones((t, half), jnp.float32), jnp.zeros((t, half), jnp.float32)
  mask = masks.AttentionMask.create("causal", t)
  for i in range(model.factorized_n_layer):
    layer = jax.tree.map(lambda a: a[i], model.factorized_blocks)
    ctx = layer(ctx, cos, sin, mask, None)[0]
  return ctx


def sub_logits(model, h, s0=None):
  """fp32 logits of s0 [..., 2^b0] from the transformer's hidden states h [..., D]; with `s0`
  (the true or the drawn first sub-token, [...]) also those of s1 given it [..., 2^b1]."""
  lead, d = h.shape[:-1], h.shape[-1]
  ctx = h.reshape(-1, 1, d)
  if s0 is not None:
    e0 = model.pre_emb(jnp.asarray(s0, jnp.int32).reshape(-1, 1), h.dtype)
    ctx = jnp.concatenate([ctx, e0], axis=1)
  out = model.norm(_intra(model, ctx))
  heads = model.head
  l0 = heads[0](out[:, 0]).astype(jnp.float32).reshape(lead + (-1,))
  if s0 is None:
    return l0
  return l0, heads[1](out[:, 1]).astype(jnp.float32).reshape(lead + (-1,))


def num_classes(bits) -> tuple[int, int]:
  return tuple(int(np.left_shift(1, b)) for b in bits)
