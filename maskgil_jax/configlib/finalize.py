"""Fills, checks and derives every config field, before anything is built.

A field a config lacks (one stored before the field existed) is filled from the presets of
the same size, layout and tokenizer (`fill_defaults`), so code past `finalize` reads every
field directly, with no default of its own. A bad value fails here with the dotted name of the
field, not later inside a jitted function.
"""
from __future__ import annotations

import copy
import os

import ml_collections

from maskgil_jax.configlib import attention
from maskgil_jax.configlib.model import LAYOUTS
from maskgil_jax.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("auto", "none", "nothing_saveable", "dots_saveable",
                  "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


class ConfigError(UserError):
  """A config value that cannot work; the message names the field."""


def _require(ok: bool, field: str, msg: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}: {msg}")


def check_model(m, prefix: str = "model") -> None:
  _require(m.layout in LAYOUTS, f"{prefix}.layout", f"{m.layout!r} unknown; one of {sorted(LAYOUTS)}")
  for f in ("n_layer", "n_head", "n_kv_head", "dim", "codebook_size", "num_classes",
            "grid_size", "cls_token_num", "multiple_of"):
    _require(isinstance(m[f], int) and m[f] > 0, f"{prefix}.{f}", f"must be a positive int, got {m[f]!r}")
  _require(m.dim % m.n_head == 0, f"{prefix}.dim",
           f"{m.dim} is not divisible by {prefix}.n_head={m.n_head}")
  hd = m.dim // m.n_head
  _require(m.n_head % m.n_kv_head == 0, f"{prefix}.n_kv_head",
           f"{m.n_kv_head} does not divide n_head={m.n_head}")
  _require(m.rope in ("1d", "2d"), f"{prefix}.rope", f"{m.rope!r}; one of '1d', '2d'")
  _require(hd % (4 if m.rope == "2d" else 2) == 0, f"{prefix}.dim",
           f"head_dim {hd} must be divisible by {4 if m.rope == '2d' else 2} for {m.rope} RoPE")
  _require(m.norm_placement in ("pre", "post"), f"{prefix}.norm_placement",
           f"{m.norm_placement!r}; one of 'pre', 'post'")
  _require(m.dtype in DTYPES, f"{prefix}.dtype", f"{m.dtype!r}; one of {DTYPES}")
  _require(m.param_dtype in DTYPES, f"{prefix}.param_dtype", f"{m.param_dtype!r}; one of {DTYPES}")
  _require(m.remat_policy in REMAT_POLICIES, f"{prefix}.remat_policy",
           f"{m.remat_policy!r}; one of {REMAT_POLICIES}")
  for f in ("token_dropout", "resid_dropout", "ffn_dropout", "attn_dropout"):
    _require(0.0 <= m[f] < 1.0, f"{prefix}.{f}", f"must be in [0, 1), got {m[f]}")
  kernel = m.get("attention_kernel", "auto")  # absent from configs stored before the field
  _require(kernel in attention.KERNELS, f"{prefix}.attention_kernel",
           f"{kernel!r}; one of {attention.KERNELS}")
  why = attention.static_refusal(kernel, m.dtype, hd, m.attn_dropout > 0)
  _require(why is None, f"{prefix}.attention_kernel", f"{kernel!r}: {why}; use 'auto' or 'xla'")
  condition = m.get("condition", "class")
  _require(condition in ("class", "caption"), f"{prefix}.condition",
           f"{condition!r}; one of 'class', 'caption'")
  if condition == "caption":
    _require(isinstance(m.caption_dim, int) and m.caption_dim > 0, f"{prefix}.caption_dim",
             f"must be a positive int, got {m.caption_dim!r}")
    _require(m.layout != "maskgil_reference", f"{prefix}.condition",
             "a caption prefix needs layout llamagen or maskgil (maskgil_reference puts one "
             "class token last)")
  check_factorization(m, prefix)
  if m.layout == "maskgil_reference":
    _require(m.rope == "1d", f"{prefix}.rope", "the maskgil_reference layout uses 1d RoPE")
    _require(m.cls_token_num == 1, f"{prefix}.cls_token_num", "maskgil_reference has one class token")


def check_factorization(m, prefix: str = "model") -> None:
  """`token_factorization`: () or two positive bit counts covering the codebook exactly."""
  bits = m.get("token_factorization", ())
  bits = () if bits is None else bits
  field = f"{prefix}.token_factorization"
  _require(isinstance(bits, (tuple, list)), field, f"() or (b0, b1), got {bits!r}")
  if not bits:
    return
  _require(len(bits) == 2 and all(isinstance(b, int) and b > 0 for b in bits), field,
           f"two positive bit counts (b0, b1), e.g. (6, 12), got {tuple(bits)!r}")
  _require(2 ** sum(bits) == m.codebook_size, field,
           f"{tuple(bits)} makes 2^{sum(bits)} codes, but {prefix}.codebook_size is "
           f"{m.codebook_size} (factorization splits an LFQ code of b0 + b1 bits)")
  _require(m.layout != "maskgil_reference", field,
           "the maskgil_reference layout keeps codes and classes in one flat table")
  n = m.get("factorized_n_layer", 2)
  _require(isinstance(n, int) and n > 0, f"{prefix}.factorized_n_layer",
           f"must be a positive int, got {n!r}")


# Model fields that change what a generator computes though some or all of its parameter names
# and shapes stay the same (a post-norm checkpoint fits a pre-norm model key for key; a
# QK-norm one fits a model without QK-norm once the extra norms are ignored).
BLOCK_FIELDS = ("layout", "rope", "qk_norm", "norm_placement")


def check_same_block(stored_model, model, source: str) -> None:
  """ConfigError unless `model` (config.model) computes the block `stored_model` (the model
  section stored with a checkpoint, `source`) was trained as."""
  for f in BLOCK_FIELDS:
    ours = getattr(model, f) if hasattr(model, f) else model.get(f)  # a ModelSpec or a config
    if f in stored_model and ours is not None and stored_model[f] != ours:
      raise ConfigError(f"config.model.{f}: {ours!r}, but {source} holds a model trained "
                        f"with {stored_model[f]!r} (omit --config to use the checkpoint's own)")


def check_buckets(buckets, down: int) -> None:
  """Aspect buckets: (height, width) pixel pairs, each side a positive multiple of `down`."""
  try:
    pairs = [tuple(b) for b in buckets]
  except TypeError:
    pairs = [None]
  for i, b in enumerate(pairs):
    ok = b is not None and len(b) == 2 and all(isinstance(x, int) and x > 0 for x in b)
    _require(ok, f"data.buckets[{i}]", f"expected a (height, width) pair of positive ints, got "
             f"{buckets[i] if b is not None else buckets!r}")
    _require(b[0] % down == 0 and b[1] % down == 0, f"data.buckets[{i}]",
             f"{b[0]}x{b[1]} is not a multiple of the tokenizer's downsampling {down}")
  _require(len(set(pairs)) == len(pairs), "data.buckets", f"a bucket is listed twice: {pairs}")


# Fields holding local paths (comma-separated lists allowed): made absolute by `finalize`, so a
# config stored with a checkpoint means the same files from any working directory.
PATH_FIELDS = ("tokenizer.ckpt", "tokenizer.loss.lpips_weights", "data.path",
               "data.tfds_data_dir", "data.text_features", "text.encoder", "ckpt.init_from")


def absolute_paths(c: ml_collections.ConfigDict) -> None:
  """Every local path of `PATH_FIELDS` made absolute, in place (URLs such as gs:// kept)."""
  for field in PATH_FIELDS:
    *parents, leaf = field.split(".")
    node = c
    for p in parents:
      node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or not isinstance(node.get(leaf), str):
      continue
    parts = [x.strip() for x in node[leaf].split(",")] if node[leaf] else []
    node[leaf] = ",".join(x if "://" in x else os.path.abspath(os.path.expanduser(x))
                          for x in parts)


def check_joint(c) -> None:
  """The joint objective needs a layout that does both modes and a batch split it can make."""
  if "model" in c:
    _require(c.model.layout == "maskgil", "objective.name",
             f"'joint' trains MAR and AR in one model, which needs layout maskgil (got "
             f"{c.model.layout!r})")
  f = c.objective.get("ar_fraction", 0.5)
  _require(isinstance(f, (int, float)) and 0.0 < f < 1.0, "objective.ar_fraction",
           f"must be in (0, 1), got {f!r}")
  if "batch_size" in c and "optim" in c and isinstance(c.batch_size, int):
    micro = c.batch_size // max(int(c.optim.get("grad_accum", 1)), 1)
    n_ar = round(f * micro)
    _require(1 <= n_ar <= micro - 1, "objective.ar_fraction",
             f"{f} of a micro-batch of {micro} gives {n_ar} AR rows; each mode needs at "
             "least one")


def defaults_of(c) -> ml_collections.ConfigDict:
  """The base tree of the presets `c` names (model size and layout, tokenizer preset)."""
  from maskgil_jax.configlib.base import base_config
  from maskgil_jax.configlib.model import MODEL_SIZES
  from maskgil_jax.configlib.tokenizer import TOKENIZER_PRESETS
  model, tok = c.get("model", {}), c.get("tokenizer", {})
  size = model.get("size") if model.get("size") in MODEL_SIZES else "B"
  layout = model.get("layout") if model.get("layout") in LAYOUTS else "maskgil"
  preset = tok.get("preset") if tok.get("preset") in TOKENIZER_PRESETS else "vq16"
  return base_config(size, layout, preset)


def _fill(node: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict,
          top: bool) -> None:
  for key in defaults.keys():
    value = defaults[key]
    if key not in node:
      if not (top and isinstance(value, ml_collections.ConfigDict)):  # sections stay absent
        node[key] = copy.deepcopy(value)
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(node[key],
                                                                     ml_collections.ConfigDict):
      _fill(node[key], value, False)


def fill_defaults(c: ml_collections.ConfigDict) -> None:
  """Every field missing from the sections `c` has (and every top-level value) set, in place,
  to the presets' value; a section `c` lacks stays absent."""
  _fill(c, defaults_of(c), True)


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A checked copy of `config`: missing fields filled from the presets, derived values
  computed, local paths made absolute."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    fill_defaults(c)
  absolute_paths(c)
  if "tokenizer" in c and "data" in c:
    t = c.tokenizer
    down = 2 ** (len(t.ch_mult) - 1)
    _require(c.data.image_size % down == 0, "data.image_size",
             f"{c.data.image_size} is not a multiple of the tokenizer's downsampling {down}")
    if "model" in c:
      c.model.grid_size = c.data.image_size // down
    check_buckets(c.data.get("buckets", ()), down)
  if "model" in c:
    check_model(c.model)
  if "tokenizer" in c and "model" in c and c.get("task", "generator") == "generator":
    _require(c.model.codebook_size == c.tokenizer.codebook_size, "model.codebook_size",
             f"{c.model.codebook_size} differs from tokenizer.codebook_size "
             f"{c.tokenizer.codebook_size}")
  if "model" in c and "text" in c and c.model.get("condition", "class") == "caption":
    _require(c.text.max_length == c.model.cls_token_num, "text.max_length",
             f"{c.text.max_length} differs from model.cls_token_num {c.model.cls_token_num} "
             "(one caption slot per T5 token)")
    _require(c.text.dtype in DTYPES, "text.dtype", f"{c.text.dtype!r}; one of {DTYPES}")
  for f in ("batch_size", "total_steps"):
    if f in c:
      _require(isinstance(c[f], int) and c[f] > 0, f, f"must be a positive int, got {c[f]!r}")
  if "task" in c:
    _require(c.task in ("generator", "tokenizer"), "task", f"{c.task!r}; one of generator, tokenizer")
  if "objective" in c:
    _require(c.objective.name in ("mar", "ar", "joint"), "objective.name",
             f"{c.objective.name!r}; one of mar, ar, joint")
    if c.objective.name == "joint":
      check_joint(c)
    if c.objective.name == "mar" and "model" in c:
      _require(c.model.layout != "llamagen", "objective.name",
               "the llamagen layout has no MASK token; MAR needs layout maskgil or maskgil_reference")
    if c.objective.name == "ar" and "model" in c:
      _require(c.model.layout != "maskgil_reference", "objective.name",
               "the maskgil_reference layout puts the class token last; AR needs llamagen or maskgil")
  return c
