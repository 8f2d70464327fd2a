"""`ModelSpec`: the transformer's config as a typed, frozen value (as `Layout` and
`TokenizerSpec` are), built once from `config.model`, so the model code reads named attributes
of one immutable object and never a ConfigDict (or a default for a field a config lacks:
`configlib.finalize` fills those from the presets)."""
from __future__ import annotations

import dataclasses

from maskgil_jax.configlib.model import LAYOUTS, MODEL_SIZES, model_config


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Every field of `configlib.model.model_config`, read-only (docs there)."""
  size: str
  layout: str
  n_layer: int
  n_head: int
  n_kv_head: int
  dim: int
  multiple_of: int
  ffn_dim_multiplier: float | None
  norm_eps: float
  rope_base: float
  codebook_size: int
  num_classes: int
  cls_token_num: int
  condition: str  # 'class' or 'caption'
  caption_dim: int
  grid_size: int
  rope: str
  qk_norm: bool
  norm_placement: str
  token_dropout: float
  resid_dropout: float
  ffn_dropout: float
  attn_dropout: float
  init_std: float
  dtype: str
  param_dtype: str
  scan_layers: bool
  remat_policy: str
  attention_kernel: str
  token_factorization: tuple  # () or (b0, b1): LFQ codes as two sub-tokens
  factorized_n_layer: int

  @classmethod
  def from_config(cls, m) -> "ModelSpec":
    """The spec of config.model `m` (a ConfigDict or a spec); a field `m` lacks (a config
    written before the field existed and not finalized) takes the value of the presets of
    its size and layout (`configlib.model.model_config`)."""
    if isinstance(m, cls):
      return m
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in m]
    presets = {}
    if missing:
      presets = model_config(m.size if m.get("size") in MODEL_SIZES else "B",
                             m.layout if m.get("layout") in LAYOUTS else "maskgil")
    values = {f.name: m[f.name] if f.name in m else presets[f.name]
              for f in dataclasses.fields(cls)}
    values["token_factorization"] = tuple(values["token_factorization"] or ())
    return cls(**values)

  def replace(self, **changes) -> "ModelSpec":
    return dataclasses.replace(self, **changes)
