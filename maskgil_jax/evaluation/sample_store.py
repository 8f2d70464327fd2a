"""Resumable, multi-process storage of generated samples, merged into one ADM `.npz` at the end.

A sample set (e.g. 50 per class, 50,000 images) is a numbered list: global index i -> image,
label and any other per-sample arrays (e.g. the tokens it was decoded from). Process p of P owns
the contiguous range [p N / P, (p + 1) N / P) and is its only writer, so no coordination is
needed: each `write` lands as its own shard file, written under a temporary name and renamed,
and on a restart every process scans the folder and gets back exactly the indices of its range
that no shard holds (`pending`). Nothing is generated twice and nothing is skipped, whatever was
interrupted, and a restart may even use another process count. For identical samples after a
restart, derive each sample's randomness from its index (e.g. `jax.random.fold_in(key, index)`),
not from the batch or process it falls in.

Folder layout:
  settings.json                               sampling settings, N, array shapes (written with the
                                              first shard, checked on every open)
  shard_{first:08d}_{last:08d}_p{proc:03d}.npz  `indices` [n] int64, `labels` [n] int64,
                                              `images` uint8 [n, H, W, 3] (unless image_shape is
                                              None), one [n, ...] member per extra array
  merged.json                                 after `finalize`: the merged file (shards deleted)
`finalize` (one process, after all have finished) checks that every index is present exactly
once and writes ADM's layout: `arr_0` uint8 [N, H, W, 3] and `labels` [N] in index order, the
extra arrays under their names and `settings` (a JSON string), plus a JSON record beside it;
arrays pass through memory-mapped files, never all in memory. It then deletes the shards (the
merged file holds them) and leaves `merged.json`, so reopening the folder with the same settings
finds the set complete, and with other settings is still refused.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import zipfile
from collections.abc import Mapping

import numpy as np

from maskgil_jax import files
from maskgil_jax.errors import UserError
from maskgil_jax.evaluation.image_sets import IMAGES_KEY, write_npz

SETTINGS_FILE = "settings.json"
MERGED_FILE = "merged.json"
_SHARD = re.compile(r"^shard_(\d{8})_(\d{8})_p(\d{3})\.npz$")
_RESERVED = ("indices", "images", "labels", "settings", IMAGES_KEY)


class SampleStoreError(UserError):
  """A sample folder that does not fit the request: other settings, bad shard, bad write."""


def _array_specs(arrays: Mapping | None) -> dict[str, dict]:
  """{name: {'shape': [...], 'dtype': str}} of the extra per-sample arrays, checked."""
  specs = {}
  for name, (shape, dtype) in (arrays or {}).items():
    if not str(name).isidentifier() or name in _RESERVED:
      raise SampleStoreError(f"extra array name {name!r}: must be an identifier other than "
                             f"{list(_RESERVED)}")
    dt = np.dtype(dtype)  # text (e.g. the prompts, '<U80') by its full code, numbers by name
    specs[name] = {"shape": [int(s) for s in shape],
                   "dtype": dt.str if dt.kind in "US" else dt.name}
  return specs


class SampleStore:
  """The samples of one evaluation set in `directory`, seen from one process.

  `image_shape` is (H, W, 3), or None for a set without images; `arrays` names extra
  per-sample arrays as {name: (shape of one sample, dtype)}, e.g. {'tokens': ((16, 16), 'int32')}.
  """

  def __init__(self, directory: str | os.PathLike, *, num_samples: int,
               image_shape: tuple[int, int, int] | None, settings: dict, process_index: int = 0,
               process_count: int = 1, arrays: Mapping[str, tuple] | None = None):
    if num_samples <= 0:
      raise SampleStoreError(f"num_samples must be positive, got {num_samples}")
    if image_shape is not None and (len(image_shape) != 3 or image_shape[-1] != 3):
      raise SampleStoreError(f"image_shape must be (H, W, 3) or None, got {image_shape}")
    if not 0 <= process_index < process_count:
      raise SampleStoreError(f"process {process_index} of {process_count} does not exist")
    self.directory = pathlib.Path(directory)
    self.num_samples = int(num_samples)
    self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
    self.arrays = _array_specs(arrays)
    self.process_index = process_index
    self.process_count = process_count
    self.record = json.loads(json.dumps({
        "settings": settings, "num_samples": self.num_samples,
        "image_shape": None if self.image_shape is None else list(self.image_shape),
        "arrays": self.arrays}))
    self._check_settings()
    for stale in self.directory.glob(f".shard_*_p{process_index:03d}.npz.tmp"):
      stale.unlink()  # a write of this process that was interrupted before its rename
    lo, hi = self.owned_range
    self._pending = np.flatnonzero(~self._done()[lo:hi]) + lo

  def _check_settings(self) -> None:
    path = self.directory / SETTINGS_FILE
    if not path.exists():
      if self._shards() or (self.directory / MERGED_FILE).exists():
        raise SampleStoreError(f"{self.directory} holds samples but no {SETTINGS_FILE}; their "
                               "settings are unknown, so use a new folder")
      return  # written with the first shard: a run that fails before it leaves nothing behind
    try:
      stored = json.loads(path.read_text())
    except ValueError as e:
      raise SampleStoreError(f"{path}: unreadable ({e}); its samples' settings are unknown, "
                             "so use a new folder") from e
    if stored != self.record:
      diff = sorted(k for k in set(stored) | set(self.record)
                    if stored.get(k) != self.record.get(k))
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

  @property
  def merged_into(self) -> pathlib.Path | None:
    """The `.npz` that `finalize` merged every shard into, None before that."""
    path = self.directory / MERGED_FILE
    if not path.exists():
      return None
    return self.directory / json.loads(path.read_text())["samples_file"]

  def pending(self) -> np.ndarray:
    """Sorted global indices of this process's range that are not yet stored."""
    return self._pending.copy()

  def _shards(self) -> list[pathlib.Path]:
    if not self.directory.is_dir():  # made with the first shard
      return []
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

  def _done(self) -> np.ndarray:
    """bool [N]: which indices are stored (all of them once merged)."""
    done = np.full(self.num_samples, self.merged_into is not None)
    for _, indices in self._scan():
      done[indices] = True
    return done

  def _checked(self, name: str, value, n: int, shape, dtype) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype != dtype or value.shape != (n, *shape):
      raise SampleStoreError(f"{name} must be {np.dtype(dtype).name} {[n, *shape]}, got "
                             f"{value.dtype} {list(value.shape)}")
    return value

  def write(self, indices, images, labels, arrays: Mapping | None = None) -> pathlib.Path:
    """Store samples `indices` (all pending for this process) as one shard; returns its path.

    `images` is None for a set without images; `arrays` holds every extra array of the set.
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    n = indices.size
    if n == 0:
      raise SampleStoreError("write needs at least one sample")
    members = {}
    if self.image_shape is None:
      if images is not None:
        raise SampleStoreError("this sample set stores no images (image_shape None)")
    else:
      members["images"] = self._checked("images", images, n, self.image_shape, np.uint8)
    arrays = dict(arrays or {})
    if sorted(arrays) != sorted(self.arrays):
      raise SampleStoreError(f"extra arrays must be {sorted(self.arrays)}, got {sorted(arrays)}")
    for name, spec in self.arrays.items():
      members[name] = self._checked(name, arrays[name], n, spec["shape"], spec["dtype"])
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
    if not (self.directory / SETTINGS_FILE).exists():  # before the first shard
      self.directory.mkdir(parents=True, exist_ok=True)  # a failed run leaves no folder
      files.write_text(self.directory / SETTINGS_FILE,
                       json.dumps(self.record, indent=2, sort_keys=True))
    name = f"shard_{indices.min():08d}_{indices.max():08d}_p{self.process_index:03d}.npz"
    path = self.directory / name
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
      np.savez(f, indices=indices, labels=labels.astype(np.int64), **members)
    self._pending = np.setdiff1d(self._pending, indices)
    return path

  def missing(self) -> np.ndarray:
    """Sorted global indices (any process) that no shard holds yet."""
    return np.flatnonzero(~self._done())

  def finalize(self, out_path: str | os.PathLike) -> pathlib.Path:
    """Merge every shard into ADM's `.npz` + `<out>.json`, delete the shards; returns the JSON
    path. Finalizing a merged set again into the same file only returns that path.

    Call it on one process once every process has finished writing.
    """
    out_path = pathlib.Path(out_path)
    json_path = out_path.with_suffix(".json")
    if out_path.suffix != ".npz":
      raise SampleStoreError(f"{out_path}: the merged sample set is an .npz")
    merged = self.merged_into
    if merged is not None:
      if merged.resolve() != out_path.resolve():
        raise SampleStoreError(f"{self.directory}: its samples were merged into {merged} and "
                               f"its shards deleted; {out_path} cannot be written from it")
      if not out_path.exists():
        raise SampleStoreError(f"{out_path} was merged from {self.directory} and deleted since "
                               "(so were the shards); delete the folder to generate the set again")
      return json_path
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
    shapes = dict({} if self.image_shape is None else {"images": (self.image_shape, "uint8")},
                  **{k: (s["shape"], s["dtype"]) for k, s in self.arrays.items()})
    buffers = {k: out_path.with_name(f".{out_path.name}.{k}.npy") for k in shapes}
    labels = np.zeros(self.num_samples, np.int64)
    try:
      merged_arrays = {k: np.lib.format.open_memmap(buffers[k], mode="w+", dtype=dtype,
                                                    shape=(self.num_samples, *shape))
                       for k, (shape, dtype) in shapes.items()}
      for path in self._shards():
        with np.load(path, allow_pickle=False) as f:
          labels[f["indices"]] = f["labels"]
          for k, array in merged_arrays.items():
            array[f["indices"]] = f[k]
      members = {IMAGES_KEY: merged_arrays.pop("images")} if "images" in merged_arrays else {}
      members.update(labels=labels, **merged_arrays, settings=np.array(
          json.dumps(self.record["settings"], sort_keys=True)))
      write_npz(out_path, members)
      del members, merged_arrays
    finally:
      for buffer in buffers.values():
        buffer.unlink(missing_ok=True)
    files.write_text(json_path, json.dumps(
        dict(self.record, samples_file=out_path.name,
             label_counts=np.bincount(labels).tolist()), indent=2, sort_keys=True))
    files.write_text(self.directory / MERGED_FILE, json.dumps(
        {"samples_file": os.path.relpath(out_path, self.directory)}))
    for path in self._shards():
      path.unlink()
    for stale in self.directory.glob(".shard_*.npz.tmp"):  # writes interrupted before rename
      stale.unlink()
    return json_path
