"""Random-access image sources: the built-in demo set, a folder of class sub-folders, TFDS.

A source is what grain's `MapDataset.source` wants (`len` and cheap, picklable `__getitem__`
records) plus `load(record) -> (pixels, label)`, which does the expensive part (reading and
decoding) inside grain's reader threads or worker processes. `load` raises `UnreadableImage`
for a file that cannot be read or decoded, so the pipeline can skip it; `describe` names the
record in that report.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from maskgil_jax.configlib import ConfigError
from maskgil_jax.data.demo_set import load_demo
from maskgil_jax.data.preprocess import UnreadableImage, decode_image, header_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BUILTIN_SOURCES = ("demo", "folder", "codes")  # any other data.name is a TFDS dataset


class DataError(ConfigError):
  """A data source that cannot be opened: missing folder, unknown dataset, empty split.

  A ConfigError, so every command reports it as a one-line user error naming the field."""


class DemoSource:
  """The shipped Fashion-MNIST subset ('train' or held-out 'test'), held in memory."""

  def __init__(self, split: str):
    try:
      self.images, self.labels = load_demo(split)
    except ValueError as e:
      raise DataError(f"data.split: {e}") from e

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> int:
    return index

  def load(self, record: int) -> tuple[np.ndarray, int]:
    return self.images[record], int(self.labels[record])

  def size(self, record: int) -> tuple[int, int]:
    return tuple(self.images.shape[1:3])

  def describe(self, record: int) -> str:
    return f"demo image {record}"


class FolderSource:
  """`root/<class name>/**/<image file>`; labels are class folders in sorted order."""

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise DataError(f"data.path: {self.root} is not a folder (expected one sub-folder per class)")
    self.classes = sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith("."))
    if not self.classes:
      raise DataError(f"data.path: {self.root} has no class sub-folders")
    paths, labels = [], []
    for label, name in enumerate(self.classes):
      for dirpath, dirnames, filenames in os.walk(self.root / name):
        dirnames.sort()
        rel = pathlib.Path(dirpath).relative_to(self.root)
        for f in sorted(filenames):
          if f.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(str(rel / f))
            labels.append(label)
    if not paths:
      raise DataError(f"data.path: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                      f"under {self.root}")
    self.paths = np.array(paths)  # one compact array, cheap to send to worker processes
    self.labels = np.array(labels, np.int32)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> int:
    return index

  def load(self, record: int) -> tuple[np.ndarray, int]:
    try:
      data = (self.root / self.paths[record]).read_bytes()
    except OSError as e:
      raise UnreadableImage(f"cannot read: {e}") from e
    return decode_image(data), int(self.labels[record])

  def size(self, record: int) -> tuple[int, int]:
    """(height, width) from the file's header (aspect buckets)."""
    return header_size(str(self.root / self.paths[record]))

  def describe(self, record: int) -> str:
    return str(self.root / self.paths[record])


class TfdsSource:
  """A TFDS dataset prepared as ArrayRecord, read through `tfds.data_source`.

  Images come as encoded bytes (`SkipDecoding`) and are decoded here with PIL, so a corrupt
  image is skipped like any other instead of failing inside TFDS.
  """

  def __init__(self, name: str, split: str, data_dir: str = ""):
    import tensorflow_datasets as tfds  # heavy (TensorFlow); only this source needs it
    self.name, self.split = name, split
    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False,
                                     decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:
      raise DataError(
          f"data.name={name!r} split={split!r}: cannot open it with tfds.data_source "
          f"(data_dir={data_dir or 'TFDS default'}): {str(e).splitlines()[0]}\n"
          f"Built-in sources are {BUILTIN_SOURCES}; a TFDS dataset must be prepared once as "
          f"ArrayRecord, e.g. `tfds build {name} --file_format=array_record "
          f"--manual_dir=DIR_WITH_THE_DOWNLOADED_TARS`") from e
    if len(self.source) == 0:
      raise DataError(f"data.name={name!r} split={split!r} is empty")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> tuple[int, dict]:
    return index, self.source[index]

  def load(self, record: tuple[int, dict]) -> tuple[np.ndarray, int]:
    _, example = record
    return decode_image(example["image"]), int(example["label"])

  def size(self, record: tuple[int, dict]) -> tuple[int, int]:
    return header_size(bytes(record[1]["image"]))

  def describe(self, record: tuple[int, dict]) -> str:
    return f"{self.name}/{self.split} example {record[0]}"


def open_image_source(data) -> DemoSource | FolderSource | TfdsSource:
  """The image source `config.data` names ('demo', 'folder', or a TFDS dataset name)."""
  if data.name == "demo":
    return DemoSource(data.split)
  if data.name == "folder":
    if not data.path:
      raise DataError("data.path: set it to the folder of class sub-folders for data.name='folder'")
    return FolderSource(data.path)
  if data.name == "codes":
    raise DataError("data.name='codes' holds token codes, not images")
  return TfdsSource(data.name, data.split, data.tfds_data_dir)
