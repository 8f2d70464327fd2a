"""Convolutional building blocks shared by the tokenizer, the discriminator and LPIPS.

Everything is NHWC. Parameters are named like the PyTorch layers they mirror (`weight`, `bias`)
so the name tables can pair paths one to one; conv kernels are stored HWIO and converted with
the 'conv' transform of `interop.names`. Parameters live in `param_dtype`; each layer computes
in the dtype it is given (`dtype`), and normalisation statistics and attention softmax are
always taken in float32 so bfloat16 compute stays stable.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def swish(x):
  """x * sigmoid(x), the tokenizer's only non-linearity."""
  return x * jax.nn.sigmoid(x)


def run_block(block, h, remat: bool, *args):
  """`block(h, *args)`, recomputed in the backward pass when `remat` (saves activations)."""
  if remat:
    return jax.checkpoint(lambda b, x, *a: b(x, *a))(block, h, *args)
  return block(h, *args)


def block_rng(rng, i: int):
  """The dropout key of the i-th block (None when dropout is off)."""
  return None if rng is None else jax.random.fold_in(rng, i)


def encoder_pass(encoder, levels, x, rng, mid):
  """The forward pass every encoder family shares: conv_in, each level (level i's dropout key
  block_rng(rng, i)), `mid(h, len(levels))`, then norm_out, swish and conv_out."""
  h = encoder.conv_in(x)
  for i, level in enumerate(levels):
    h = level(h, block_rng(rng, i), encoder.remat)
  return encoder.conv_out(swish(encoder.norm_out(mid(h, len(levels)))))


def torch_default_init(key, shape, fan_in: int, dtype):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv weights and biases."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv2d(nnx.Module):
  """A 2-D convolution with HWIO `weight` and optional `bias`.

  `padding` is an int (symmetric, like torch) or explicit ((top, bottom), (left, right)).
  `init_std` > 0 draws weights from N(0, init_std) (the discriminator's recipe); otherwise the
  PyTorch default uniform init is used.
  """

  def __init__(self, in_ch: int, out_ch: int, kernel: int, *, rngs: nnx.Rngs, stride: int = 1,
               padding=0, bias: bool = True, init_std: float = 0.0,
               dtype=jnp.float32, param_dtype=jnp.float32):
    self.stride = stride
    self.padding = ((padding, padding), (padding, padding)) if isinstance(padding, int) else (
        tuple(tuple(p) for p in padding))
    self.dtype = dtype
    fan_in = in_ch * kernel * kernel
    shape = (kernel, kernel, in_ch, out_ch)
    if init_std > 0:
      w = init_std * jax.random.normal(rngs.params(), shape, param_dtype)
    else:
      w = torch_default_init(rngs.params(), shape, fan_in, param_dtype)
    self.weight = nnx.Param(w, out_sharding=(None, None, "conv_in", "conv_out"))
    if bias:
      b = (jnp.zeros((out_ch,), param_dtype) if init_std > 0
           else torch_default_init(rngs.params(), (out_ch,), fan_in, param_dtype))
      self.bias = nnx.Param(b, out_sharding=("conv_out",))
    else:
      self.bias = None

  def __call__(self, x, weight=None):
    """`weight` replaces the stored kernel (used to differentiate with respect to it alone)."""
    w = (self.weight[...] if weight is None else weight).astype(self.dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), w, window_strides=(self.stride, self.stride), padding=self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm over NHWC: statistics in float32, biased variance; `affine=False` has
  no parameters (Open-MAGVIT2's adaptive norm scales the result itself)."""

  def __init__(self, channels: int, *, groups: int = 32, eps: float = 1e-6,
               param_dtype=jnp.float32, affine: bool = True):
    if channels % groups:
      raise ValueError(f"GroupNorm: {channels} channels are not divisible by {groups} groups")
    self.groups = groups
    self.eps = eps
    self.affine = affine
    if affine:
      self.weight = nnx.Param(jnp.ones((channels,), param_dtype), out_sharding=("norm",))
      self.bias = nnx.Param(jnp.zeros((channels,), param_dtype), out_sharding=("norm",))

  def __call__(self, x):
    b, h, w, c = x.shape
    xg = x.astype(jnp.float32).reshape(b, h, w, self.groups, c // self.groups)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(xg - mean).mean(axis=(1, 2, 4), keepdims=True)
    y = ((xg - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
    if self.affine:
      y = y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


class ResnetBlock(nnx.Module):
  """norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2, plus a 1x1 shortcut when the
  channel count changes (`nin_shortcut`, as in LlamaGen/taming)."""

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs, dropout: float = 0.0,
               bias: bool = True, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, bias=bias)  # Open-MAGVIT2: no bias
    self.dropout = dropout
    self.norm1 = GroupNorm(in_ch, param_dtype=param_dtype)
    self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1, **kw)
    self.norm2 = GroupNorm(out_ch, param_dtype=param_dtype)
    self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1, **kw)
    self.nin_shortcut = Conv2d(in_ch, out_ch, 1, **kw) if in_ch != out_ch else None

  def __call__(self, x, rng=None):
    h = self.conv1(swish(self.norm1(x)))
    h = swish(self.norm2(h))
    if self.dropout > 0 and rng is not None:
      keep = jax.random.bernoulli(rng, 1.0 - self.dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - self.dropout), 0).astype(h.dtype)
    h = self.conv2(h)
    if self.nin_shortcut is not None:
      x = self.nin_shortcut(x)
    return x.astype(h.dtype) + h


class AttnBlock(nnx.Module):
  """Single-head self-attention over all positions, with 1x1-conv q, k, v and proj_out."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm = GroupNorm(channels, param_dtype=param_dtype)
    self.q = Conv2d(channels, channels, 1, **kw)
    self.k = Conv2d(channels, channels, 1, **kw)
    self.v = Conv2d(channels, channels, 1, **kw)
    self.proj_out = Conv2d(channels, channels, 1, **kw)

  def __call__(self, x):
    b, h, w, c = x.shape
    hn = self.norm(x)
    q, k, v = (t(hn).reshape(b, h * w, 1, c) for t in (self.q, self.k, self.v))
    out = jax.nn.dot_product_attention(q, k, v)  # scale 1/sqrt(c), softmax in float32
    return x.astype(out.dtype) + self.proj_out(out.reshape(b, h, w, c))


class Downsample(nnx.Module):
  """Pad right and bottom by one, then a 3x3 stride-2 conv (halves H and W)."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.conv = Conv2d(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs,
                       dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x):
    return self.conv(x)


def _phase_kernels(w):
  """The four 2x2 kernels of a 3x3 kernel [3, 3, I, O] seen through nearest-neighbour x2
  upsampling, concatenated on the output axis [2, 2, I, 4 O] in phase order (0,0), (0,1),
  (1,0), (1,1). An output row of even phase reads input rows (i - 1, i) with kernel rows
  (w0, w1 + w2); one of odd phase reads (i, i + 1) with (w0 + w1, w2); columns likewise."""
  def fold(k, axis, phase):
    k0, k1, k2 = (jax.lax.index_in_dim(k, j, axis, keepdims=False) for j in range(3))
    return jnp.stack([k0, k1 + k2] if phase == 0 else [k0 + k1, k2], axis)
  return jnp.concatenate([fold(fold(w, 0, a), 1, b) for a in (0, 1) for b in (0, 1)], -1)


def _conv3x3(x, w):
  return jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _upsample_conv_plain(x, w):
  """The definition: nearest-neighbour x2, then the 3x3 conv (padding 1)."""
  return _conv3x3(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), w)


def _upsample_conv_phases(x, w):
  """The same from the four 2x2 phase kernels of `w` (`_phase_kernels`), without the
  upsampled map."""
  n, h, wd, _ = x.shape
  kernel = _phase_kernels(w)
  out = kernel.shape[-1] // 4
  z = _conv3x3(x, kernel).reshape(n, h + 1, wd + 1, 2, 2, out)  # [n, h + 1, w + 1, 4 out]
  # phase (a, b) of output pixel (2i + a, 2j + b) is z[i + a, j + b, a, b]
  rows = [jnp.stack([z[:, a:a + h, b:b + wd, a, b] for b in (0, 1)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * wd, out)


@jax.custom_vjp
def upsample_conv(x, w):
  """`_upsample_conv_plain(x, w)`, computed by phases; gradients through the plain form."""
  return _upsample_conv_phases(x, w)


def _upsample_conv_fwd(x, w):
  return _upsample_conv_phases(x, w), (x, w)


def _upsample_conv_bwd(residuals, g):
  # the phases' own backward (slices, stacks and a 4x-wide conv) ran 2.5x slower than the
  # plain conv's on XLA:CPU in the tokenizer's train step; the plain form's pullback needs only
  # x and w (its unused forward output is dropped by XLA)
  _, pullback = jax.vjp(_upsample_conv_plain, *residuals)
  return pullback(g)


upsample_conv.defvjp(_upsample_conv_fwd, _upsample_conv_bwd)


class Upsample(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 conv (padding 1).

  Computed without building the upsampled map: each of the four output phases (row and
  column parity) is a 2x2 convolution of the input with sums of the 3x3 kernel's taps, all
  four in one convolution with 4x the output channels, then interleaved. Same result up to
  float rounding (the taps are summed before multiplying) with 16 instead of 36 multiply-adds
  per input pixel and channel pair. Training differentiates the plain form (`upsample_conv`),
  whose backward is the faster one."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.conv = Conv2d(channels, channels, 3, padding=1, rngs=rngs, dtype=dtype,
                       param_dtype=param_dtype)

  def __call__(self, x):
    conv = self.conv
    # the kernel in the compute dtype, as the plain conv has it (its taps are summed there)
    y = upsample_conv(x.astype(conv.dtype), conv.weight[...].astype(conv.dtype))
    if conv.bias is not None:
      y = y + conv.bias[...].astype(conv.dtype)
    return y


class ResolutionLevel(nnx.Module):
  """One resolution level of a tokenizer's encoder or decoder: `n_res` res blocks, attention
  after each when `attention` (`attn`), then `downsample` / `upsample` as `resample` says.

  The res blocks are stored under `blocks_name`, the reference's own key for them ('res' in
  LlamaGen's VQ, 'block' in taming's VQGAN), so one module serves both name tables."""

  def __init__(self, in_ch: int, out_ch: int, n_res: int, *, attention: bool, resample,
               dropout: float, kw: dict, blocks_name: str = "res"):
    blocks, attn = [], []
    for _ in range(n_res):
      blocks.append(ResnetBlock(in_ch, out_ch, dropout=dropout, **kw))
      in_ch = out_ch
      if attention:
        attn.append(AttnBlock(out_ch, **kw))
    self.blocks_name = blocks_name
    setattr(self, blocks_name, nnx.List(blocks))
    self.attn = nnx.List(attn)
    self.resample = resample
    if resample == "down":
      self.downsample = Downsample(out_ch, **kw)
    elif resample == "up":
      self.upsample = Upsample(out_ch, **kw)

  def __call__(self, h, rng=None, remat: bool = False):
    for i, block in enumerate(getattr(self, self.blocks_name)):
      h = run_block(block, h, remat, block_rng(rng, i))
      if len(self.attn):
        h = run_block(self.attn[i], h, remat)
    if self.resample == "down":
      h = self.downsample(h)
    elif self.resample == "up":
      h = self.upsample(h)
    return h

