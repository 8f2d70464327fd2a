"""The image-caption training pipeline: aspect buckets, one caption drawn per epoch, text ids
for the frozen T5 or pre-extracted features.

    batch = next(iterator)   # one bucket's shape, B = per-process batch:
    {'image': float32 [B, H, W, 3] in [-1, 1],
     'text_ids': int32 [B, P], 'text_mask': int32 [B, P]}      (T5 encodes them in the step)
     or 'caption': float32 [B, P, C], 'caption_mask': bool [B, P]   (data.text_features)

The graph per bucket is the class pipeline's (`buckets.process_batches`): the bucket's
records -> shuffle -> repeat -> per example: read, fit to the bucket, flip, draw a caption ->
unreadable ones replaced (counted) -> this process's rows of each global batch -> batch; then
the buckets' global batches are interleaved (`buckets.py`, grain's `MapDataset.mix`: global
batch k's bucket is a function of k and the bucket sizes). Everything random is a function of
(seed, epoch, position), the same for every number of processes, so on-the-fly text and
pre-extracted features see the same captions in the same order, and the iterator resumes
exactly from its global batch.
"""
from __future__ import annotations

import grain
import numpy as np

from maskgil_jax.data import buckets as buckets_lib
from maskgil_jax.data import preprocess
from maskgil_jax.data.unreadable import Unreadable
from maskgil_jax.data.sources import DataError


class CaptionExample(grain.transforms.RandomMap):
  """Record -> {'image': uint8 [h, w, 3], text ids or features}, or `Unreadable`."""

  def __init__(self, source, data, size: tuple[int, int], text_cfg, features=None):
    self.source, self.size, self.fit = source, size, data.fit
    self.flip = bool(data.random_flip)
    self.max_length = int(text_cfg.max_length)
    self.encoder_folder = text_cfg.encoder
    self.features = features  # a TextFeatureStore, or None to tokenize here
    self._tokenizer = None

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None}

  def tokenize(self, caption: str):
    if self._tokenizer is None:
      from maskgil_jax.text.tokenizer import T5Tokenizer
      self._tokenizer = T5Tokenizer(self.encoder_folder)
    ids, mask = self._tokenizer([caption], self.max_length)
    return ids[0], mask[0]

  def random_map(self, record, rng: np.random.Generator):
    flip = bool(rng.integers(2)) and self.flip  # draws in a fixed order: view, then caption
    pick = int(rng.integers(1 << 30))
    index = record[0] if isinstance(record, tuple) else record
    try:
      pixels, captions = self.source.load(record)
      image = preprocess.fit(pixels, self.size, self.fit)
    except preprocess.UnreadableImage as e:
      return Unreadable(self.source.describe(record), str(e))
    if flip:
      image = np.ascontiguousarray(image[:, ::-1])
    c = pick % len(captions)
    if self.features is not None:
      feats, mask = self.features.get(int(index), c)
      return {"image": image, "caption": feats, "caption_mask": mask}
    ids, mask = self.tokenize(captions[c])
    return {"image": image, "text_ids": ids, "text_mask": mask}


def caption_dataset(source, data, text_cfg, batch_size: int, seed: int, process_index: int,
                    process_count: int, shuffle: bool, num_epochs) -> grain.MapDataset:
  """The per-bucket global batches, interleaved (module doc); `source` is opened already.
  Element k: this process's rows of global batch k."""
  buckets = buckets_lib.as_buckets(data.get("buckets") or [(data.image_size, data.image_size)])
  if data.ten_crop:
    raise DataError("data.ten_crop: caption pipelines cut one bucket-shaped view (set False)")
  if getattr(source, "skipped_empty", 0):
    import logging
    logging.getLogger(__name__).warning(
        "%d images without a non-empty caption were skipped", source.skipped_empty)
  features = None
  if data.get("text_features"):
    from maskgil_jax.data.text_features import TextFeatureStore
    features = TextFeatureStore(data.text_features, data, text_cfg.max_length)
    if features.meta.num_records != len(source):
      raise DataError(f"data.text_features: {data.text_features} covers "
                      f"{features.meta.num_records} records, the source has {len(source)}")
  elif not text_cfg.encoder:
    raise DataError("text.encoder: caption data needs the T5 folder to tokenize captions (or "
                    "pre-extracted features in data.text_features)")
  return buckets_lib.bucket_batches(source, buckets,
                        lambda size: CaptionExample(source, data, size, text_cfg, features),
                        seed, batch_size, process_index, process_count, shuffle, num_epochs,
                        data.name)
