"""The image tokenizer in Flax NNX, channel-last: LlamaGen's VQ (VQ-16 and relatives) and the
other families of the paper's tokenizer study behind the same class and methods.

`config.tokenizer.kind` picks the family:
  vq       LlamaGen's network, L2-normalised nearest-neighbour codebook (VQ-16)
  lfq      LlamaGen's network, lookup-free quantizer (the codebook study's LFQ)
  taming   taming-transformers VQGAN (models/taming.py), plain codebook: MaskGIT-pytorch's
           ImageNet tokenizer and Chameleon's
  magvit2  Open-MAGVIT2 (models/magvit2.py), lookup-free, no quant convs

Images are NHWC floats in [-1, 1]; codes are int32 [B, h, w] in (h, w) raster order with
h = H / 2 ** (len(ch_mult) - 1) for every family. Attribute paths are the reference
state-dict keys of the family (`encoder.conv_blocks.0.res.1.conv1.weight` for LlamaGen,
`encoder.down.0.block.1.conv1.weight` for taming, ...), so the tables in `interop` pair them
one to one.

Use:
  model = VQModel(config.tokenizer, rngs=nnx.Rngs(0))     # or load_tokenizer(path, config)
  codes = encode(model, images); images = decode(model, codes)   # jitted, batched
  recon, aux = model(images)                              # training: losses and statistics
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax import xla_cpu
from maskgil_jax.configlib import ConfigError
from maskgil_jax.models.layers_conv import (AttnBlock, Conv2d, GroupNorm, ResnetBlock,
                                            ResolutionLevel, block_rng, encoder_pass, run_block,
                                            swish)
from maskgil_jax.models import magvit2, taming
from maskgil_jax.models.quantizers import LookupFreeQuantizer, VectorQuantizer

KINDS = ("vq", "lfq", "taming", "magvit2")
LOOKUP_FREE = ("lfq", "magvit2")  # kinds whose codes are the signs of the latents
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """The tokenizer fields the network needs, checked; hashable so it can sit on the module."""
  kind: str
  ch: int
  ch_mult: tuple[int, ...]
  enc_res_blocks: int
  dec_res_blocks: int
  z_channels: int
  codebook_size: int
  codebook_dim: int
  l2_norm: bool
  commit_beta: float
  entropy_loss: float
  entropy_temperature: float
  entropy_sample_weight: float
  entropy_batch_weight: float
  search_chunk: int
  dropout: float
  dtype: str
  param_dtype: str
  remat: bool
  # taming only: the side length the attention placement is computed from, and the sides
  # (resolution / 2 ** level) whose levels get attention blocks
  resolution: int = 256
  attn_resolutions: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, t) -> "TokenizerSpec":
    if isinstance(t, cls):
      return t
    values = {}
    for f in dataclasses.fields(cls):
      if f.name not in t:
        if f.default is not dataclasses.MISSING:  # a field newer than the config
          continue
        raise ConfigError(f"config.tokenizer.{f.name}: missing")
      v = t[f.name]
      values[f.name] = tuple(v) if f.name in ("ch_mult", "attn_resolutions") else v
    spec = cls(**values)
    spec.check()
    return spec

  def check(self) -> None:
    def need(ok, field, msg):
      if not ok:
        raise ConfigError(f"config.tokenizer.{field}: {msg}")
    need(self.kind in KINDS, "kind", f"{self.kind!r}; one of {KINDS}")
    for f in ("ch", "enc_res_blocks", "dec_res_blocks", "z_channels", "codebook_size",
              "codebook_dim", "search_chunk"):
      v = getattr(self, f)
      need(isinstance(v, int) and v > 0, f, f"must be a positive int, got {v!r}")
    need(len(self.ch_mult) > 0 and all(isinstance(m, int) and m > 0 for m in self.ch_mult),
         "ch_mult", f"must be positive ints, got {self.ch_mult!r}")
    for m in (1,) + self.ch_mult:
      need(self.ch * m % 32 == 0, "ch", f"channels {self.ch * m} (ch x ch_mult) must be "
           "divisible by the 32 GroupNorm groups")
    if self.kind in ("vq", "lfq"):
      need(self.z_channels % 32 == 0, "z_channels", f"{self.z_channels} must be divisible by 32")
    need(isinstance(self.resolution, int) and self.resolution > 0, "resolution",
         f"must be a positive int, got {self.resolution!r}")
    need(all(isinstance(r, int) and r > 0 for r in self.attn_resolutions), "attn_resolutions",
         f"must be positive ints, got {self.attn_resolutions!r}")
    need(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
    need(self.dtype in _DTYPES, "dtype", f"{self.dtype!r}; one of {sorted(_DTYPES)}")
    need(self.param_dtype in _DTYPES, "param_dtype",
         f"{self.param_dtype!r}; one of {sorted(_DTYPES)}")
    need(self.entropy_temperature > 0, "entropy_temperature", "must be positive")
    if self.kind in LOOKUP_FREE:
      need(2 ** self.codebook_dim == self.codebook_size, "codebook_dim",
           f"LFQ needs codebook_size == 2 ** codebook_dim, got {self.codebook_size} and "
           f"{self.codebook_dim}")
      need(not self.l2_norm, "l2_norm", "LFQ quantises signs; set l2_norm=False")
    if self.kind == "magvit2":
      need(self.codebook_dim == self.z_channels, "codebook_dim",
           f"Open-MAGVIT2 quantises the encoder output itself (no quant convs): codebook_dim "
           f"must equal z_channels, got {self.codebook_dim} and {self.z_channels}")

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.ch_mult) - 1)


class ConvBlock(ResolutionLevel):
  """One resolution level: res blocks (`res`), attention after each when at the lowest
  resolution (`attn`), then `downsample` (encoder) or `upsample` (decoder) unless last."""

  def __init__(self, in_ch: int, out_ch: int, n_res: int, *, attention: bool, resample,
               rngs: nnx.Rngs, dropout: float, dtype, param_dtype):
    super().__init__(in_ch, out_ch, n_res, attention=attention, resample=resample,
                     dropout=dropout, blocks_name="res",
                     kw=dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype))


def _mid(channels: int, kw: dict, dropout: float) -> nnx.List:
  """Res block, attention, res block at the lowest resolution (`mid.0`, `mid.1`, `mid.2`)."""
  return nnx.List([ResnetBlock(channels, channels, dropout=dropout, **kw),
                   AttnBlock(channels, **kw),
                   ResnetBlock(channels, channels, dropout=dropout, **kw)])


def _run_mid(mid, h, rng, remat: bool):
  h = run_block(mid[0], h, remat, block_rng(rng, 0))
  h = run_block(mid[1], h, remat)
  return run_block(mid[2], h, remat, block_rng(rng, 1))


class Encoder(nnx.Module):
  def __init__(self, s: TokenizerSpec, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, dtype=_DTYPES[s.dtype], param_dtype=_DTYPES[s.param_dtype])
    self.remat = s.remat
    self.conv_in = Conv2d(3, s.ch, 3, padding=1, **kw)
    blocks, block_in = [], s.ch
    last = len(s.ch_mult) - 1
    for level, mult in enumerate(s.ch_mult):
      blocks.append(ConvBlock(block_in, s.ch * mult, s.enc_res_blocks, attention=level == last,
                              resample=None if level == last else "down",
                              dropout=s.dropout, **kw))
      block_in = s.ch * mult
    self.conv_blocks = nnx.List(blocks)
    self.mid = _mid(block_in, kw, s.dropout)
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, s.z_channels, 3, padding=1, **kw)

  def __call__(self, x, rng=None):
    return encoder_pass(self, self.conv_blocks, x, rng,
                        lambda h, i: _run_mid(self.mid, h, block_rng(rng, i), self.remat))


class Decoder(nnx.Module):
  def __init__(self, s: TokenizerSpec, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, dtype=_DTYPES[s.dtype], param_dtype=_DTYPES[s.param_dtype])
    self.remat = s.remat
    block_in = s.ch * s.ch_mult[-1]
    self.conv_in = Conv2d(s.z_channels, block_in, 3, padding=1, **kw)
    self.mid = _mid(block_in, kw, s.dropout)
    blocks = []
    n = len(s.ch_mult)
    for k, level in enumerate(reversed(range(n))):  # lowest resolution first
      out = s.ch * s.ch_mult[level]
      blocks.append(ConvBlock(block_in, out, s.dec_res_blocks, attention=k == 0,
                              resample="up" if k != n - 1 else None, dropout=s.dropout, **kw))
      block_in = out
    self.conv_blocks = nnx.List(blocks)
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, 3, 3, padding=1, **kw)

  def features(self, z, rng=None):
    """Everything before `conv_out` (the adaptive GAN weight differentiates conv_out alone)."""
    h = self.conv_in(z)
    h = _run_mid(self.mid, h, block_rng(rng, len(self.conv_blocks)), self.remat)
    for i, block in enumerate(self.conv_blocks):
      h = block(h, block_rng(rng, i), self.remat)
    return swish(self.norm_out(h))

  def __call__(self, z, rng=None):
    return self.conv_out(self.features(z, rng))


class VQModel(nnx.Module):
  """Encoder -> quant_conv -> quantize -> post_quant_conv -> decoder (LlamaGen's and taming's
  `VQModel`); Open-MAGVIT2 has no quant convs (`quant_conv` and `post_quant_conv` are None)."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    s = TokenizerSpec.from_config(config)
    self.spec = s
    kw = dict(rngs=rngs, dtype=_DTYPES[s.dtype], param_dtype=_DTYPES[s.param_dtype])
    if s.kind == "taming":
      self.encoder, self.decoder = taming.Encoder(s, kw=kw), taming.Decoder(s, kw=kw)
    elif s.kind == "magvit2":
      self.encoder, self.decoder = magvit2.Encoder(s, kw=kw), magvit2.Decoder(s, kw=kw)
    else:
      self.encoder, self.decoder = Encoder(s, rngs=rngs), Decoder(s, rngs=rngs)
    if s.kind in ("vq", "taming"):
      self.quantize = VectorQuantizer(
          s.codebook_size, s.codebook_dim, rngs=rngs, l2_norm=s.l2_norm, beta=s.commit_beta,
          entropy_weight=s.entropy_loss, entropy_temperature=s.entropy_temperature,
          sample_weight=s.entropy_sample_weight, batch_weight=s.entropy_batch_weight,
          chunk=s.search_chunk, param_dtype=kw["param_dtype"])
    else:
      self.quantize = LookupFreeQuantizer(
          s.codebook_size, beta=s.commit_beta, entropy_weight=s.entropy_loss,
          entropy_temperature=s.entropy_temperature, sample_weight=s.entropy_sample_weight,
          batch_weight=s.entropy_batch_weight, chunk=s.search_chunk)
    if s.kind == "magvit2":
      self.quant_conv = self.post_quant_conv = None
    else:
      self.quant_conv = Conv2d(s.z_channels, s.codebook_dim, 1, **kw)
      self.post_quant_conv = Conv2d(s.codebook_dim, s.z_channels, 1, **kw)

  @property
  def downsample_factor(self) -> int:
    return self.spec.downsample_factor

  def _check_images(self, images):
    f = self.downsample_factor
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"VQModel: expected NHWC RGB images [B, H, W, 3], got {images.shape}")
    if images.shape[1] % f or images.shape[2] % f:
      raise ValueError(f"VQModel: image size {images.shape[1]}x{images.shape[2]} is not a "
                       f"multiple of the downsampling factor {f}")

  def latents(self, images, rng=None):
    """Pre-quantisation latents [B, h, w, codebook_dim] in float32 (LlamaGen's `pre_quant`)."""
    self._check_images(images)
    z = self.encoder(images, rng)
    return (z if self.quant_conv is None else self.quant_conv(z)).astype(jnp.float32)

  def encode(self, images):
    """int32 codes [B, h, w] of NHWC images in [-1, 1]."""
    return self.quantize.indices(self.latents(images))

  def quantized(self, images, rng=None):
    """(straight-through quantised latents [B, h, w, D], aux dict) for training."""
    return self.quantize(self.latents(images, rng))

  def decode_features(self, quant, rng=None):
    if self.post_quant_conv is not None:
      quant = self.post_quant_conv(quant)
    return self.decoder.features(quant.astype(_DTYPES[self.spec.dtype]), rng)

  def decode(self, quant, rng=None):
    """Images [B, H, W, 3] (float32, not clamped) from quantised latents [B, h, w, D]."""
    return self.decoder.conv_out(self.decode_features(quant, rng)).astype(jnp.float32)

  def decode_code(self, indices):
    """Images [B, H, W, 3] (float32, not clamped) from int codes [B, h, w]."""
    return self.decode(self.quantize.lookup(indices))

  def __call__(self, images, rng=None):
    """(reconstructions, aux): aux holds vq_loss, commit_loss, entropy_loss, codebook_usage,
    batch_usage, perplexity, indices and the new codebook_used window. `rng` enables dropout."""
    rng_enc, rng_dec = (None, None) if rng is None else jax.random.split(rng)
    quant, aux = self.quantized(images, rng_enc)
    return self.decode(quant, rng_dec), aux


@xla_cpu.jit
def encode(model: VQModel, images):
  """Jitted `model.encode`: NHWC images in [-1, 1] -> int32 codes [B, h, w]. On CPU compiled
  with the tokenizer's XLA options (`maskgil_jax.xla_cpu`), as are `decode` and
  `reconstruct`."""
  return model.encode(images)


@xla_cpu.jit
def decode(model: VQModel, indices):
  """Jitted `model.decode_code`: int codes [B, h, w] -> NHWC float32 images."""
  return model.decode_code(indices)


@xla_cpu.jit
def reconstruct(model: VQModel, images):
  """(codes, reconstructions) of NHWC images in [-1, 1], in one compiled call."""
  codes = model.encode(images)
  return codes, model.decode_code(codes)


def record_usage(model: VQModel, codebook_used) -> VQModel:
  """A copy of `model` whose `quantize.codebook_used` window is `codebook_used` (the
  `aux['codebook_used']` a training step returned); `model` itself is left as it was."""
  new = jax.tree.map(lambda x: x, model)  # new Variables around the same arrays
  new.quantize.codebook_used.set_value(codebook_used)
  return new


def count_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
