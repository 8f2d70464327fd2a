"""The text encoder folder: FLAN-T5 weights + `spiece.model`, and prompts to caption features.

`load_text_encoder(folder)` reads a Hugging Face T5 folder (`config.json`, weights as
`interop/hf_folder.py` accepts them, `spiece.model`); `encode_prompts` gives the right-padded
last hidden states and masks T5 itself returns; `left_pad` moves them into LlamaGen's layout
(each caption's valid rows at the end of the 120 slots, padded rows zeroed: docs/reference.md
section 8), which is what the transformer's caption prefix takes. `caption_features` does all
three steps for the sample command.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop import t5_names
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.t5 import T5Encoder
from maskgil_jax.text.tokenizer import T5Tokenizer


@dataclasses.dataclass
class TextEncoder:
  tokenizer: T5Tokenizer
  model: T5Encoder
  max_length: int

  @property
  def width(self) -> int:
    return self.model.spec.d_model


def load_text_encoder(folder: str | os.PathLike, *, max_length: int = 120,
                      dtype: str = "float32", caption_dim: int | None = None) -> TextEncoder:
  """The tokenizer and encoder of a T5 folder. `caption_dim` (the transformer's
  config.model.caption_dim) is checked against the encoder's width before weights are read."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise CheckpointError(f"{folder}: no such text-encoder folder (a Hugging Face T5 folder "
                          "with config.json, spiece.model and weights)")
  tokenizer = T5Tokenizer(folder)
  spec = t5_names.read_spec(folder, dtype)
  if caption_dim is not None and spec.d_model != caption_dim:
    raise ConfigError(f"config.model.caption_dim: {caption_dim}, but the text encoder in "
                      f"{folder} gives {spec.d_model}-wide features")
  return TextEncoder(tokenizer, t5_names.load_t5_encoder(folder, dtype), max_length)


@jax.jit
def _encode(model, ids, mask):
  return model(ids, mask)


def encode_prompts(encoder: TextEncoder, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(float32 features [N, L, width], bool mask [N, L]) right padded, as T5 returns them."""
  ids, mask = encoder.tokenizer(prompts, encoder.max_length)
  features = _encode(encoder.model, jnp.asarray(ids), jnp.asarray(mask))
  return np.asarray(features), mask.astype(bool)


def left_pad(features, mask):
  """LlamaGen's caption layout from right-padded T5 outputs: the n valid rows of each caption
  move to the last n slots, in order, the padded rows (now first) are zeroed, and the mask
  follows. Works on numpy and jax arrays."""
  xp = jnp if isinstance(features, jax.Array) else np
  length = mask.shape[-1]
  valid = mask.astype(xp.int32).sum(-1, keepdims=True)
  source = (xp.arange(length)[None, :] + valid) % length
  moved = xp.take_along_axis(features, source[..., None], axis=1)
  new_mask = xp.arange(length)[None, :] >= length - valid
  return moved * new_mask[..., None].astype(moved.dtype), new_mask


def caption_features(encoder: TextEncoder, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Prompts -> (left-padded features [N, L, width], bool mask [N, L]) for the transformer."""
  return left_pad(*encode_prompts(encoder, prompts))
