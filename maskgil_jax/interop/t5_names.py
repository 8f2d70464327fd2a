"""Name table between our `T5Encoder` and Hugging Face T5 encoder keys, and loading a folder.

Hugging Face spells each block as `encoder.block.{i}.layer.0` (self-attention and its norm) and
`layer.1` (feed-forward and its norm); our stacked block names the two halves. The relative
position bias exists in block 0 only (shared by every layer). A full T5 checkpoint (encoder and
decoder, e.g. `google/flan-t5-xl`) also holds `decoder.*` and `lm_head.weight`: those keys are
ignored, since only the encoder is used; `encoder.embed_tokens.weight` is the same tensor as
`shared.weight` when a file stores both.
"""
from __future__ import annotations

import json
import os
import pathlib

from flax import nnx

from maskgil_jax.interop import hf_folder, names
from maskgil_jax.interop.names import Rule
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.t5 import T5Encoder, T5Spec

_BLOCK = "encoder.block.{i}.layer"
RULES = [
    Rule("shared.weight", "shared.weight"),
    Rule("relative_attention_bias",
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    *[Rule(f"block.SelfAttention.{p}.weight", f"{_BLOCK}.0.SelfAttention.{p}.weight", "linear")
      for p in ("q", "k", "v", "o")],
    Rule("block.attention_norm.weight", f"{_BLOCK}.0.layer_norm.weight"),
    *[Rule(f"block.DenseReluDense.{p}.weight", f"{_BLOCK}.1.DenseReluDense.{p}.weight", "linear")
      for p in ("wi_0", "wi_1", "wo")],
    Rule("block.ffn_norm.weight", f"{_BLOCK}.1.layer_norm.weight"),
    Rule("final_layer_norm.weight", "encoder.final_layer_norm.weight"),
]
# keys of a full T5 checkpoint that the encoder does not use
_UNUSED_PREFIXES = ("decoder.", "lm_head.")
_ALIASES = ("encoder.embed_tokens.weight",)


def read_spec(folder: str | os.PathLike, dtype: str = "float32") -> T5Spec:
  path = pathlib.Path(folder) / "config.json"
  if not path.is_file():
    raise CheckpointError(f"{folder}: no config.json (the Hugging Face T5 config)")
  try:
    hf = json.loads(path.read_text())
  except ValueError as e:
    raise CheckpointError(f"{path}: not JSON ({e})") from e
  return T5Spec.from_hf_config(hf, dtype, source=str(path))


def load_t5_encoder(folder: str | os.PathLike, dtype: str = "float32") -> T5Encoder:
  """The encoder of a Hugging Face T5 folder, every key and shape checked by `RULES`."""
  spec = read_spec(folder, dtype)
  state_dict, source = hf_folder.read_weights(folder)
  abstract = nnx.eval_shape(lambda: T5Encoder(spec, rngs=nnx.Rngs(0)))
  if "shared.weight" not in state_dict and _ALIASES[0] in state_dict:
    state_dict = {**state_dict, "shared.weight": state_dict[_ALIASES[0]]}
  ignore = [k for k in state_dict if k.startswith(_UNUSED_PREFIXES) or k in _ALIASES]
  return names.import_state_dict(abstract, state_dict, RULES, source=source, ignore=ignore)
