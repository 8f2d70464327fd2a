"""The taming-transformers VQGAN encoder and decoder (MaskGIT-pytorch's and Chameleon's tokenizer).

The blocks are LlamaGen's (it copied them from taming), but the layout differs, so it has its
own modules with taming's attribute names: `encoder.down.{level}.block.{j}`,
`encoder.down.{level}.attn.{j}`, `encoder.down.{level}.downsample.conv`, `encoder.mid.block_1 |
attn_1 | block_2`, and in the decoder `decoder.up.{level}` indexed by resolution level (level 0
is the full resolution, run last) with `num_res_blocks + 1` blocks each (our
`dec_res_blocks`). Attention follows taming's `attn_resolutions`: a level gets an attention
block after each res block when its feature-map side (`resolution / 2 ** level`) is listed;
the middle always has one (docs/reference.md section 10).

`VQModel` (models/vq.py) puts these around `quant_conv`, a plain (not L2-normalised)
nearest-neighbour codebook and `post_quant_conv`, which is taming's `VQModel`.
"""
from __future__ import annotations

from flax import nnx

from maskgil_jax.models.layers_conv import (AttnBlock, Conv2d, GroupNorm, ResnetBlock,
                                            ResolutionLevel, block_rng, encoder_pass, run_block,
                                            swish)


class Level(ResolutionLevel):
  """One resolution level: `block` (res blocks), `attn` (one after each block, or none), then
  `downsample` (encoder) or `upsample` (decoder) unless `resample` is None."""

  def __init__(self, in_ch: int, out_ch: int, n_res: int, *, attention: bool, resample,
               dropout: float, kw: dict):
    super().__init__(in_ch, out_ch, n_res, attention=attention, resample=resample,
                     dropout=dropout, kw=kw, blocks_name="block")


class Mid(nnx.Module):
  """`block_1`, `attn_1`, `block_2` at the lowest resolution."""

  def __init__(self, ch: int, *, dropout: float, kw: dict):
    self.block_1 = ResnetBlock(ch, ch, dropout=dropout, **kw)
    self.attn_1 = AttnBlock(ch, **kw)
    self.block_2 = ResnetBlock(ch, ch, dropout=dropout, **kw)

  def __call__(self, h, rng=None, remat: bool = False):
    h = run_block(self.block_1, h, remat, block_rng(rng, 0))
    h = run_block(self.attn_1, h, remat)
    return run_block(self.block_2, h, remat, block_rng(rng, 1))


def has_attention(spec, level: int) -> bool:
  """taming: attention at a level whose side `resolution / 2 ** level` is in attn_resolutions."""
  return spec.resolution // 2 ** level in spec.attn_resolutions


class Encoder(nnx.Module):
  def __init__(self, s, *, kw: dict):
    self.remat = s.remat
    self.conv_in = Conv2d(3, s.ch, 3, padding=1, **kw)
    levels, block_in = [], s.ch
    last = len(s.ch_mult) - 1
    for level, mult in enumerate(s.ch_mult):
      levels.append(Level(block_in, s.ch * mult, s.enc_res_blocks,
                          attention=has_attention(s, level),
                          resample=None if level == last else "down", dropout=s.dropout, kw=kw))
      block_in = s.ch * mult
    self.down = nnx.List(levels)
    self.mid = Mid(block_in, dropout=s.dropout, kw=kw)
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, s.z_channels, 3, padding=1, **kw)

  def __call__(self, x, rng=None):
    return encoder_pass(self, self.down, x, rng,
                        lambda h, i: self.mid(h, block_rng(rng, i), self.remat))


class Decoder(nnx.Module):
  def __init__(self, s, *, kw: dict):
    self.remat = s.remat
    n = len(s.ch_mult)
    block_in = s.ch * s.ch_mult[-1]
    self.conv_in = Conv2d(s.z_channels, block_in, 3, padding=1, **kw)
    self.mid = Mid(block_in, dropout=s.dropout, kw=kw)
    levels = {}
    for level in reversed(range(n)):  # built lowest resolution first, stored by level
      out = s.ch * s.ch_mult[level]
      levels[level] = Level(block_in, out, s.dec_res_blocks, attention=has_attention(s, level),
                            resample="up" if level else None, dropout=s.dropout, kw=kw)
      block_in = out
    self.up = nnx.List([levels[level] for level in range(n)])
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, 3, 3, padding=1, **kw)

  def features(self, z, rng=None):
    """Everything before `conv_out` (the adaptive GAN weight differentiates conv_out alone)."""
    h = self.conv_in(z)
    h = self.mid(h, block_rng(rng, len(self.up)), self.remat)
    for level in reversed(range(len(self.up))):
      h = self.up[level](h, block_rng(rng, level), self.remat)
    return swish(self.norm_out(h))

  def __call__(self, z, rng=None):
    return self.conv_out(self.features(z, rng))
