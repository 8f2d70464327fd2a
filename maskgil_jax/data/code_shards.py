"""Pre-tokenized datasets: ArrayRecord shards of image codes plus one `codes.json`.

Written by `python -m maskgil_jax.extract_codes`, read by the 'codes' pipeline. One record per
source image holds every view of it (LlamaGen stores ten-crop + flip variants; training draws
one per step):

  int64 source index | int64 label | codes [views, h, w] (uint16 when the codebook fits, else
  int32), little-endian.

Shard `codes-<start>-<stop>.array_record` holds the images of source indices [start, stop) in
order (minus unreadable ones), so sorted shard names give the source order, and an extraction
that is interrupted resumes by skipping the ranges whose shard exists. A shard only appears
under its final name once complete (written as `.tmp`, then renamed).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Iterable

import numpy as np

from maskgil_jax import files
from maskgil_jax.data.preprocess import UnreadableImage
from maskgil_jax.data.sources import DataError

FORMAT = "maskgil_jax.codes/1"
META_FILE = "codes.json"
SHARD_PATTERN = re.compile(r"codes-(\d{10})-(\d{10})\.array_record")
HEADER = np.dtype("<i8")


@dataclasses.dataclass(frozen=True)
class CodesMeta:
  """What a code folder holds; a resumed extraction must match it exactly."""
  source: str  # e.g. 'imagenet2012/train', 'demo/train', 'folder:/data/x'
  image_size: int
  grid: tuple[int, int]  # (h, w) codes per view
  views: int
  codebook_size: int
  ten_crop: bool
  random_flip: bool
  crop_range: float
  fit: str
  tokenizer: str  # the weights the codes were made with
  num_images: int  # images in the source split (before skipping unreadable ones)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype("<u2" if self.codebook_size <= 2**16 else "<i4")

  @property
  def record_bytes(self) -> int:
    return 2 * HEADER.itemsize + self.views * self.grid[0] * self.grid[1] * self.dtype.itemsize

  def to_json(self) -> str:
    return json.dumps({"format": FORMAT, **dataclasses.asdict(self)}, indent=1)

  @classmethod
  def from_json(cls, text: str) -> CodesMeta:
    d = json.loads(text)
    if d.pop("format", None) != FORMAT:
      raise ValueError(f"not a {FORMAT} file")
    d["grid"] = tuple(d["grid"])
    return cls(**d)


def read_meta(folder: str | os.PathLike) -> CodesMeta:
  path = pathlib.Path(folder) / META_FILE
  if not path.is_file():
    raise DataError(f"data.path: {path} not found; is {folder} a folder written by "
                    "`python -m maskgil_jax.extract_codes`?")
  try:
    return CodesMeta.from_json(path.read_text())
  except (ValueError, TypeError, KeyError) as e:
    raise DataError(f"{path}: unreadable code-folder description ({e})") from e


def write_meta(folder: str | os.PathLike, meta: CodesMeta) -> None:
  """Creates `codes.json`, or checks that an existing one (a resumed run) describes `meta`."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  if (folder / META_FILE).exists():
    existing = read_meta(folder)
    if existing != meta:
      raise DataError(f"{folder} holds codes made with other settings:\n  there: {existing}\n"
                      f"  now:   {meta}\nuse another --out folder or the same settings")
    return
  files.write_text(folder / META_FILE, meta.to_json())  # any process may


def encode_record(index: int, label: int, codes: np.ndarray, meta: CodesMeta) -> bytes:
  shape = (meta.views, *meta.grid)
  if codes.shape != shape:
    raise ValueError(f"codes of shape {codes.shape}, expected {shape}")
  return (np.array([index, label], HEADER).tobytes()
          + np.ascontiguousarray(codes, meta.dtype).tobytes())


def decode_record(data: bytes, meta: CodesMeta) -> tuple[int, int, np.ndarray]:
  """(source index, label, codes int32 [views, h, w]); UnreadableImage if the size is wrong."""
  if len(data) != meta.record_bytes:
    raise UnreadableImage(f"code record of {len(data)} bytes, expected {meta.record_bytes}")
  index, label = np.frombuffer(data, HEADER, count=2)
  codes = np.frombuffer(data, meta.dtype, offset=2 * HEADER.itemsize)
  return int(index), int(label), codes.reshape(meta.views, *meta.grid).astype(np.int32)


def shard_name(start: int, stop: int) -> str:
  return f"codes-{start:010d}-{stop:010d}.array_record"


def list_shards(folder: str | os.PathLike) -> list[pathlib.Path]:
  """Complete shards in source order (temporary files of an interrupted run are ignored)."""
  return sorted(p for p in pathlib.Path(folder).iterdir() if SHARD_PATTERN.fullmatch(p.name))


def write_shard(folder: str | os.PathLike, start: int, stop: int, records: Iterable[bytes]) -> int:
  """Writes the records of source range [start, stop) atomically; returns how many."""
  from array_record.python.array_record_module import ArrayRecordWriter
  final = pathlib.Path(folder) / shard_name(start, stop)
  count = 0
  with files.atomic_path(final) as tmp:
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    try:
      for r in records:
        writer.write(r)
        count += 1
    finally:
      writer.close()
  return count


class CodeShardSource:
  """All records of a code folder, in source order, as a random-access grain source."""

  def __init__(self, folder: str | os.PathLike):
    import grain
    self.folder = pathlib.Path(folder)
    if not self.folder.is_dir():
      raise DataError(f"data.path: {self.folder} is not a folder of code shards")
    self.meta = read_meta(self.folder)
    shards = list_shards(self.folder)
    if not shards:
      raise DataError(f"data.path: {self.folder} has no complete code shards")
    self.records = grain.sources.ArrayRecordDataSource([str(p) for p in shards])
    if len(self.records) == 0:
      raise DataError(f"data.path: the code shards in {self.folder} hold no records")

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> tuple[int, bytes]:
    return index, self.records[index]

  def load(self, record: tuple[int, bytes]) -> tuple[np.ndarray, int]:
    """(codes int32 [views, h, w], label)."""
    _, label, codes = decode_record(record[1], self.meta)
    return codes, label

  def describe(self, record: tuple[int, bytes]) -> str:
    return f"{self.folder} record {record[0]}"
