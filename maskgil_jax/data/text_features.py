"""Pre-extracted caption features: shards of frozen-T5 outputs written by `extract_text`.

A folder holds `text_features.json` (width, max_length, record count, shard size, the data
source it was made from) and, per shard of `shard_size` source records, two `.npy` files:
`{start}-{stop}.features.npy` (float32 [rows, width]: the valid T5 rows of every caption of
every record, in order) and `{start}-{stop}.index.npy` (int64 [captions, 4]: record, caption
number, first row, row count). The index is renamed into place last, so a shard exists exactly
when it is complete and an interrupted extraction resumes at the first missing shard.
Features are read memory-mapped and left-padded on the way out, as the trainer's on-the-fly
encoder does, so training on them equals encoding captions while training.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from maskgil_jax import files
from maskgil_jax.data.sources import DataError

META_FILE = "text_features.json"


@dataclasses.dataclass(frozen=True)
class FeaturesMeta:
  width: int
  max_length: int
  num_records: int
  shard_size: int
  source: str  # data.name:path:split[:caption_key] the records and captions are numbered in

  def shards(self) -> list[tuple[int, int]]:
    return [(s, min(s + self.shard_size, self.num_records))
            for s in range(0, self.num_records, self.shard_size)]


def source_id(data) -> str:
  """What the features were made from: a TFDS set's caption feature is part of it (another
  `data.caption_key` numbers other captions), added only when set so folders made from the
  other sources keep their id."""
  key = data.get("caption_key") or ""
  return f"{data.name}:{data.path}:{data.split}" + (f":{key}" if key else "")


def write_meta(folder, meta: FeaturesMeta) -> None:
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  files.write_text(folder / META_FILE, json.dumps(dataclasses.asdict(meta), indent=1))


def read_meta(folder) -> FeaturesMeta:
  path = pathlib.Path(folder) / META_FILE
  if not path.is_file():
    raise DataError(f"data.text_features: {folder} has no {META_FILE} (write it with "
                    "`python -m maskgil_jax.extract_text`)")
  return FeaturesMeta(**json.loads(path.read_text()))


def shard_paths(folder, start: int, stop: int) -> tuple[pathlib.Path, pathlib.Path]:
  base = pathlib.Path(folder) / f"{start:09d}-{stop:09d}"
  return base.with_suffix(".features.npy"), base.with_suffix(".index.npy")


def shard_done(folder, start: int, stop: int) -> bool:
  return shard_paths(folder, start, stop)[1].is_file()


def write_shard(folder, start: int, stop: int, entries) -> None:
  """`entries`: (record, caption number, features [n, width] of the valid rows) in order."""
  feats, index, row = [], [], 0
  for record, caption, f in entries:
    feats.append(np.asarray(f, np.float32))
    index.append((record, caption, row, len(f)))
    row += len(f)
  features_path, index_path = shard_paths(folder, start, stop)
  width = feats[0].shape[1] if feats else 0
  for path, array in ((features_path, np.concatenate(feats) if feats else np.zeros((0, width),
                                                                                   np.float32)),
                      (index_path, np.array(index, np.int64).reshape(-1, 4))):
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
      np.save(f, array)  # the index goes last: its presence marks the shard complete


def check_array(path: pathlib.Path, dtype, shape: tuple) -> None:
  """DataError naming `path` unless it is a `.npy` of `dtype` and `shape` (None: any length).
  Memory-mapped, so only the header is read; a file of Python objects (which `np.load`
  refuses without pickles, deep inside the input pipeline) or of another layout is caught
  when the folder opens."""
  try:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"data.text_features: {path} is not a readable array file ({e}); rerun "
                    "extract_text into a new folder") from None
  found_shape, found_dtype = array.shape, array.dtype
  del array
  want = np.dtype(dtype)
  fits = len(found_shape) == len(shape) and all(
      s is None or s == n for s, n in zip(shape, found_shape))
  if found_dtype != want or not fits:
    shown = "[" + ", ".join("n" if s is None else str(s) for s in shape) + "]"
    raise DataError(f"data.text_features: {path} holds {found_dtype} {list(found_shape)}, "
                    f"not {want} {shown} as extract_text writes it; rerun extract_text into a "
                    "new folder")


class TextFeatureStore:
  """Left-padded caption features [max_length, width] + mask by (record, caption number)."""

  def __init__(self, folder, data=None, max_length: int | None = None):
    self.folder = pathlib.Path(folder)
    self.meta = read_meta(folder)
    missing = [s for s in self.meta.shards() if not shard_done(folder, *s)]
    if missing:
      raise DataError(f"data.text_features: {folder} lacks {len(missing)} of "
                      f"{len(self.meta.shards())} shards (first: records {missing[0][0]}.."
                      f"{missing[0][1] - 1}); rerun extract_text to finish it")
    for start, stop in self.meta.shards():  # headers only: a bad file fails here, not in
      features_path, index_path = shard_paths(folder, start, stop)  # a reader thread
      check_array(features_path, np.float32, (None, self.meta.width))
      check_array(index_path, np.int64, (None, 4))
    if data is not None and self.meta.source != source_id(data):
      raise DataError(f"data.text_features: {folder} was extracted from {self.meta.source}, "
                      f"not {source_id(data)}")
    if max_length is not None and max_length != self.meta.max_length:
      raise DataError(f"data.text_features: {folder} holds {self.meta.max_length} caption "
                      f"slots but text.max_length is {max_length}")
    self._cache = {}

  def __getstate__(self):
    return {**self.__dict__, "_cache": {}}  # memory maps are reopened in worker processes

  def _shard(self, record: int):
    start = record // self.meta.shard_size * self.meta.shard_size
    if start not in self._cache:
      stop = min(start + self.meta.shard_size, self.meta.num_records)
      features_path, index_path = shard_paths(self.folder, start, stop)
      index = np.load(index_path)
      lookup = {(int(r), int(c)): (int(o), int(n)) for r, c, o, n in index}
      self._cache[start] = (np.load(features_path, mmap_mode="r"), lookup)
    return self._cache[start]

  def num_captions(self, record: int) -> int:
    _, lookup = self._shard(record)
    return sum(1 for r, _ in lookup if r == record)

  def get(self, record: int, caption: int) -> tuple[np.ndarray, np.ndarray]:
    features, lookup = self._shard(record)
    if (record, caption) not in lookup:
      raise DataError(f"data.text_features: no features for record {record} caption {caption}")
    offset, n = lookup[(record, caption)]
    length, width = self.meta.max_length, self.meta.width
    out = np.zeros((length, width), np.float32)
    out[length - n:] = features[offset:offset + n]
    mask = np.arange(length) >= length - n
    return out, mask
