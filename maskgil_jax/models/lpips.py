"""LPIPS perceptual distance (VGG16 variant), as LlamaGen's tokenizer loss uses it.

Five VGG16 feature maps (relu1_2 ... relu5_3) of both images are unit-normalised over channels,
their squared difference is weighted per channel by a 1x1 conv (`lin0` ... `lin4`), averaged
over space and summed. Inputs are NHWC in [-1, 1]. Attribute paths are those of LlamaGen's
PyTorch `LPIPS` module (`net.slice1.0.weight`, `lin0.model.1.weight`), with VGG layers keyed by
their index in torchvision's `vgg16().features`. The weights are never downloaded: see
`interop.vq_names.load_lpips`. The network is frozen; nothing here is trained.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax.models.layers_conv import Conv2d

VGG16_WIDTHS = (64, 128, 256, 512, 512)
# torchvision vgg16().features index of each 3x3 conv, grouped by LPIPS slice; every slice but
# the first starts with a 2x2 max-pool (indices 4, 9, 16, 23).
VGG16_SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# ImageNet statistics of images in [-1, 1] (LPIPS ScalingLayer). numpy, not jnp: a JAX array
# built at import would initialise the backend before jax.distributed.initialize() can run.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class NetLinLayer(nnx.Module):
  """The per-channel weighting of one feature map: `model.1` is a bias-free 1x1 conv
  (`model.0` is a dropout in PyTorch, inactive in the loss)."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.model = nnx.Dict({"1": Conv2d(channels, 1, 1, bias=False, rngs=rngs, dtype=dtype)})

  def __call__(self, x):
    return self.model["1"](x)


class VGG16Features(nnx.Module):
  """VGG16's conv layers up to relu5_3, returning the five LPIPS feature maps."""

  def __init__(self, widths=VGG16_WIDTHS, *, rngs: nnx.Rngs, dtype=jnp.float32):
    in_ch = 3
    for s, (indices, width) in enumerate(zip(VGG16_SLICES, widths), start=1):
      convs = {}
      for i in indices:
        convs[str(i)] = Conv2d(in_ch, width, 3, padding=1, rngs=rngs, dtype=dtype)
        in_ch = width
      setattr(self, f"slice{s}", nnx.Dict(convs))

  def __call__(self, x):
    feats = []
    for s, indices in enumerate(VGG16_SLICES, start=1):
      if s > 1:
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      layers = getattr(self, f"slice{s}")
      for i in indices:
        x = jax.nn.relu(layers[str(i)](x))
      feats.append(x)
    return feats


def _unit_channels(x, eps: float = 1e-10):
  return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + eps)


class LPIPS(nnx.Module):
  """`lpips(x, y)` -> per-image distances [B] (float32) for NHWC images in [-1, 1].

  `widths` other than VGG16's exist for tests; real weights need the default.
  """

  def __init__(self, *, rngs: nnx.Rngs, widths=VGG16_WIDTHS, dtype=jnp.float32):
    self.net = VGG16Features(widths, rngs=rngs, dtype=dtype)
    for k, width in enumerate(widths):
      setattr(self, f"lin{k}", NetLinLayer(width, rngs=rngs, dtype=dtype))

  def __call__(self, x, y):
    scale = lambda im: (im.astype(jnp.float32) - _SHIFT) / _SCALE
    fx, fy = self.net(scale(x)), self.net(scale(y))
    total = 0.0
    for k, (a, b) in enumerate(zip(fx, fy)):
      a, b = a.astype(jnp.float32), b.astype(jnp.float32)
      diff = jnp.square(_unit_channels(a) - _unit_channels(b))
      total = total + getattr(self, f"lin{k}")(diff).astype(jnp.float32).mean(axis=(1, 2, 3))
    return total
