"""Name table between our Transformer and the PyTorch GPTs (LlamaGen c2i and t2i, public MaskGIL).

Our parameter paths already spell the reference keys; the table adds the layer index `{i}`
(our layers are stacked) and the transpose of every Linear. The `native` extras (QK-norm) have
no reference counterpart and keep our own names. Rules are listed in PyTorch registration
order (per layer: attention, feed-forward w1, w3, w2, the two norms), so an export lists its
keys as `torch.save(model.state_dict())` does.
"""
from __future__ import annotations

from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop.names import Rule

# Keys the reference code may store that are not parameters (rebuilt from the config).
NON_PARAMETER_KEYS = ("freqs_cis",)
# LlamaGen registers KV-cache buffers (`layers.{i}.attention.kv_cache.k_cache`) during
# `generate`; a model saved after sampling carries them.
_KV_CACHE_PART = ".attention.kv_cache."

# What the reference PyTorch code can express, per layout: a model with other block options
# has no reference counterpart (QK-norm adds keys; the others change the computation alone).
REFERENCE_ARCHITECTURES = {
    "llamagen": dict(rope="2d", qk_norm=False, norm_placement="pre", cls_token_num=1),
    "maskgil_reference": dict(rope="1d", qk_norm=False, norm_placement="pre", cls_token_num=1),
}

_ATTENTION = [("attention.wqkv.weight", "linear"), ("attention.wo.weight", "linear")]
_QK_NORM = [("attention.q_norm.weight", "copy"), ("attention.k_norm.weight", "copy")]
_REST = [
    ("feed_forward.w1.weight", "linear"),
    ("feed_forward.w3.weight", "linear"),
    ("feed_forward.w2.weight", "linear"),
    ("attention_norm.weight", "copy"),
    ("ffn_norm.weight", "copy"),
]


def gpt_rules(m) -> list[Rule]:
  """The table for a model config `m` (config.model)."""
  if m.layout == "maskgil_reference":
    rules = [Rule("tok_emb.weight", "tok_emb.weight")]
  elif m.condition == "caption":  # LlamaGen t2i's CaptionEmbedder
    rules = [Rule(f"cls_embedding.cap_proj.{fc}.weight", f"cls_embedding.cap_proj.{fc}.weight",
                  "linear") for fc in ("fc1", "fc2")]
    rules += [Rule("cls_embedding.uncond_embedding", "cls_embedding.uncond_embedding"),
              Rule("tok_embeddings.weight", "tok_embeddings.weight")]
  else:
    rules = [Rule("cls_embedding.embedding_table.weight", "cls_embedding.embedding_table.weight"),
             Rule("tok_embeddings.weight", "tok_embeddings.weight")]
  layer = _ATTENTION + (_QK_NORM if m.qk_norm else []) + _REST
  rules += [Rule(f"layers.{name}", f"layers.{{i}}.{name}", t) for name, t in layer]
  rules += [Rule("norm.weight", "norm.weight"), Rule("output.weight", "output.weight", "linear")]
  return rules


def non_parameter_keys(state_dict) -> list[str]:
  """Keys of a reference state dict that hold no parameter (the RoPE table, KV caches): pass
  them as `ignore=` when importing."""
  return [k for k in state_dict if k in NON_PARAMETER_KEYS or _KV_CACHE_PART in k]


def check_reference_architecture(m, layout: str) -> None:
  """ConfigError naming the field when config.model `m` is not the reference `layout`
  ('llamagen' or 'maskgil_reference') architecture."""
  if m.layout != layout:
    raise ConfigError(f"config.model.layout: {m.layout!r}, but the reference {layout} code "
                      f"needs layout {layout!r}")
  for field, want in REFERENCE_ARCHITECTURES[layout].items():
    if field == "cls_token_num" and m.condition == "caption":
      continue  # a caption prefix has as many slots as the text encoder's max length
    if m[field] != want:
      raise ConfigError(f"config.model.{field}: {m[field]!r}; the reference {layout} code has "
                        f"{field}={want!r} only (use the native layout for this model)")
