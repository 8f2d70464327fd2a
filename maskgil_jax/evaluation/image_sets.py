"""Image sets on disk: ADM `.npz` batches (read and written streaming) and folders of images.

ADM's layout is an `.npz` whose `arr_0` is uint8 [N, H, W, 3]; 50,000 samples at 256x256 are
9.8 GB, so `arr_0` is read in batches straight from the zip member (compressed or not) and written
the same way from any sliceable array (e.g. a memory-mapped `.npy`), never whole in memory.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import zipfile
from collections.abc import Iterator, Mapping

import numpy as np
from PIL import Image

from maskgil_jax import files
from maskgil_jax.errors import UserError
from maskgil_jax.evaluation import minmax

IMAGES_KEY = "arr_0"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageSetError(UserError):
  """An image set that cannot be evaluated: missing, empty, wrong layout, mixed sizes."""


def _check_layout(shape, dtype, source: str) -> None:
  if len(shape) != 4 or shape[-1] != 3 or np.dtype(dtype) != np.uint8:
    raise ImageSetError(f"{source}: images must be uint8 [N, H, W, 3] (ADM layout), "
                        f"got {np.dtype(dtype)} {list(shape)}")
  if shape[0] == 0:
    raise ImageSetError(f"{source}: the image set is empty")


def _read_npy_header(f, source: str) -> tuple[tuple[int, ...], np.dtype, bool]:
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(f)
  if version == (2, 0):
    return np.lib.format.read_array_header_2_0(f)
  raise ImageSetError(f"{source}: unsupported .npy format version {version}")


def npz_members(path: str | os.PathLike) -> list[str]:
  """Array names stored in an `.npz` (without reading them)."""
  try:
    with zipfile.ZipFile(path) as z:
      return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
  except (OSError, zipfile.BadZipFile) as e:
    raise ImageSetError(f"{path}: not a readable .npz file ({e})") from e


class NpzImages:
  """`arr_0` of an ADM `.npz`, streamed in batches."""

  def __init__(self, path: str | os.PathLike, key: str = IMAGES_KEY):
    self.path = pathlib.Path(path)
    self.key = key
    if key not in npz_members(self.path):
      raise ImageSetError(f"{self.path}: no {key!r} array (ADM batches keep images in arr_0)")
    with zipfile.ZipFile(self.path) as z, z.open(f"{key}.npy") as f:
      shape, fortran, dtype = _read_npy_header(f, str(self.path))
    if fortran:
      raise ImageSetError(f"{self.path}: {key} is stored in Fortran order; save it C-ordered")
    _check_layout(shape, dtype, f"{self.path}:{key}")
    self.num_images = shape[0]
    self.image_shape = tuple(shape[1:])

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    row_bytes = int(np.prod(self.image_shape))
    with zipfile.ZipFile(self.path) as z, z.open(f"{self.key}.npy") as f:
      _read_npy_header(f, str(self.path))
      for start in range(0, self.num_images, batch_size):
        n = min(batch_size, self.num_images - start)
        data = f.read(n * row_bytes)
        if len(data) != n * row_bytes:
          raise ImageSetError(f"{self.path}: {self.key} is truncated at image {start}")
        yield np.frombuffer(data, np.uint8).reshape(n, *self.image_shape)


class FolderImages:
  """Every image file of a folder (sorted by name), decoded to RGB; all must share one size."""

  def __init__(self, path: str | os.PathLike, workers: int = 8):
    self.path = pathlib.Path(path)
    self.workers = workers
    if not self.path.is_dir():
      raise ImageSetError(f"{self.path}: no such folder")
    self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not self.files:
      raise ImageSetError(f"{self.path}: the image set is empty (no {'/'.join(IMAGE_SUFFIXES)} "
                          "files)")
    first = self._load(self.files[0])
    self.num_images = len(self.files)
    self.image_shape = first.shape

  @staticmethod
  def _load(file: pathlib.Path) -> np.ndarray:
    try:
      with Image.open(file) as im:
        return np.asarray(im.convert("RGB"))
    except OSError as e:
      raise ImageSetError(f"{file}: not a readable image ({e})") from e

  def _checked(self, file: pathlib.Path) -> np.ndarray:
    image = self._load(file)
    if image.shape != self.image_shape:
      raise ImageSetError(f"{file}: size {list(image.shape)} differs from the set's "
                          f"{list(self.image_shape)} ({self.files[0].name}); resize the set first")
    return image

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
      for start in range(0, self.num_images, batch_size):
        yield np.stack(list(pool.map(self._checked, self.files[start:start + batch_size])))


def open_image_set(path: str | os.PathLike, per_image_minmax: bool = False):
  """A folder of images or the `arr_0` of an `.npz`; with `per_image_minmax` its batches come
  rescaled as MaskGIL's FID_sample.py writes its samples (evaluation/minmax.py)."""
  path = pathlib.Path(path)
  if path.is_dir():
    images = FolderImages(path)
  elif not path.is_file():
    raise ImageSetError(f"{path}: no such file or folder")
  else:
    images = NpzImages(path)
  return minmax.PerImageMinMax(images) if per_image_minmax else images


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
              chunk_rows: int = 256) -> None:
  """An uncompressed `.npz` written member by member, `chunk_rows` rows at a time, atomically.

  Arrays may be memory-mapped: only one chunk is in memory at once.
  """
  with files.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                         allowZip64=True) as z:
    for name, array in arrays.items():
      with z.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {
            "descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
            "shape": tuple(array.shape)})
        if array.ndim == 0:
          f.write(np.ascontiguousarray(array).tobytes())
        for start in range(0, array.shape[0] if array.ndim else 0, chunk_rows):
          f.write(np.ascontiguousarray(array[start:start + chunk_rows]).tobytes())
