"""A generator from Python: load once, then generate images in a line.

  from maskgil_jax import pipeline
  pipe = pipeline.load("out/demo/generator")          # or a PyTorch GPT file + config=...
  images = pipe.generate(labels=["Sneaker", 3], decode="mar", steps=8, seed=0)  # uint8 [N,H,W,3]

`load` reads what the sample command reads, through the same functions (`loading.py`): our
checkpoints (a workdir, its `checkpoints/` folder or a step folder; the config stored with it
is used unless one is given) or a PyTorch LlamaGen / MaskGIL GPT file
(`config=` then says which layout and size), the tokenizer (`config.tokenizer.ckpt` unless
given), the text encoder of caption models (`config.text.encoder` unless given) and an optional
separate AR model for hybrid decoding.

`generate` draws sample i with the key fold_in(PRNGKey(seed), i) alone, as the sample command
does, so the same labels and seed give the same images here and in `samples.npz`. Requests are
cut into batches of a few fixed sizes (powers of two up to `batch_size`), so the first call of a
size compiles and later calls of the same size and decoder reuse the compiled programs; the
numeric settings (guidance, temperature, top-k/p) are traced and never recompile, the
structural ones (decoder, steps, guidance on/off) do once each. `stream` yields the images batch
by batch as they finish (the web demo shows them so).

Mistakes (an unknown class name, steps 0, an empty prompt, a decoder the layout cannot run)
raise `configlib.ConfigError`, a `errors.UserError`, whose message names the argument.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence

import jax
import ml_collections
import numpy as np

from maskgil_jax.configlib import ConfigError
from maskgil_jax.configlib.load import apply_override
from maskgil_jax.decode import METHODS, DecodeSettings, generate_tokens, tokens_to_images
from maskgil_jax.decode import sampling
from maskgil_jax.decode.hybrid import check_pair
from maskgil_jax.loading import is_torch_file, load_generator, load_text_encoder, load_tokenizer
from maskgil_jax.loading import resolve_config
from maskgil_jax.models.conditions import Caption
from maskgil_jax.models.transformer import Transformer, at_grid
from maskgil_jax.models.vq import TokenizerSpec
from maskgil_jax.parallel.mesh import batch_shards, global_batch, make_mesh
from maskgil_jax.parallel.pump import ahead, slices
from maskgil_jax.parallel.rules import axis_rules, make_rules

# the config.decode fields a request may set (keywords of `generate`, the sample command's
# flags): every decoder setting but the two schedules of the mask and the guidance
DECODE_FIELDS = tuple(f for f in sampling.FIELDS + sampling.HYBRID_FIELDS
                      if f not in ("schedule", "cfg_schedule"))


# ---- checks ----------------------------------------------------------------------------------
def check_method(method: str, model, ar_model) -> None:
  """ConfigError unless `model` (and `ar_model`, hybrid's AR half) can run decoder `method`."""
  if method not in METHODS:
    raise ConfigError(f"--decode {method!r}: one of {METHODS}")
  lay = model.layout
  if method in ("mar", "hybrid") and lay.mask_id is None:
    raise ConfigError(f"--decode {method}: layout {lay.name!r} has no MASK token "
                      "(a LlamaGen model decodes with --decode ar)")
  if method == "ar" and lay.prefix_len == 0:
    raise ConfigError(f"--decode ar: layout {lay.name!r} puts the class last and "
                      "cannot decode AR (use --decode mar)")
  if method == "hybrid":
    try:
      check_pair(ar_model, model)
    except ValueError as e:
      raise ConfigError(str(e)) from e


# objectives that teach a model to decode AR (a MAR-trained slot never learns the next token)
AR_OBJECTIVES = ("ar", "joint")


def check_ar_half(config, ar_config) -> None:
  """ConfigError unless the hybrid's AR half was trained to decode AR: a MAR-only model's slot
  after the fed tokens never learned to predict the next one, so its AR half writes noise."""
  if ar_config is None and config.objective.name not in AR_OBJECTIVES:
    raise ConfigError(
        f"--decode hybrid: this checkpoint was trained with objective "
        f"{config.objective.name!r}, which never teaches AR; give an AR model with --ar-ckpt "
        f"(or a checkpoint trained with objective 'ar' or 'joint')")
  if ar_config is not None and ar_config.objective.name not in AR_OBJECTIVES:
    raise ConfigError(
        f"--ar-ckpt: its model was trained with objective {ar_config.objective.name!r}, which "
        "never teaches AR; give one trained with 'ar' or 'joint'")


def decode_settings(decode_cfg, **overrides) -> DecodeSettings:
  """`config.decode` with the given fields replaced (None keeps the config's), checked; errors
  name the field (config.decode.steps ...)."""
  d = ml_collections.ConfigDict(decode_cfg.to_dict())
  for field, value in overrides.items():
    if value is not None:
      apply_override(d, field, value)
  return DecodeSettings.from_config(d)


def data_class_names(config) -> tuple[str, ...] | None:
  """Names of the classes a model was trained on, where the data source has them (the demo's
  Fashion-MNIST); None means the classes go by number."""
  if config.data.name == "demo":
    from maskgil_jax.data.demo_set import demo_class_names
    shipped = demo_class_names()
    if len(shipped) == config.model.num_classes:
      return shipped
  return None


@jax.jit
def sample_keys(seed_key, indices):
  """Sample i's key fold_in(seed_key, i), placed like `indices`."""
  return jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(indices)


# ---- the pipeline ----------------------------------------------------------------------------
@dataclasses.dataclass
class Pipeline:
  """A loaded generator (and its tokenizer, text encoder, hybrid's AR model) with the mesh it
  runs on. Build it with `load` (or `from_config` when the config is already resolved)."""
  config: ml_collections.ConfigDict
  model: Transformer
  mesh: jax.sharding.Mesh
  rules: tuple = ()
  ar_model: Transformer | None = None
  tokenizer: object | None = None
  text_encoder: object | None = None
  class_names: tuple[str, ...] | None = None
  batch_size: int = 16  # the largest batch one compiled call draws
  ar_config: ml_collections.ConfigDict | None = None  # hybrid's separate AR model, if any

  @classmethod
  def from_config(cls, config, ckpt, *, tokenizer=None, text_encoder=None, ar_ckpt=None,
                  ar_config=None, ema: bool = False, step: int | None = None,
                  ar_step: int | None = None, mesh=None, rules=None,
                  class_names: Sequence[str] | None = None) -> "Pipeline":
    """Weights for a finalized `config`: `tokenizer` / `text_encoder` are paths (None: none is
    loaded), `ar_ckpt` + `ar_config` hybrid's separate AR model."""
    if ema and (is_torch_file(ckpt) or is_torch_file(ar_ckpt or "")):
      raise ConfigError("--ema reads the EMA parameters of our checkpoints; a PyTorch file "
                        "holds one set of weights")
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    rules = make_rules(config.mesh.rules) if rules is None else rules
    model = load_generator(ckpt, config.model, ema=ema, mesh=mesh, rules=rules, step=step)
    ar_model = None
    if ar_ckpt:
      ar_model = load_generator(ar_ckpt, ar_config.model, ema=ema, mesh=mesh, rules=rules,
                                step=ar_step)
    encoder = None
    if text_encoder:
      encoder = load_text_encoder(text_encoder, config.text, config.model.caption_dim)
    vq = None
    if tokenizer:
      vq = jax.device_put(load_tokenizer(tokenizer, config.tokenizer),
                          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    if class_names is not None and len(class_names) != config.model.num_classes:
      raise ConfigError(f"class_names: {len(class_names)} names for a model of "
                        f"{config.model.num_classes} classes")
    return cls(config, model, mesh, rules, ar_model, vq, encoder,
               tuple(class_names) if class_names is not None else data_class_names(config),
               ar_config=ar_config if ar_ckpt else None)

  # ---- what the model is --------------------------------------------------------------------
  @property
  def condition(self) -> str:
    """'class' (labels) or 'caption' (prompts)."""
    return self.config.model.condition

  @property
  def num_classes(self) -> int:
    return self.config.model.num_classes

  @property
  def image_size(self) -> int:
    spec = TokenizerSpec.from_config(self.config.tokenizer)
    return self.config.model.grid_size * spec.downsample_factor

  @property
  def methods(self) -> tuple[str, ...]:
    """The decoders this model (with hybrid's AR model) can run."""
    ok = []
    for m in METHODS:
      try:
        check_method(m, self.model, self.ar_model or self.model)
        if m == "hybrid":
          check_ar_half(self.config, self.ar_config)
        ok.append(m)
      except ConfigError:
        pass
    return tuple(ok)

  @contextlib.contextmanager
  def placed(self):
    """The mesh and logical-axis rules the models were placed with."""
    with jax.set_mesh(self.mesh), axis_rules(self.rules):
      yield

  # ---- requests -----------------------------------------------------------------------------
  def label_ids(self, labels: Sequence[int | str]) -> np.ndarray:
    """int64 class ids from ids or class names (names as `class_names` spells them, any case;
    digits are ids); ConfigError naming what is not a class."""
    if self.condition == "caption":
      raise ConfigError("this model is text-to-image (config.model.condition='caption'): give "
                        "prompts, not labels")
    lower = {n.lower(): i for i, n in enumerate(self.class_names or ())}
    out = []
    for x in _listed(labels, "labels", "class ids or names"):
      if isinstance(x, (int, np.integer)) or (isinstance(x, str) and x.strip().isdigit()):
        i = int(x)
        if not 0 <= i < self.num_classes:
          raise ConfigError(f"labels: class {i}; classes are 0..{self.num_classes - 1}")
      elif isinstance(x, str) and x.strip().lower() in lower:
        i = lower[x.strip().lower()]
      else:
        known = (f"one of {', '.join(self.class_names)}" if self.class_names
                 else f"this model's classes go by number, 0..{self.num_classes - 1}")
        raise ConfigError(f"labels: unknown class {x!r}; {known}")
      out.append(i)
    if not out:
      raise ConfigError("labels: none given")
    return np.asarray(out, np.int64)

  def captions(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded caption features [N, P, C] and mask [N, P] of `prompts`."""
    if self.condition != "caption":
      raise ConfigError("this model is class-conditional (config.model.condition='class'): "
                        "give labels, not prompts")
    prompts = _listed(prompts, "prompts", "strings")
    text = next((p for p in prompts if not isinstance(p, str)), "")
    if not isinstance(text, str):
      raise ConfigError(f"prompts: each prompt is a string, got {text!r}")
    if not prompts or any(not p.strip() for p in prompts):
      raise ConfigError("prompts: an empty prompt (give text)")
    if self.text_encoder is None:
      raise ConfigError("prompts need the text encoder: pipeline.load(..., text_encoder=DIR) "
                        "(a FLAN-T5 folder) or set config.text.encoder")
    from maskgil_jax.text.encoder import caption_features
    return caption_features(self.text_encoder, prompts)

  def settings(self, method: str, **overrides) -> DecodeSettings:
    """Checked decode settings: `config.decode` with `overrides` (DECODE_FIELDS) applied."""
    check_method(method, self.model, self.ar_model or self.model)
    if method == "hybrid":
      check_ar_half(self.config, self.ar_config)
    settings = decode_settings(self.config.decode, **overrides)
    tokens = self.model.layout.num_image_tokens
    if method == "hybrid" and settings.ar_tokens > tokens:
      raise ConfigError(f"--ar-tokens {settings.ar_tokens}: the grid has only {tokens} tokens")
    return settings

  def grid_for(self, height: int | None, width: int | None) -> tuple[int, int]:
    """The token grid (rows, columns) of an image of `height` x `width` pixels (each defaults
    to the model's own size); ConfigError unless multiples of the tokenizer's downsampling."""
    down = TokenizerSpec.from_config(self.config.tokenizer).downsample_factor
    size = self.image_size
    h = size if height is None else height  # 0 is refused, not taken for "the default"
    w = size if width is None else width
    for name, value in (("height", h), ("width", w)):
      if not isinstance(value, (int, np.integer)) or value < 1 or value % down:
        raise ConfigError(f"{name} {value!r}: a positive multiple of the tokenizer's "
                          f"downsampling {down}")
    return h // down, w // down

  def at_grid(self, grid: tuple[int, int]) -> "Pipeline":
    """The same weights drawing a `grid` (rows, columns) of tokens (2D RoPE over that grid)."""
    if tuple(grid) == tuple(self.model.layout.grid):
      return self
    return dataclasses.replace(
        self, model=at_grid(self.model, tuple(grid)),
        ar_model=None if self.ar_model is None else at_grid(self.ar_model, tuple(grid)))

  # ---- drawing ------------------------------------------------------------------------------
  def tokens(self, cond, keys, settings: DecodeSettings, method: str):
    """int32 tokens [B, L] for one batch: labels [B] or a `Caption`, one key per row (call
    inside `placed()`; arrays placed over the mesh's batch axes)."""
    return generate_tokens(self.model, cond, keys, settings, method, self.ar_model)

  def images(self, tokens):
    """uint8 images [B, H, W, 3] of tokens [B, L]."""
    if self.tokenizer is None:
      raise ConfigError("images need a tokenizer: pipeline.load(..., tokenizer=PATH) or set "
                        "config.tokenizer.ckpt")
    return tokens_to_images(self.tokenizer, tokens, tuple(self.model.layout.grid))

  def batch_for(self, n: int) -> int:
    """Rows per compiled call for a request of n: the next power of two up to `batch_size`,
    rounded up to the mesh's batch shards (a few sizes, so few programs)."""
    size = min(self.batch_size, 1 << max(n - 1, 0).bit_length())
    shards = batch_shards(self.mesh)
    return -(-size // shards) * shards

  def stream(self, labels: Sequence[int | str] | None = None, prompts: Sequence[str] | None = None,
             *, decode: str = "mar", seed: int = 0, height: int | None = None,
             width: int | None = None, images: bool = True, **overrides
             ) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """(images uint8 [b, H, W, 3] or None, tokens int32 [b, h, w]) batch by batch, in order;
    arguments as `generate`. Everything is checked before the first batch is drawn."""
    if (labels is None) == (prompts is None):
      raise ConfigError("give labels=[...] (class ids or names) or prompts=[...], one of them")
    unknown = set(overrides) - set(DECODE_FIELDS)
    if unknown:
      raise TypeError(f"generate() got unexpected arguments {sorted(unknown)}")
    check_seed(seed)
    drawing = self.at_grid(self.grid_for(height, width))
    settings = drawing.settings(decode, **overrides)
    if images and self.tokenizer is None:
      self.images(None)  # raises: no tokenizer
    if prompts is not None:
      features, mask = self.captions([prompts] if isinstance(prompts, str) else prompts)
      n = len(features)
    else:
      ids = self.label_ids([labels] if isinstance(labels, (str, int)) else labels)
      n = len(ids)
    batch = self.batch_for(n)
    seed_key = jax.random.PRNGKey(int(seed))
    grid = tuple(drawing.model.layout.grid)

    def dispatch(part):
      start, _ = part
      index = np.arange(start, start + batch, dtype=np.int32)
      rows = np.minimum(index, n - 1)  # padding rows repeat the last request, then drop
      if prompts is not None:
        data = global_batch({"index": index, "caption": features[rows],
                             "caption_mask": mask[rows]}, self.mesh)
        cond = Caption.create(data["caption"], data["caption_mask"])
      else:
        data = global_batch({"index": index, "label": ids[rows].astype(np.int32)}, self.mesh)
        cond = data["label"]
      tokens = drawing.tokens(cond, sample_keys(seed_key, data["index"]), settings, decode)
      return tokens, (drawing.images(tokens) if images else None)

    def fetch(part, result):
      count, (tokens, pictures) = part[1], result
      return (None if pictures is None else np.asarray(pictures)[:count],
              np.asarray(tokens)[:count].reshape(count, *grid))

    with self.placed():
      yield from ahead(dispatch, slices(n, batch), fetch)

  def generate(self, labels: Sequence[int | str] | None = None,
               prompts: Sequence[str] | None = None, *, decode: str = "mar",
               steps: int | None = None, cfg_scale: float | None = None,
               temperature: float | None = None, seed: int = 0, height: int | None = None,
               width: int | None = None, return_tokens: bool = False, **overrides):
    """uint8 images [N, H, W, 3], one per label (class id or name) or prompt; with
    `return_tokens`, (images, int32 tokens [N, h, w]); images are None when the pipeline has
    no tokenizer.

    `decode`: 'mar', 'ar' or 'hybrid'. Unset settings take the config's `decode` values:
    `steps` (MAR steps; hybrid: after AR), `cfg_scale` w of (1 + w) cond - w uncond (0 = off),
    `temperature` (divides the logits, 0 = greedy), and by keyword `top_k`, `top_p`,
    `choice_temperature`, `ar_tokens`. Sample i uses the key fold_in(PRNGKey(seed), i)."""
    parts = list(self.stream(labels, prompts, decode=decode, seed=seed, height=height,
                             width=width, images=self.tokenizer is not None or not return_tokens,
                             steps=steps, cfg_scale=cfg_scale, temperature=temperature,
                             **overrides))
    tokens = np.concatenate([t for _, t in parts])
    images = (np.concatenate([i for i, _ in parts]) if parts[0][0] is not None else None)
    return (images, tokens) if return_tokens else images


def check_seed(seed, name: str = "seed") -> None:
  """ConfigError unless `seed` is an integer a PRNG key can hold (64 bits, sign included)."""
  if not isinstance(seed, (int, np.integer)) or not -2**63 <= int(seed) < 2**63:
    raise ConfigError(f"{name}: an integer from -2**63 to 2**63 - 1, got {seed!r}")


def _listed(values, name: str, what: str) -> list:
  """`values` as a list; ConfigError naming `name` when it is not a list of anything."""
  try:
    return list(values)
  except TypeError:
    raise ConfigError(f"{name}: a list of {what}, got {values!r}") from None


def load(ckpt, config=None, tokenizer=None, text_encoder=None, ar_ckpt=None, *,
         ar_config=None, ema: bool = False, overrides: Sequence[str] = (),
         class_names: Sequence[str] | None = None, batch_size: int = 16) -> Pipeline:
  """A `Pipeline` from our checkpoint or a PyTorch GPT file.

  `config`: an experiment file or name ('tiny:maskgil_reference', 'configs/maskgil.py:B') or a
  ConfigDict; None reads the one stored with our checkpoint (required for PyTorch files).
  `tokenizer` / `text_encoder`: paths (default: config.tokenizer.ckpt / config.text.encoder;
  without a tokenizer `generate` returns tokens only). `ar_ckpt` (+ `ar_config`): hybrid's
  separate AR model. `overrides`: 'a.b=value' config overrides. `class_names`: names for
  labels (default: the data source's, where it has them)."""
  config = resolve_config(config, ckpt, overrides)
  ar_cfg = resolve_config(ar_config, ar_ckpt, (), "ar_config") if ar_ckpt else None
  tokenizer = tokenizer or config.tokenizer.ckpt or None
  if config.model.condition == "caption":
    text_encoder = text_encoder or config.text.encoder or None
  else:
    text_encoder = None
  if batch_size < 1:
    raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
  pipe = Pipeline.from_config(config, os.fspath(ckpt), tokenizer=tokenizer,
                              text_encoder=text_encoder, ar_ckpt=ar_ckpt, ar_config=ar_cfg,
                              ema=ema, class_names=class_names)
  pipe.batch_size = batch_size
  return pipe
