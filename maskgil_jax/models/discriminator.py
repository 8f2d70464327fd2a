"""The PatchGAN discriminator of LlamaGen's tokenizer loss (pix2pix / taming `NLayerDiscriminator`).

4x4 convs: stride 2 for the first `n_layers`, then stride 1, each followed by BatchNorm (not
after the first) and LeakyReLU(0.2); a last 4x4 conv gives one logit per patch. Input NHWC in
[-1, 1], output [B, h', w', 1] (30x30 patches for 256px images with 3 layers).

Attribute paths follow the PyTorch `main` Sequential (`main.0.weight`, `main.3.weight`, ...).
BatchNorm always normalises with the statistics of the batch it is given, as the reference does
in training mode (the only mode it is used in); it keeps no running averages, so nothing is
updated during a call.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax.models.layers_conv import Conv2d


class BatchNorm(nnx.Module):
  """Batch-statistics normalisation over (B, H, W) with a learned scale and shift."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, eps: float = 1e-5,
               param_dtype=jnp.float32):
    self.eps = eps
    w = 1.0 + 0.02 * jax.random.normal(rngs.params(), (channels,), param_dtype)
    self.weight = nnx.Param(w, out_sharding=("norm",))
    self.bias = nnx.Param(jnp.zeros((channels,), param_dtype), out_sharding=("norm",))

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = xf.mean(axis=(0, 1, 2))
    var = jnp.square(xf - mean).mean(axis=(0, 1, 2))
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]
    return y.astype(x.dtype)


class PatchGANDiscriminator(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs, in_channels: int = 3, channels: int = 64,
               n_layers: int = 3, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, init_std=0.02, dtype=dtype, param_dtype=param_dtype)
    layers = {"0": Conv2d(in_channels, channels, 4, stride=2, padding=1, **kw)}
    leaky = ["0"]  # layers followed by LeakyReLU(0.2) (main.1, main.4, ...)
    index = 2
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2 ** n, 8)
      stride = 2 if n < n_layers else 1
      layers[str(index)] = Conv2d(channels * prev, channels * mult, 4, stride=stride, padding=1,
                                  bias=False, **kw)
      layers[str(index + 1)] = BatchNorm(channels * mult, rngs=rngs, param_dtype=param_dtype)
      leaky.append(str(index + 1))
      index += 3  # conv, norm, LeakyReLU
    layers[str(index)] = Conv2d(channels * mult, 1, 4, padding=1, **kw)
    self.order = tuple(sorted(layers, key=int))
    self.leaky = tuple(leaky)
    self.main = nnx.Dict(layers)

  def __call__(self, x):
    for key in self.order:
      x = self.main[key](x)
      if key in self.leaky:
        x = jax.nn.leaky_relu(x, 0.2)
    return x.astype(jnp.float32)
