"""A small CNN that labels demo images: the judge of the demo's generated samples.

Trained once on the demo training split (`maskgil_jax.demo_quality`) and shipped beside the
demo data, so every run is judged by the same network, it gives two figures for a set of
generated images: how often it recognises the class they were asked
for, and the Frechet distance between its features of them and of held-out real images (an
FID whose feature network actually knows these 28px clothes, which Inception does not).

Four 3x3 convs (the last three stride 2), GroupNorm and swish, global mean pool to `features`
(the Frechet feature space), one linear layer to class logits. No BatchNorm and no dropout:
the model is a pure function of its parameters. Any input size works (the pool is global).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from maskgil_jax.models.layers import Linear
from maskgil_jax.models.layers_conv import Conv2d, GroupNorm, swish

WIDTHS = (16, 32, 64, 128)
GROUPS = 8


class DemoClassifier(nnx.Module):

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    chans = (3, *WIDTHS)
    self.convs = nnx.List([
        Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, rngs=rngs)
        for i in range(len(WIDTHS))])
    self.norms = nnx.List([GroupNorm(w, groups=GROUPS) for w in WIDTHS])
    self.head = Linear(WIDTHS[-1], num_classes, ("embed", "vocab"), std=0.01, rngs=rngs)

  @property
  def feature_dim(self) -> int:
    return WIDTHS[-1]

  def features(self, images):
    """float images [B, H, W, 3] in [-1, 1] -> pooled features [B, feature_dim] (float32)."""
    x = images.astype(jnp.float32)
    for conv, norm in zip(self.convs, self.norms):
      x = swish(norm(conv(x)))
    return x.mean(axis=(1, 2))

  def __call__(self, images):
    """Class logits [B, num_classes]."""
    return self.head(self.features(images))
