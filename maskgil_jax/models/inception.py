"""FID Inception-v3 (the pytorch-fid variant of the 2015 TensorFlow graph) as a functional NNX model.

Every FID in the literature, ADM's and LlamaGen's included, comes from one frozen network: the
TensorFlow Inception-v3 graph `classify_image_graph_def.pb` (2015-12-05). pytorch-fid ported it to
torchvision's `Inception3` with patched blocks (`FIDInceptionA/C/E_1/E_2`) and released the
weights as `pt_inception-2015-12-05-6726825d.pth`; this module is that network, in NHWC, with
parameter paths equal to that file's keys (`Mixed_6b.branch7x7_2.conv.weight`, ...).

One call returns the three things the metrics need:
- `pool3` [N, 2048]: the final average pool, FID and precision/recall features;
- `spatial` [N, 2023]: ADM's sFID features, TF tensor `mixed_6/conv:0` = the ReLU output of
  `Mixed_6d.branch1x1` [N, 17, 17, 192], first 7 channels, flattened in (h, w, c) order as ADM
  flattens its NHWC tensor (so ADM's stored `mu_s`/`sigma_s` line up with ours);
- `logits` [N, 1008]: the classifier head (ADM's Inception Score uses `fc(pool3, bias=False)`,
  i.e. `pool3 @ W` without the bias).

Two input pipelines (images are uint8 or float in [0, 255], NHWC, any size):
- "tf1": what the TF graph does inside itself (ADM, TTUR, torch-fidelity): TF1 `ResizeBilinear`
  to 299 with `align_corners=False` and no half-pixel centres, then (x - 128) / 128;
- "pytorch_fid": x / 255, `F.interpolate(bilinear, align_corners=False)` (half-pixel centres, no
  antialias), then 2x - 1.
Resizing is two small interpolation matrices (static shapes, one matmul per axis).

The network is only meaningful with the published weights (`interop.inception_names.
load_fid_inception` builds it abstractly and fills every tensor from the file), so the
constructor takes no RNG: convs and the head start at zero, BatchNorm at identity. Running
statistics are `nnx.Param`s like every other tensor: nothing is ever trained, and one kind of
Variable keeps the name table and sharding rules uniform.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL3_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM keeps mixed_6/conv[..., :7]
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023
BN_EPS = 1e-3
PREPROCESSING = ("tf1", "pytorch_fid")
PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}


class InceptionOutputs(NamedTuple):
  pool3: jax.Array  # [N, 2048]
  spatial: jax.Array  # [N, 2023]
  logits: jax.Array  # [N, 1008]


# ----------------------------------------------------------------------------- input pipeline

def bilinear_matrix(in_size: int, out_size: int, half_pixel: bool) -> np.ndarray:
  """[out, in] weights of 1-D bilinear resampling, as torch (half_pixel) or TF1 computes them.

  torch `align_corners=False`: src = max((i + 0.5) * in/out - 0.5, 0). TF1 `ResizeBilinear`
  (align_corners=False, half_pixel_centers=False): src = i * in/out. Both take floor(src) and
  the next pixel (clamped to the edge) with weights 1 - frac, frac. The scale is float32, as
  in both reference kernels.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  i = np.arange(out_size, dtype=np.float32)
  src = np.maximum((i + np.float32(0.5)) * scale - np.float32(0.5), 0) if half_pixel else i * scale
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (src - lo).astype(np.float32)
  m = np.zeros((out_size, in_size), np.float32)
  np.add.at(m, (np.arange(out_size), lo), 1 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m


def resize_bilinear(x, size: int, half_pixel: bool):
  """NHWC float32 images resized to size x size with `bilinear_matrix` along H then W."""
  hi = jnp.asarray(bilinear_matrix(x.shape[1], size, half_pixel))
  wi = jnp.asarray(bilinear_matrix(x.shape[2], size, half_pixel))
  hp = jax.lax.Precision.HIGHEST  # pixel values up to 255: keep every bit
  x = jnp.einsum("oh,nhwc->nowc", hi, x, precision=hp)
  return jnp.einsum("pw,nowc->nopc", wi, x, precision=hp)


def preprocess(images, mode: str):
  """uint8 / [0, 255] NHWC images -> the network's [-1, 1] 299x299 float32 input."""
  if mode not in PREPROCESSING:
    raise ValueError(f"preprocess {mode!r}: expected one of {PREPROCESSING}")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [N, H, W, 3] (NHWC RGB), got shape {tuple(images.shape)}")
  x = images.astype(jnp.float32)
  if mode == "tf1":
    x = resize_bilinear(x, INPUT_SIZE, half_pixel=False)
    return (x - 128.0) / 128.0
  x = resize_bilinear(x / 255.0, INPUT_SIZE, half_pixel=True)
  return 2.0 * x - 1.0


# ----------------------------------------------------------------------------- layers

def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class Conv(nnx.Module):
  """Bias-free conv with an HWIO `weight`, rectangular kernels and an explicit matmul precision."""

  def __init__(self, in_ch: int, out_ch: int, kernel, *, stride=1, padding=0, dtype, precision):
    kh, kw = _pair(kernel)
    self.weight = nnx.Param(jnp.zeros((kh, kw, in_ch, out_ch)),
                            out_sharding=(None, None, "conv_in", "conv_out"))
    self.stride = _pair(stride)
    ph, pw = _pair(padding)
    self.padding = ((ph, ph), (pw, pw))
    self.dtype = dtype
    self.precision = precision

  def __call__(self, x):
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.weight[...].astype(self.dtype), self.stride, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=PRECISIONS[self.precision],
        preferred_element_type=jnp.float32)


class BatchNorm(nnx.Module):
  """Inference-only BatchNorm2d (running statistics, eps 1e-3), in float32."""

  def __init__(self, channels: int):
    self.weight = nnx.Param(jnp.ones((channels,)), out_sharding=("norm",))
    self.bias = nnx.Param(jnp.zeros((channels,)), out_sharding=("norm",))
    self.running_mean = nnx.Param(jnp.zeros((channels,)), out_sharding=("norm",))
    self.running_var = nnx.Param(jnp.ones((channels,)), out_sharding=("norm",))

  def __call__(self, x):
    scale = self.weight[...] * jax.lax.rsqrt(self.running_var[...] + BN_EPS)
    return (x.astype(jnp.float32) - self.running_mean[...]) * scale + self.bias[...]


class BasicConv2d(nnx.Module):
  """conv (no bias) -> BatchNorm -> ReLU, torchvision's `BasicConv2d`."""

  def __init__(self, in_ch: int, out_ch: int, kernel, *, stride=1, padding=0, dtype, precision):
    self.conv = Conv(in_ch, out_ch, kernel, stride=stride, padding=padding, dtype=dtype,
                     precision=precision)
    self.bn = BatchNorm(out_ch)

  def __call__(self, x):
    return jax.nn.relu(self.bn(self.conv(x)))


class Classifier(nnx.Module):
  """The 2048 -> 1008 head: `weight` stored [in, out], plus `bias`."""

  def __init__(self, d_in: int, d_out: int):
    self.weight = nnx.Param(jnp.zeros((d_in, d_out)), out_sharding=("embed", "vocab"))
    self.bias = nnx.Param(jnp.zeros((d_out,)), out_sharding=("vocab",))

  def __call__(self, x, *, bias: bool = True):
    y = jnp.dot(x, self.weight[...], precision=jax.lax.Precision.HIGHEST)
    return y + self.bias[...] if bias else y


def max_pool(x, stride: int, padding: int = 0):
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad)


def avg_pool_valid_only(x):
  """3x3, stride 1, padding 1, averaging over in-image pixels only (count_include_pad=False)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  return total / count


# ----------------------------------------------------------------------------- blocks

class InceptionA(nnx.Module):
  """Mixed_5b/5c/5d (pytorch-fid `FIDInceptionA`: valid-only average pool)."""

  def __init__(self, in_ch: int, pool_features: int, **kw):
    self.branch1x1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch5x5_1 = BasicConv2d(in_ch, 48, 1, **kw)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
    self.branch_pool = BasicConv2d(in_ch, pool_features, 1, **kw)

  def branches(self, x):
    return [self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(avg_pool_valid_only(x))]

  def __call__(self, x):
    return jnp.concatenate(self.branches(x), axis=-1)


class InceptionB(nnx.Module):
  """Mixed_6a (torchvision `InceptionB`, unpatched): 35x35 -> 17x17."""

  def __init__(self, in_ch: int, **kw):
    self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        max_pool(x, stride=2)], axis=-1)


class InceptionC(nnx.Module):
  """Mixed_6b..6e (pytorch-fid `FIDInceptionC`: valid-only average pool)."""

  def __init__(self, in_ch: int, c7: int, **kw):
    self.branch1x1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch7x7_1 = BasicConv2d(in_ch, c7, 1, **kw)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1, **kw)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
    self.branch_pool = BasicConv2d(in_ch, 192, 1, **kw)

  def branches(self, x):
    dbl = x
    for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                 self.branch7x7dbl_4, self.branch7x7dbl_5):
      dbl = conv(dbl)
    return [self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(avg_pool_valid_only(x))]

  def __call__(self, x):
    return jnp.concatenate(self.branches(x), axis=-1)


class InceptionD(nnx.Module):
  """Mixed_7a (torchvision `InceptionD`, unpatched): 17x17 -> 8x8."""

  def __init__(self, in_ch: int, **kw):
    self.branch3x3_1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
    self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

  def __call__(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool(x, stride=2)],
                           axis=-1)


class InceptionE(nnx.Module):
  """Mixed_7b (`FIDInceptionE_1`, valid-only average pool) and Mixed_7c (`FIDInceptionE_2`,
  max pool: the TF graph's quirk that pytorch-fid reproduces)."""

  def __init__(self, in_ch: int, pool: str, **kw):
    self.pool = pool
    self.branch1x1 = BasicConv2d(in_ch, 320, 1, **kw)
    self.branch3x3_1 = BasicConv2d(in_ch, 384, 1, **kw)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch_pool = BasicConv2d(in_ch, 192, 1, **kw)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = max_pool(x, stride=1, padding=1) if self.pool == "max" else avg_pool_valid_only(x)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
        self.branch_pool(pooled)], axis=-1)


# ----------------------------------------------------------------------------- network

class FIDInceptionV3(nnx.Module):
  """pytorch-fid's `fid_inception_v3()` (an `Inception3` with 1008 classes and patched blocks).

  `dtype` is the conv compute dtype (float32 for published-comparable numbers; bfloat16 trades
  exactness for speed) and `precision` the matmul precision of the convs ("highest" keeps
  float32 convs exact on TPUs, whose default passes are bfloat16).
  """

  def __init__(self, *, dtype=jnp.float32, precision: str = "highest"):
    if precision not in PRECISIONS:
      raise ValueError(f"precision {precision!r}: expected one of {sorted(PRECISIONS)}")
    kw = dict(dtype=jnp.dtype(dtype), precision=precision)
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
    self.Mixed_5b = InceptionA(192, 32, **kw)
    self.Mixed_5c = InceptionA(256, 64, **kw)
    self.Mixed_5d = InceptionA(288, 64, **kw)
    self.Mixed_6a = InceptionB(288, **kw)
    self.Mixed_6b = InceptionC(768, 128, **kw)
    self.Mixed_6c = InceptionC(768, 160, **kw)
    self.Mixed_6d = InceptionC(768, 160, **kw)
    self.Mixed_6e = InceptionC(768, 192, **kw)
    self.Mixed_7a = InceptionD(768, **kw)
    self.Mixed_7b = InceptionE(1280, "avg", **kw)
    self.Mixed_7c = InceptionE(2048, "max", **kw)
    self.fc = Classifier(POOL3_DIM, NUM_CLASSES)

  def __call__(self, images, *, preprocessing: str = "tf1") -> InceptionOutputs:
    """images: [N, H, W, 3] uint8 or float in [0, 255]."""
    x = preprocess(images, preprocessing)
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = max_pool(x, stride=2)  # [N, 73, 73, 64]
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = max_pool(x, stride=2)  # [N, 35, 35, 192]
    x = self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))
    x = self.Mixed_6c(self.Mixed_6b(x))
    branches = self.Mixed_6d.branches(x)  # branches[0] is TF's mixed_6/conv [N, 17, 17, 192]
    spatial = branches[0][..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)
    x = self.Mixed_6e(jnp.concatenate(branches, axis=-1))  # [N, 17, 17, 768]
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # [N, 8, 8, 2048]
    pool3 = jnp.mean(x, axis=(1, 2))
    return InceptionOutputs(pool3=pool3, spatial=spatial, logits=self.fc(pool3))
