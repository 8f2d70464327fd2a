"""The training input pipeline: one grain graph for every source, one entry point.

    iterator = make_pipeline(config.data, batch_size=config.batch_size, seed=config.seed)
    batch = next(iterator)   # {'image': float32 [B, H, W, 3] in [-1, 1], 'label': int32 [B]}
                             # or {'codes': int32 [B, h, w], 'label': int32 [B]} for 'codes'

B is the per-process batch (global batch / process count). The graph, in order:

  source -> shuffle (reshuffled every epoch) -> repeat
  -> per example: read, decode, fit, draw one view (random, seeded by seed and position)
  -> an unreadable example replaced by the next readable one (counted; unreadable.py)
  -> this process's rows of each global batch (global_batches.py) -> batch
  -> reader threads (a batch each) -> worker processes (data.num_workers > 0)
  -> pixels to [-1, 1] -> background prefetch -> the position, in global batches

Everything up to the rows is one stream for all processes, a function of (seed, position):
the global batches do not depend on the number of processes, threads or workers. The
iterator's `get_state()` (a small JSON-able dict: global batches taken, unreadable images
met; the checkpoint item `data_iter`) resumes it exactly, on any number of processes. The
image and code pipelines share the graph up to the view draw, so training on extracted codes
sees the same views in the same order as tokenizing the images on the fly.
"""
from __future__ import annotations

import grain
import numpy as np

from maskgil_jax.data import buckets as buckets_lib
from maskgil_jax.data.buckets import bucket_batches, pipeline_seeds, process_batches
from maskgil_jax.data import preprocess
from maskgil_jax.data.code_shards import CodeShardSource
from maskgil_jax.data.global_batches import GlobalBatchIterator
from maskgil_jax.data.unreadable import Unreadable
from maskgil_jax.data.caption_pipeline import caption_dataset
from maskgil_jax.data.captions import open_caption_source
from maskgil_jax.data.sources import DataError, open_image_source


class ImageExample(grain.transforms.RandomMap):
  """Record -> {'image': uint8 [S, S, 3], 'label': int32}, or `Unreadable`; with `size` (an
  aspect bucket's (h, w)) the image is fitted to [h, w, 3] and flipped at random instead."""

  def __init__(self, source, data, size: tuple[int, int] | None = None):
    self.source, self.size = source, size
    self.image_size, self.ten_crop, self.fit = data.image_size, data.ten_crop, data.fit
    self.base_size = (size if size is not None else
                      preprocess.base_size(data.image_size, data.ten_crop, data.crop_range))
    self.views = preprocess.num_views(data.ten_crop, data.random_flip)

  def random_map(self, record, rng: np.random.Generator):
    v = int(rng.integers(self.views))  # first draw: the code pipeline makes the same one
    try:
      pixels, label = self.source.load(record)
      base = preprocess.fit(pixels, self.base_size, self.fit)
    except preprocess.UnreadableImage as e:
      return Unreadable(self.source.describe(record), str(e))
    if self.size is not None:  # a bucket: the whole fitted image, mirrored for view 1
      image = np.ascontiguousarray(base[:, ::-1]) if v == 1 else base
    else:
      image = preprocess.view(base, v, self.image_size, self.ten_crop)
    return {"image": image, "label": np.int32(label)}


class CodeExample(grain.transforms.RandomMap):
  """Record -> {'codes': int32 [h, w] (one stored view, drawn at random), 'label': int32}."""

  def __init__(self, source: CodeShardSource):
    self.source = source

  def random_map(self, record, rng: np.random.Generator):
    v = int(rng.integers(self.source.meta.views))
    try:
      codes, label = self.source.load(record)
    except preprocess.UnreadableImage as e:
      return Unreadable(self.source.describe(record), str(e))
    return {"codes": codes[v], "label": np.int32(label)}


def to_model_batch(batch: dict) -> dict:
  if "image" in batch:
    batch = {**batch, "image": preprocess.to_model_range(batch["image"])}
  return batch


def check_data(data) -> None:
  """Refuses `config.data` values that would otherwise fail inside a reader thread."""
  if data.fit not in preprocess.FITS:
    raise DataError(f"data.fit: {data.fit!r} unknown; one of {preprocess.FITS}")
  if data.ten_crop and not data.crop_range >= 1.0:
    raise DataError(f"data.crop_range: {data.crop_range} must be >= 1 (ten crops are cut from "
                    "a crop_range-times larger centre crop)")
  if not (isinstance(data.image_size, int) and data.image_size > 0):
    raise DataError(f"data.image_size: must be a positive int, got {data.image_size!r}")
  for field in ("read_threads", "num_workers", "prefetch"):
    if not (isinstance(data[field], int) and data[field] >= 0):
      raise DataError(f"data.{field}: must be an int >= 0, got {data[field]!r}")


def open_source(data):
  """The source and its per-example transform for `config.data`."""
  check_data(data)
  if data.name == "codes":
    if not data.path:
      raise DataError("data.path: set it to a folder written by "
                      "`python -m maskgil_jax.extract_codes`")
    source = CodeShardSource(data.path)
    if source.meta.image_size != data.image_size:
      raise DataError(f"data.image_size={data.image_size} but the codes in {data.path} were "
                      f"extracted at {source.meta.image_size}px")
    return source, CodeExample(source)
  source = open_image_source(data)
  return source, ImageExample(source, data)


def _processes(batch_size: int, process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
  if batch_size <= 0 or batch_size % process_count:
    raise DataError(f"batch_size: {batch_size} must be a positive multiple of the "
                    f"{process_count} processes")
  return process_index, process_count


def make_dataset(data, batch_size: int, seed: int, *, start: int = 0,
                 **kwargs) -> grain.IterDataset:
  """The batched grain dataset of `config.data` for this process from global batch `start`
  (see module doc; arguments as `batch_dataset`)."""
  return _finish(batch_dataset(data, batch_size, seed, **kwargs), data, start)


def batch_dataset(data, batch_size: int, seed: int, *, shuffle: bool = True,
                  num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, text=None) -> grain.MapDataset:
  """Element k: this process's rows of global batch k of `config.data` (uint8 pixels).

  An image-caption source (data/captions.py) takes the caption graph of
  `caption_pipeline.py` (aspect buckets, text ids for `text` = config.text, or features).

  batch_size is the global batch; each process gets batch_size / process_count rows of each.
  num_epochs=None repeats forever (training); shuffle=False with num_epochs=1 reads the
  examples once in source order (the last partial global batch is dropped).
  """
  process_index, process_count = _processes(batch_size, process_index, process_count)
  caption_source = open_caption_source(data)
  if caption_source is not None:
    check_data(data)
    if text is None:
      raise DataError(f"data.name={data.name!r} holds captions: give the pipeline config.text")
    return caption_dataset(caption_source, data, text, batch_size, seed, process_index,
                           process_count, shuffle, num_epochs)
  if data.get("buckets") and data.name == "codes":
    raise DataError("data.buckets: extracted codes have one grid; aspect buckets need images "
                    "(a folder, a TFDS set or the demo set)")
  source, example = open_source(data)
  if data.get("buckets"):
    if data.ten_crop:
      raise DataError("data.ten_crop: aspect buckets cut one bucket-shaped view (set False)")
    return bucket_batches(source, buckets_lib.as_buckets(data.buckets),
                          lambda size: ImageExample(source, data, size), seed, batch_size,
                          process_index, process_count, shuffle, num_epochs, data.name)
  if len(source) == 0 or (num_epochs is not None and len(source) * num_epochs < batch_size):
    raise DataError(f"the data ({len(source)} examples x {num_epochs or 'all'} epochs) is "
                    f"smaller than one global batch of {batch_size}")
  return process_batches(grain.MapDataset.source(source), example, pipeline_seeds(seed),
                         batch_size, process_index, process_count, shuffle, num_epochs)


def _finish(ds: grain.MapDataset, data, start: int) -> grain.IterDataset:
  """From global batch `start`: reader threads, worker processes, pixels to [-1, 1],
  background prefetch (every graph ends so)."""
  it = ds[start:].to_iter_dataset(grain.ReadOptions(
      num_threads=data.read_threads, prefetch_buffer_size=max(2, data.read_threads)))
  if data.num_workers > 0:
    _allow_absl_flags_unparsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=data.num_workers, per_worker_buffer_size=max(data.prefetch, 1)))
  it = it.map(to_model_batch)
  if data.prefetch > 0:
    it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=data.prefetch)
  return it


def _allow_absl_flags_unparsed() -> None:
  """grain's worker start-up reads an absl flag; outside `absl.app.run` (tests, notebooks) the
  flags are unparsed and reading one raises, so take the defaults there."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_pipeline(data, batch_size: int, seed: int, **kwargs) -> GlobalBatchIterator:
  """A checkpointable iterator over batches of `config.data` (arguments as `make_dataset`):
  its state is the global batch it stands at, so it resumes on any number of processes."""
  ds = batch_dataset(data, batch_size, seed, **kwargs)  # data errors now, not at the first batch
  return GlobalBatchIterator(lambda start: _finish(ds, data, start))
