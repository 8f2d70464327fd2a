"""MaskGIL's `FID_sample.py` image conversion: each image stretched by its own min and max.

The public MaskGIL code writes its FID samples as `(x - x.min()) / (x.max() - x.min())` per
image (over all pixels and channels), times 255, cast to uint8 (truncation, not rounding),
where the usual conversion (ours, LlamaGen's, ADM's samplers) is the fixed map
`round((x + 1) * 127.5)` clipped to [0, 255]. The stretch sends every image's darkest value to
0 and its brightest to 255, so it changes the samples' statistics, hence FID; which of the two
gave the paper's numbers is not known (docs/evaluation.md). `evaluate --per-image-minmax`
applies it to the samples so both can be measured.

Applied to uint8 samples (what `sample` stores) it is the same map on their values, except that
the decoder's float output was clipped to [-1, 1] and rounded first: where the output went
beyond [-1, 1] the original stretched the unclipped range. `per_image_minmax` also takes float
images (the decoder's output) and then matches the original exactly.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def per_image_minmax(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, C] of images [N, H, W, C] (any real dtype), each rescaled as
  `FID_sample.py` does, in float32 as its torch code computes. A constant image (the original
  divides 0 by 0 there) becomes all zeros."""
  x = np.asarray(images).astype(np.float32)
  lo = x.min(axis=(1, 2, 3), keepdims=True)
  span = x.max(axis=(1, 2, 3), keepdims=True) - lo
  with np.errstate(invalid="ignore", divide="ignore"):
    unit = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
  return (unit * np.float32(255)).astype(np.uint8)  # the float -> uint8 cast truncates


class PerImageMinMax:
  """An image set (`image_sets.open_image_set`) whose batches come out `per_image_minmax`ed."""

  def __init__(self, images):
    self.images = images
    self.path = images.path
    self.num_images = images.num_images
    self.image_shape = images.image_shape

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    for batch in self.images.batches(batch_size):
      yield per_image_minmax(batch)
