"""Resumable, multi-process storage of generated samples, merged into one ADM `.npz` at the end.

A sample set (e.g. 50 per class, 50,000 images) is a numbered list: global index i -> image +
label. Process p of P owns the contiguous range [p N / P, (p + 1) N / P) and is its only writer,
so no coordination is needed: each `write` lands as its own shard file, written under a
temporary name and renamed, and on a restart every process scans the folder and gets back
exactly the indices of its range that no shard holds (`pending`). Nothing is generated twice and
nothing is skipped, whatever was interrupted, and a restart may even use another process count.
For identical images after a restart, derive each sample's randomness from its index (e.g.
`jax.random.fold_in(key, index)`), not from the batch or process it falls in.

Folder layout:
  settings.json                               sampling settings, N, image shape (checked on open)
  shard_{first:08d}_{last:08d}_p{proc:03d}.npz  `indices` [n] int64, `images` uint8 [n, H, W, 3],
                                              `labels` [n] int64
`finalize` (one process, after all have finished) checks that every index is present exactly
once and writes ADM's layout: `arr_0` uint8 [N, H, W, 3] and `labels` [N] in index order, plus a
JSON of the settings beside it; images pass through a memory-mapped file, never all in memory.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import zipfile

import numpy as np

from maskgil_jax.evaluation.image_sets import IMAGES_KEY, write_npz

SETTINGS_FILE = "settings.json"
_SHARD = re.compile(r"^shard_(\d{8})_(\d{8})_p(\d{3})\.npz$")


class SampleStoreError(ValueError):
  """A sample folder that does not fit the request: other settings, bad shard, bad write."""


def _write_text_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


class SampleStore:
  """The samples of one evaluation set in `directory`, seen from one process."""

  def __init__(self, directory: str | os.PathLike, *, num_samples: int,
               image_shape: tuple[int, int, int], settings: dict, process_index: int = 0,
               process_count: int = 1):
    if num_samples <= 0:
      raise SampleStoreError(f"num_samples must be positive, got {num_samples}")
    if len(image_shape) != 3 or image_shape[-1] != 3:
      raise SampleStoreError(f"image_shape must be (H, W, 3), got {image_shape}")
    if not 0 <= process_index < process_count:
      raise SampleStoreError(f"process {process_index} of {process_count} does not exist")
    self.directory = pathlib.Path(directory)
    self.num_samples = int(num_samples)
    self.image_shape = tuple(int(s) for s in image_shape)
    self.process_index = process_index
    self.process_count = process_count
    self.directory.mkdir(parents=True, exist_ok=True)
    self.record = json.loads(json.dumps({"settings": settings, "num_samples": self.num_samples,
                                         "image_shape": list(self.image_shape)}))
    self._check_settings()
    for stale in self.directory.glob(f".shard_*_p{process_index:03d}.npz.tmp"):
      stale.unlink()  # a write of this process that was interrupted before its rename
    lo, hi = self.owned_range
    done = np.zeros(self.num_samples, bool)
    for _, indices in self._scan():
      done[indices] = True
    self._pending = np.flatnonzero(~done[lo:hi]) + lo

  def _check_settings(self) -> None:
    path = self.directory / SETTINGS_FILE
    if not path.exists():
      _write_text_atomic(path, json.dumps(self.record, indent=2, sort_keys=True))
      return
    stored = json.loads(path.read_text())
    if stored != self.record:
      diff = sorted(k for k in set(stored) | set(self.record) if stored.get(k) != self.record.get(k))
      if "settings" in diff:
        a, b = stored.get("settings", {}), self.record["settings"]
        diff += [f"settings.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
      raise SampleStoreError(
          f"{self.directory} holds samples made with other settings (differing: {diff}); "
          "use a new folder or the same settings")

  @property
  def owned_range(self) -> tuple[int, int]:
    """[lo, hi): the global indices this process generates."""
    p, n = self.process_index, self.process_count
    return p * self.num_samples // n, (p + 1) * self.num_samples // n

  def pending(self) -> np.ndarray:
    """Sorted global indices of this process's range that are not yet stored."""
    return self._pending.copy()

  def _shards(self) -> list[pathlib.Path]:
    return sorted(p for p in self.directory.iterdir() if _SHARD.match(p.name))

  def _scan(self):
    """(shard path, its indices) for every shard in the folder."""
    for path in self._shards():
      try:
        with np.load(path, allow_pickle=False) as f:
          indices = f["indices"]
      except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise SampleStoreError(f"{path}: unreadable shard ({e}); delete it and its samples "
                               "will be generated again") from e
      if indices.ndim != 1 or indices.size and (indices.min() < 0
                                                or indices.max() >= self.num_samples):
        raise SampleStoreError(f"{path}: indices outside [0, {self.num_samples})")
      yield path, indices

  def write(self, indices, images, labels) -> pathlib.Path:
    """Store samples `indices` (all pending for this process) as one shard; returns its path."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    n = indices.size
    if n == 0:
      raise SampleStoreError("write needs at least one sample")
    if images.dtype != np.uint8 or images.shape != (n, *self.image_shape):
      raise SampleStoreError(f"images must be uint8 {[n, *self.image_shape]}, got "
                             f"{images.dtype} {list(images.shape)}")
    if (labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer)
        or (labels < 0).any()):
      raise SampleStoreError(f"labels must be {n} non-negative integers, got {labels.dtype} "
                             f"{list(labels.shape)}")
    not_pending = np.setdiff1d(indices, self._pending)
    if not_pending.size or np.unique(indices).size != n:
      lo, hi = self.owned_range
      raise SampleStoreError(
          f"indices {not_pending[:8].tolist() or 'repeated'} are not pending for process "
          f"{self.process_index} (its range is [{lo}, {hi}), minus what is stored)")
    name = f"shard_{indices.min():08d}_{indices.max():08d}_p{self.process_index:03d}.npz"
    path = self.directory / name
    tmp = self.directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
      np.savez(f, indices=indices, images=images, labels=labels.astype(np.int64))
    os.replace(tmp, path)
    self._pending = np.setdiff1d(self._pending, indices)
    return path

  def missing(self) -> np.ndarray:
    """Sorted global indices (any process) that no shard holds yet."""
    done = np.zeros(self.num_samples, bool)
    for _, indices in self._scan():
      done[indices] = True
    return np.flatnonzero(~done)

  def finalize(self, out_path: str | os.PathLike) -> pathlib.Path:
    """Merge every shard into ADM's `.npz` (`arr_0`, `labels`) + `<out>.json`; returns the JSON path.

    Call it on one process once every process has finished writing.
    """
    out_path = pathlib.Path(out_path)
    if out_path.suffix != ".npz":
      raise SampleStoreError(f"{out_path}: the merged sample set is an .npz")
    owner: dict[int, pathlib.Path] = {}
    for path, indices in self._scan():
      for i in indices.tolist():
        if i in owner:
          raise SampleStoreError(f"sample {i} is stored twice: {owner[i].name} and {path.name}; "
                                 "delete one of the two shards")
        owner[i] = path
    missing = self.num_samples - len(owner)
    if missing:
      first = self.missing()[:8].tolist()
      raise SampleStoreError(f"{self.directory}: {missing} of {self.num_samples} samples are "
                             f"not generated yet (first: {first}); resume sampling first")
    labels = np.zeros(self.num_samples, np.int64)
    buffer = out_path.with_name(f".{out_path.name}.images.npy")
    try:
      images = np.lib.format.open_memmap(buffer, mode="w+", dtype=np.uint8,
                                         shape=(self.num_samples, *self.image_shape))
      for path in self._shards():
        with np.load(path, allow_pickle=False) as f:
          images[f["indices"]] = f["images"]
          labels[f["indices"]] = f["labels"]
      images.flush()
      write_npz(out_path, {IMAGES_KEY: images, "labels": labels})
      del images
    finally:
      buffer.unlink(missing_ok=True)
    for stale in self.directory.glob(".shard_*.npz.tmp"):  # writes interrupted before rename
      stale.unlink()
    json_path = out_path.with_suffix(".json")
    _write_text_atomic(json_path, json.dumps(
        dict(self.record, samples_file=out_path.name,
             label_counts=np.bincount(labels).tolist()), indent=2, sort_keys=True))
    return json_path
