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

import grain
import numpy as np

from maskgil_jax.data.global_batches import ProcessRows
from maskgil_jax.data.preprocess import UnreadableImage
from maskgil_jax.data.sources import DataError
from maskgil_jax.data.unreadable import ReplaceUnreadable

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


# ---- global batches per bucket, interleaved ------------------------------------------------
def pipeline_seeds(seed: int) -> tuple[int, int]:
  """(shuffle seed, per-example seed), each in grain's 32-bit range, from the config seed."""
  a, b = np.random.SeedSequence(seed).generate_state(2)
  return int(a), int(b)


def process_batches(ds: grain.MapDataset, example, seeds: tuple[int, int], batch_size: int,
                    process_index: int, process_count: int, shuffle: bool,
                    num_epochs) -> grain.MapDataset:
  """This process's rows of every global batch of the stream over `ds` (a MapDataset of
  records): shuffled with seeds[0] (every epoch anew), repeated, `example` (a RandomMap) drawn
  with seeds[1] at each stream position, unreadable examples replaced. Element k is this
  process's [batch_size / process_count] rows of global batch k."""
  if shuffle:
    ds = ds.shuffle(seed=seeds[0])
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ReplaceUnreadable(ds.random_map(example, seed=seeds[1]))
  per_process = batch_size // process_count
  return ProcessRows(ds, batch_size, process_index, process_count).batch(
      per_process, drop_remainder=True)


def bucket_batches(source, buckets, example_for, seed: int, batch_size: int,
                   process_index: int, process_count: int, shuffle: bool, num_epochs,
                   what: str) -> grain.MapDataset:
  """`process_batches` per aspect bucket, their global batches interleaved (buckets.py).

  Each record goes to the bucket nearest its aspect ratio; `example_for((h, w))` is the
  RandomMap that cuts a bucket's examples. Bucket b draws with the seeds + b.
  """
  assignment = (assign(source, buckets) if len(buckets) > 1
                else np.zeros(len(source), np.int32))
  shuffle_seed, example_seed = pipeline_seeds(seed)
  streams, weights = [], []
  for b, size in enumerate(buckets):
    indices = np.nonzero(assignment == b)[0]
    if len(indices) == 0:
      continue
    if num_epochs is not None and len(indices) * num_epochs < batch_size:
      raise DataError(f"data.buckets: bucket {bucket_name(size)} has "
                      f"{len(indices)} images x {num_epochs} epochs, less than one global "
                      f"batch of {batch_size}")
    streams.append(process_batches(
        grain.MapDataset.source(Subset(source, indices)), example_for(size),
        (shuffle_seed + b, example_seed + b), batch_size, process_index, process_count,
        shuffle, num_epochs))
    weights.append(float(len(indices)))  # every global batch is one bucket's, alike everywhere
  if not streams:
    raise DataError(f"data.buckets: no image of {what} falls in any bucket")
  if len(streams) == 1:
    return streams[0]
  return grain.MapDataset.mix(streams, weights)
