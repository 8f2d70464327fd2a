"""Open-MAGVIT2's improved encoder and decoder (TencentARC `improved_model.py`), channel-last.

What differs from the taming/LlamaGen networks (docs/reference.md section 10): no attention
anywhere; res-block convolutions and the encoder's `conv_in` carry no bias; the encoder
downsamples with a bare 3x3 stride-2 conv padded by one on every side
(`encoder.down.{level}.downsample`) and ends in a 1x1 `conv_out`; the middle is
`mid_block.{j}` (as many res blocks as each level has); the decoder upsamples with a 3x3 conv
to 4x the channels followed by depth-to-space (`decoder.up.{level}.upsample.conv1`), and before
each level's res blocks an adaptive group norm (`decoder.adaptive.{level}`) rescales the
features with linear maps of the per-channel std and mean of the quantised latents.

`VQModel` (models/vq.py) puts the lookup-free quantizer between them, with no quant convs.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from maskgil_jax.models.layers_conv import (Conv2d, GroupNorm, ResnetBlock, block_rng,
                                            encoder_pass, run_block, swish, torch_default_init)


class Linear(nnx.Module):
  """torch.nn.Linear with `weight` stored [in, out] (the 'linear' transform) and `bias`."""

  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, **_):
    self.weight = nnx.Param(torch_default_init(rngs.params(), (d_in, d_out), d_in, param_dtype),
                            out_sharding=("conv_in", "conv_out"))
    self.bias = nnx.Param(torch_default_init(rngs.params(), (d_out,), d_in, param_dtype),
                          out_sharding=("conv_out",))

  def __call__(self, x):
    return x @ self.weight[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class AdaptiveGroupNorm(nnx.Module):
  """GroupNorm without affine, then `gamma(std(style)) * x + beta(mean(style))` per channel,
  the statistics taken over the positions of the quantised latents `style` [B, h, w, D]."""

  def __init__(self, z_channels: int, channels: int, *, kw: dict, eps: float = 1e-6):
    self.eps = eps
    self.gn = GroupNorm(channels, eps=eps, affine=False)
    self.gamma = Linear(z_channels, channels, **kw)
    self.beta = Linear(z_channels, channels, **kw)

  def __call__(self, x, style):
    s = style.astype(jnp.float32)
    # torch `var(dim=-1)`: the unbiased (n - 1) variance
    std = jnp.sqrt(jnp.var(s, axis=(1, 2), ddof=1) + self.eps)
    scale = self.gamma(std)[:, None, None, :]
    shift = self.beta(jnp.mean(s, axis=(1, 2)))[:, None, None, :]
    y = self.gn(x).astype(jnp.float32)
    return (scale * y + shift).astype(x.dtype)


def depth_to_space(x, block: int = 2):
  """NHWC twin of Open-MAGVIT2's DCR depth-to-space: channel (i * block + j) * C' + k of pixel
  (y, x) goes to channel k of pixel (y * block + i, x * block + j)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, block, block, c // block ** 2)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c // block ** 2)


class Upsampler(nnx.Module):
  def __init__(self, ch: int, *, kw: dict):
    self.conv1 = Conv2d(ch, 4 * ch, 3, padding=1, **kw)

  def __call__(self, x):
    return depth_to_space(self.conv1(x))


class Level(nnx.Module):
  """`block` (res blocks) then `downsample` (a conv) / `upsample` (Upsampler) unless last."""

  def __init__(self, in_ch: int, out_ch: int, n_res: int, *, resample, kw: dict):
    blocks = []
    for _ in range(n_res):
      blocks.append(ResnetBlock(in_ch, out_ch, bias=False, **kw))
      in_ch = out_ch
    self.block = nnx.List(blocks)
    self.resample = resample
    if resample == "down":
      self.downsample = Conv2d(out_ch, out_ch, 3, stride=2, padding=1, **kw)
    elif resample == "up":
      self.upsample = Upsampler(out_ch, kw=kw)

  def __call__(self, h, rng=None, remat: bool = False):
    for i, block in enumerate(self.block):
      h = run_block(block, h, remat, block_rng(rng, i))
    if self.resample == "down":
      h = self.downsample(h)
    elif self.resample == "up":
      h = self.upsample(h)
    return h


def _mid(ch: int, n: int, kw: dict) -> nnx.List:
  return nnx.List([ResnetBlock(ch, ch, bias=False, **kw) for _ in range(n)])


class Encoder(nnx.Module):
  def __init__(self, s, *, kw: dict):
    self.remat = s.remat
    self.conv_in = Conv2d(3, s.ch, 3, padding=1, bias=False, **kw)
    levels, block_in = [], s.ch
    last = len(s.ch_mult) - 1
    for level, mult in enumerate(s.ch_mult):
      levels.append(Level(block_in, s.ch * mult, s.enc_res_blocks,
                          resample=None if level == last else "down", kw=kw))
      block_in = s.ch * mult
    self.down = nnx.List(levels)
    self.mid_block = _mid(block_in, s.enc_res_blocks, kw)
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, s.z_channels, 1, **kw)

  def __call__(self, x, rng=None):
    def mid(h, first):
      for j, block in enumerate(self.mid_block):
        h = run_block(block, h, self.remat, block_rng(rng, first + j))
      return h
    return encoder_pass(self, self.down, x, rng, mid)


class Decoder(nnx.Module):
  def __init__(self, s, *, kw: dict):
    self.remat = s.remat
    n, block_in = len(s.ch_mult), s.ch * s.ch_mult[-1]  # from the deepest level up
    self.conv_in = Conv2d(s.z_channels, block_in, 3, padding=1, **kw)
    self.mid_block = _mid(block_in, s.dec_res_blocks, kw)
    levels, adaptive = {}, {}
    for level in reversed(range(n)):
      out = s.ch * s.ch_mult[level]
      adaptive[level] = AdaptiveGroupNorm(s.z_channels, block_in, kw=kw)
      levels[level] = Level(block_in, out, s.dec_res_blocks, resample="up" if level else None,
                            kw=kw)
      block_in = out
    self.adaptive = nnx.List([adaptive[level] for level in range(n)])
    self.up = nnx.List([levels[level] for level in range(n)])
    self.norm_out = GroupNorm(block_in, param_dtype=kw["param_dtype"])
    self.conv_out = Conv2d(block_in, 3, 3, padding=1, **kw)

  def features(self, z, rng=None):
    """Everything before `conv_out`; `z` (the quantised latents) is also the adaptive norms'
    style input."""
    h = self.conv_in(z)
    for j, block in enumerate(self.mid_block):
      h = run_block(block, h, self.remat, block_rng(rng, len(self.up) + j))
    for level in reversed(range(len(self.up))):
      h = self.adaptive[level](h, z)
      h = self.up[level](h, block_rng(rng, level), self.remat)
    return swish(self.norm_out(h))

  def __call__(self, z, rng=None):
    return self.conv_out(self.features(z, rng))
