"""Image-caption sources: a folder of images with same-named `.txt` captions, a JSONL manifest,
a TFDS dataset with a caption feature, and the demo's captioned Fashion-MNIST.

Each source is what grain's `MapDataset.source` wants (`len`, cheap picklable records) plus
`load(record) -> (pixels, captions)` (the expensive read, inside reader threads; raises
`UnreadableImage` so the pipeline skips and counts it), `size(record) -> (h, w)` (read from
the image header only, to pick the aspect bucket), `captions_of(record)` (without the image,
for `extract_text`) and `describe(record)`. An image may have
several captions (lines of its `.txt`, a list in the manifest, TFDS's caption list): the
example transform draws one per epoch. Images whose captions are all empty are dropped when the
source is opened and counted in `skipped_empty` (a TFDS set is not scanned: its empty examples
are skipped when read, see `TfdsCaptionSource`); a source left with no captioned image is a
`DataError` naming the field.
"""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from maskgil_jax.data.preprocess import UnreadableImage, decode_image, header_size
from maskgil_jax.data.sources import IMAGE_EXTENSIONS, DataError
from maskgil_jax.text_files import read_lines

CAPTION_SOURCES = ("caption_folder", "caption_jsonl", "demo_captions")  # or TFDS + caption_key


def clean_captions(captions) -> tuple[str, ...]:
  """The non-empty captions (whitespace stripped) of a string or a list of strings."""
  if isinstance(captions, (str, bytes)):
    captions = [captions]
  out = []
  for c in captions:
    c = c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
    if c.strip():
      out.append(c.strip())
  return tuple(out)


class _ListedCaptions:
  """Images by path with their caption tuples (the folder and manifest sources)."""

  def __init__(self, field: str, where, paths: list[str], captions: list[tuple[str, ...]],
               skipped_empty: int):
    if not paths:
      raise DataError(f"{field}: no image with a non-empty caption in {where} "
                      f"({skipped_empty} images had no or only empty captions)")
    self.paths = np.array(paths)
    self.captions = [c for c in captions]
    self.skipped_empty = skipped_empty

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> int:
    return index

  def load(self, record: int) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
      data = pathlib.Path(self.paths[record]).read_bytes()
    except OSError as e:
      raise UnreadableImage(f"cannot read: {e}") from e
    return decode_image(data), self.captions[record]

  def size(self, record: int) -> tuple[int, int]:
    return header_size(str(self.paths[record]))

  def captions_of(self, record: int) -> tuple[str, ...]:
    return self.captions[record]

  def describe(self, record: int) -> str:
    return str(self.paths[record])


class CaptionFolderSource(_ListedCaptions):
  """`root/**/name.jpg` with `root/**/name.txt` beside it: one caption per non-empty line."""

  def __init__(self, root: str | os.PathLike):
    root = pathlib.Path(root)
    if not root.is_dir():
      raise DataError(f"data.path: {root} is not a folder (expected images with same-named "
                      ".txt captions)")
    paths, captions, empty = [], [], 0
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      names = set(filenames)
      for f in sorted(filenames):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in IMAGE_EXTENSIONS:
          continue
        text = stem + ".txt"
        caps = (clean_captions(read_lines(pathlib.Path(dirpath, text), "data.path: caption "
                                          "file")) if text in names else ())
        if not caps:
          empty += 1
          continue
        paths.append(os.path.join(dirpath, f))
        captions.append(caps)
    super().__init__("data.path", root, paths, captions, empty)


class CaptionJsonlSource(_ListedCaptions):
  """A manifest of `{"image": path, "caption": text or [texts]}` lines; relative image paths
  are read from the manifest's folder. Lines for the same image add captions to it."""

  def __init__(self, manifest: str | os.PathLike):
    manifest = pathlib.Path(manifest)
    if not manifest.is_file():
      raise DataError(f"data.path: {manifest} is not a file (expected a JSONL manifest of "
                      '{"image": path, "caption": text} lines)')
    by_image: dict[str, list[str]] = {}
    empty = 0
    for n, line in enumerate(read_lines(manifest, "data.path: manifest"), 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        image, caps = entry["image"], entry.get("caption", entry.get("captions", ""))
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"data.path: {manifest} line {n} is not a JSON object with 'image' "
                        f"and 'caption' ({e})") from e
      path = str(image) if os.path.isabs(str(image)) else str(manifest.parent / str(image))
      by_image.setdefault(path, []).extend(clean_captions(caps))
    paths, captions = [], []
    for path, caps in by_image.items():
      if caps:
        paths.append(path)
        captions.append(tuple(caps))
      else:
        empty += 1
    super().__init__("data.path", manifest, paths, captions, empty)


class TfdsCaptionSource:
  """A TFDS dataset (ArrayRecord) with an image and a caption feature; `caption_key` is the
  feature path, e.g. 'captions/text' for `coco_captions` (about five captions per image).

  The key is checked against the dataset's features when the source opens, so a typo, a group
  of features ('captions') or a non-text feature ('image/id') is one error naming
  `data.caption_key` and the text features there are, instead of a failure inside a reader
  thread or numbers trained on as captions. The dataset is not scanned when it opens (that
  would read every record, images included): an example whose captions are all empty is treated
  as unreadable when it is read (replaced by the next example, counted in
  `data.unreadable_images`, logged with the reason "no non-empty caption"), so `skipped_empty`,
  the images dropped at open, stays 0.
  """

  def __init__(self, name: str, split: str, data_dir: str, caption_key: str):
    from maskgil_jax.data.sources import TfdsSource
    self.inner = TfdsSource(name, split, data_dir)
    self.name, self.split, self.caption_key = name, split, caption_key
    self.skipped_empty = 0
    self.keys = self._resolve(caption_key)  # the nested dict keys of the caption feature

  def _resolve(self, caption_key: str) -> tuple[str, ...]:
    """The caption feature's keys in an example; DataError unless it is one text feature."""
    info = getattr(self.inner.source, "dataset_info", None)
    features = getattr(info, "features", None)
    # the declared features; a data source without them (a test's list) shows its first example
    tree = features.get_tensor_info() if features is not None else self.inner.source[0]
    leaves, groups = {}, {}
    _walk(tree, (), leaves, groups)
    text = sorted(k for k, (_, leaf) in leaves.items() if _is_text(leaf))
    where = (f"data.caption_key: {caption_key!r} in {self.name}: the text features are "
             f"{text or 'none'}")
    if caption_key in groups:
      raise DataError(f"{where}; {caption_key!r} is a group of features "
                      f"({', '.join(groups[caption_key])}): name the text one")
    if caption_key not in leaves:
      raise DataError(f"data.caption_key: {caption_key!r} is not a feature of {self.name} "
                      f"(text features: {text or 'none'}; all: {sorted(leaves)})")
    keys, leaf = leaves[caption_key]
    if not _is_text(leaf):
      raise DataError(f"{where}; {caption_key!r} is not text")
    return keys

  def __len__(self) -> int:
    return len(self.inner)

  def __getitem__(self, index: int):
    return self.inner[index]

  def _captions(self, example) -> tuple[str, ...]:
    value = example
    for key in self.keys:
      value = value[key]
    return clean_captions(list(np.asarray(value, dtype=object).reshape(-1)))

  def load(self, record) -> tuple[np.ndarray, tuple[str, ...]]:
    _, example = record
    caps = self._captions(example)
    if not caps:
      raise UnreadableImage("no non-empty caption")
    return decode_image(example["image"]), caps

  def size(self, record) -> tuple[int, int]:
    return header_size(bytes(record[1]["image"]))

  def captions_of(self, record) -> tuple[str, ...]:
    return self._captions(record[1])

  def describe(self, record) -> str:
    return f"{self.name}/{self.split} example {record[0]}"


def _walk(tree, keys: tuple[str, ...], leaves: dict, groups: dict) -> None:
  """Fills leaves {'a/b': (keys, leaf)} and groups {'a': ['a/b', ...]} of a nested dict. TFDS
  keys may hold '/' themselves ('image/id' in coco_captions), so the joined path is the name."""
  for k, v in tree.items():
    path = keys + (k,)
    name = "/".join(path)
    if isinstance(v, dict):
      groups[name] = []
      _walk(v, path, leaves, groups)
      groups[name] = sorted(n for n in leaves if n.startswith(name + "/"))
    else:
      leaves[name] = (path, v)


def _is_text(leaf) -> bool:
  """A declared TFDS feature (TensorInfo) or an example's value holding strings."""
  if hasattr(leaf, "np_dtype"):
    return np.dtype(leaf.np_dtype).kind in "OSU"
  values = list(np.asarray(leaf, dtype=object).reshape(-1))
  return all(isinstance(v, (bytes, str)) for v in values)


def open_caption_source(data):
  """The image-caption source `config.data` names, or None for a class-labelled source."""
  if data.name == "caption_folder":
    return CaptionFolderSource(_path(data))
  if data.name == "caption_jsonl":
    return CaptionJsonlSource(_path(data))
  if data.name == "demo_captions":
    from maskgil_jax.data.demo_captions import DemoCaptionSource
    return DemoCaptionSource(data.split)
  if data.get("caption_key"):
    return TfdsCaptionSource(data.name, data.split, data.tfds_data_dir, data.caption_key)
  return None


def _path(data) -> str:
  if not data.path:
    raise DataError(f"data.path: set it for data.name={data.name!r}")
  return data.path
