"""Name table between our Transformer and the PyTorch GPTs (LlamaGen c2i, public MaskGIL).

Our parameter paths already spell the reference keys; the table adds the layer index `{i}`
(our layers are stacked) and the transpose of every Linear. The `native` extras (QK-norm) have
no reference counterpart and keep our own names.
"""
from __future__ import annotations

from maskgil_jax.interop.names import Rule

# Keys the reference code may store that are not parameters (rebuilt from the config).
NON_PARAMETER_KEYS = ("freqs_cis",)

_LAYER = [
    ("attention.wqkv.weight", "linear"),
    ("attention.wo.weight", "linear"),
    ("feed_forward.w1.weight", "linear"),
    ("feed_forward.w2.weight", "linear"),
    ("feed_forward.w3.weight", "linear"),
    ("attention_norm.weight", "copy"),
    ("ffn_norm.weight", "copy"),
]
_QK_NORM = [("attention.q_norm.weight", "copy"), ("attention.k_norm.weight", "copy")]


def gpt_rules(m) -> list[Rule]:
  """The table for a model config `m` (config.model)."""
  if m.layout == "maskgil_reference":
    rules = [Rule("tok_emb.weight", "tok_emb.weight")]
  else:
    rules = [Rule("cls_embedding.embedding_table.weight", "cls_embedding.embedding_table.weight"),
             Rule("tok_embeddings.weight", "tok_embeddings.weight")]
  layer = _LAYER + (_QK_NORM if m.qk_norm else [])
  rules += [Rule(f"layers.{name}", f"layers.{{i}}.{name}", t) for name, t in layer]
  rules += [Rule("norm.weight", "norm.weight"), Rule("output.weight", "output.weight", "linear")]
  return rules
