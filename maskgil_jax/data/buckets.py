"""Aspect-ratio buckets: images of any shape trained at a few fixed (height, width) sizes.

`config.data.buckets` lists (height, width) pixel sizes, each a multiple of the tokenizer's
downsampling (checked by `configlib.finalize`). When the pipeline is built, every image goes
to the bucket nearest its aspect ratio (|log(w/h) - log(bw/bh)| smallest, read from the image
header only), and is later resized to cover the bucket and centre-cut (`preprocess.fit`).
Each bucket is its own shuffled, repeated stream cut into global batches; the streams are
interleaved global batch by global batch with weights proportional to the buckets' image counts
(grain's `MapDataset.mix`: the bucket of global batch k is a deterministic function of k and
the weights), so every global batch comes from one bucket, every process reads its rows of the
same one, no batch is padded beyond its bucket, and the checkpointed position (the global batch
number) fixes the bucket sequence too.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from maskgil_jax.data.preprocess import UnreadableImage

logger = logging.getLogger(__name__)


def as_buckets(buckets) -> tuple[tuple[int, int], ...]:
  """config.data.buckets (a list of [h, w] pairs) as a tuple of (h, w) int pairs."""
  return tuple((int(b[0]), int(b[1])) for b in buckets)


def bucket_name(bucket: tuple[int, int]) -> str:
  return f"{bucket[0]}x{bucket[1]}"


def nearest(size: tuple[int, int], buckets) -> int:
  """Index of the bucket whose aspect ratio is nearest that of an (h, w) image (log scale, so
  2:1 and 1:2 are equally far from 1:1; the first bucket wins a tie)."""
  ratio = math.log(size[1] / size[0])
  return int(np.argmin([abs(ratio - math.log(w / h)) for h, w in buckets]))


def assign(source, buckets) -> np.ndarray:
  """int32 [len(source)]: each record's bucket. An image whose header cannot be read goes to
  bucket 0, where reading it fails again and it is skipped and counted like any other."""
  out = np.zeros(len(source), np.int32)
  unreadable = 0
  for i in range(len(source)):
    try:
      out[i] = nearest(source.size(source[i]), buckets)
    except UnreadableImage:
      unreadable += 1
  if unreadable:
    logger.warning("%d images have unreadable headers; they will be skipped", unreadable)
  return out


class Subset:
  """Records `indices` of a source, as a grain source (picklable, random access)."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[int(self.indices[index])]
