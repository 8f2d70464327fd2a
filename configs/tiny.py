"""Tiny config for tests: a 2-layer, 64-wide MaskGIL on 4x4 grids of 512 codes.

  python -m maskgil_jax.params --config configs/tiny.py
"""
from maskgil_jax import configlib


def get_config(layout: str = "maskgil"):
  """`layout`: maskgil | llamagen | maskgil_reference, or llamagen_t2i / maskgil_t2i for a caption
  model on the tiny T5 of the test fixtures (32-wide features, 120 slots)."""
  caption = layout.endswith("_t2i")
  layout = layout.removesuffix("_t2i")
  c = configlib.base_config("tiny", layout, tokenizer="tiny")
  if caption:
    c.model.condition = "caption"
    c.model.caption_dim = 32
    c.model.cls_token_num = c.text.max_length = 120
  c.model.codebook_size = 512
  c.tokenizer.codebook_size = 512
  c.model.num_classes = 10
  c.data.image_size = 8  # 8 px / 2 (tiny tokenizer downsampling) = 4x4 grid
  c.model.token_dropout = c.model.resid_dropout = c.model.ffn_dropout = 0.0
  c.batch_size = 4
  c.total_steps = 6
  c.objective.name = "ar" if layout == "llamagen" else "mar"
  return c
