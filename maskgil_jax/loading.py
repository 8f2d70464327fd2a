"""Where a model is loaded: every command, the Python API, the demos and the benchmarks read
generators, tokenizers, text encoders and the configs that describe them through this module.

- `resolve_config`: the finalized config from an experiment file or name, a ConfigDict, or the
  one stored with our checkpoint.
- `abstract_generator` / `abstract_tokenizer`: a model as shapes (`nnx.eval_shape`), the one
  place the abstract model is built; `load_generator` / `load_tokenizer` fill it from our
  orbax checkpoints (`checkpoints.py`) or a PyTorch file (`interop/`), every key and shape
  checked.
- `import_gpt`: a PyTorch GPT state dict onto the transformer, with one set of keys that hold
  no parameter (the RoPE table, the KV-cache buffers a LlamaGen model saved after sampling
  carries), so what `convert` accepts the sample command accepts too.
- `load_text_encoder`: the frozen FLAN-T5 of a caption model, as `config.text` describes it.
- `path_id` / `checkpoint_id`: a path and a checkpoint as settings record them (absolute, the
  step pinned), so a rerun can tell the same weights from others.

It imports the library floors (`checkpoints`, `configlib`, `models/`, `interop/`, `text/`,
`parallel.rules`) and nothing of the commands, so a command, the demo or a test loads a model
the same way.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
from etils import epath
from flax import nnx

from maskgil_jax import checkpoints, configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.configlib.finalize import check_same_block
from maskgil_jax.configlib.load import apply_override
from maskgil_jax.interop import gpt_names, names, tokenizer_names, torch_io
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.models.vq import TokenizerSpec, VQModel
from maskgil_jax.parallel.rules import param_shardings

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_torch_file(path) -> bool:
  return pathlib.Path(path).suffix in TORCH_SUFFIXES


# ---- configs --------------------------------------------------------------------------------
def resolve_config(spec, ckpt, overrides: Sequence[str] = (), flag: str = "--config"):
  """The finalized config from an experiment file or name (`spec`, or a ConfigDict), or the one
  stored with our checkpoint `ckpt`; `overrides` are 'a.b=value' items."""
  if isinstance(spec, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(spec.to_dict())  # the caller's copy stays as it was
    for item in overrides:
      apply_override(config, *item.split("=", 1))
    return configlib.finalize(config)
  if spec:
    return configlib.finalize(configlib.load_config(str(spec), list(overrides)))
  if is_torch_file(ckpt):
    raise ConfigError(f"{flag} is required with a PyTorch checkpoint ({ckpt}): it says which "
                      "layout and size the file holds")
  config = checkpoints.restore_config(ckpt)
  for item in overrides:
    apply_override(config, *item.split("=", 1))
  return configlib.finalize(config)


# ---- identities -----------------------------------------------------------------------------
def path_id(path) -> str | None:
  """A path as the settings record it: absolute, so a rerun from another folder matches."""
  if not path:
    return None
  return str(path) if "://" in str(path) else os.path.abspath(path)


def checkpoint_id(ckpt) -> tuple[str | None, int | None]:
  """(path, step) of the weights `ckpt` names: a PyTorch file (step None), or the checkpoint
  root and step of ours, the newest step pinned so that a run resumed while training goes on
  uses the same weights (or is refused)."""
  if not ckpt or is_torch_file(ckpt):
    return path_id(ckpt), None
  root, step = checkpoints.locate(ckpt)
  return path_id(root), step if step is not None else checkpoints.latest_step(ckpt)


# ---- generators -----------------------------------------------------------------------------
def abstract_generator(model_cfg, mesh=None, rules=None):
  """The transformer of `model_cfg` as shapes, placed by the logical-axis rules on `mesh`."""
  abstract = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0)))
  if mesh is None:
    return abstract
  shardings = param_shardings(abstract, mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def import_gpt(abstract, state_dict, model_cfg, source: str):
  """`abstract` (a transformer of `model_cfg`) holding a PyTorch GPT state dict: every
  parameter key and shape checked; the RoPE table and KV-cache buffers are no parameters."""
  return names.import_state_dict(abstract, state_dict, gpt_names.gpt_rules(model_cfg),
                                 source=source, ignore=gpt_names.non_parameter_keys(state_dict))


def load_generator(ckpt, model_cfg, *, ema: bool = False, mesh=None, rules=None,
                   step: int | None = None):
  """The transformer of `model_cfg` with weights from our checkpoint (its newest step unless
  `step`) or a PyTorch GPT file (every key and shape checked), placed on `mesh` when given."""
  abstract = abstract_generator(model_cfg, mesh, rules)
  if not is_torch_file(ckpt):
    try:  # a step without a readable config is restore_params' to judge (it may fall back)
      stored = checkpoints.restore_config(ckpt, step).get("model", {})
    except checkpoints.CheckpointError:
      stored = {}
    check_same_block(stored, model_cfg, str(ckpt))  # a post-norm checkpoint fits pre-norm keys
    return checkpoints.restore_params(ckpt, abstract, step=step, ema=ema)
  model = import_gpt(abstract, torch_io.load_state_dict(ckpt), model_cfg, str(ckpt))
  if mesh is None:
    return model
  return jax.device_put(model, jax.tree.map(lambda a: a.sharding, abstract))


# ---- tokenizers -----------------------------------------------------------------------------
def abstract_tokenizer(tokenizer_cfg):
  """The tokenizer `tokenizer_cfg` (config.tokenizer or a TokenizerSpec) describes, as shapes."""
  spec = (tokenizer_cfg if isinstance(tokenizer_cfg, TokenizerSpec)
          else TokenizerSpec.from_config(tokenizer_cfg))
  return nnx.eval_shape(lambda: VQModel(spec, rngs=nnx.Rngs(0)))


def load_tokenizer(path: str | os.PathLike, tokenizer_config, *, ema: bool | None = None):
  """The tokenizer `tokenizer_config` describes, with weights from one of our checkpoints (a
  directory) or a reference `.pt` / `.safetensors` file of its family: LlamaGen's
  (`{"model": sd}` or a bare state dict), or a taming / Chameleon / Open-MAGVIT2 Lightning
  checkpoint (`{"state_dict": sd}`; loss keys dropped; the EMA copy when the file has one,
  as Open-MAGVIT2's scripts use it, unless `ema=False`; `ema=True` requires it).

  Every key and shape is checked; a mismatch raises CheckpointError naming each missing,
  unexpected and mis-shaped entry."""
  path = epath.Path(path)
  abstract = abstract_tokenizer(tokenizer_config)
  if path.is_dir():
    return checkpoints.restore_tokenizer(path, abstract)
  if not path.exists():
    raise CheckpointError(f"{path}: no such file or directory")
  return tokenizer_names.import_tokenizer_state_dict(abstract, torch_io.load_state_dict(path),
                                                     source=str(path), ema=ema)


# ---- text encoders --------------------------------------------------------------------------
def load_text_encoder(folder, text_cfg, caption_dim: int | None = None):
  """The frozen T5 (tokenizer + encoder) of a Hugging Face folder, read as `text_cfg`
  (config.text: max_length, dtype) says; `caption_dim` (config.model.caption_dim) is checked
  against the encoder's width before any weight is read."""
  from maskgil_jax.text import encoder  # only caption models need T5 and SentencePiece
  return encoder.load_text_encoder(folder, max_length=text_cfg.max_length, dtype=text_cfg.dtype,
                                   caption_dim=caption_dim)
