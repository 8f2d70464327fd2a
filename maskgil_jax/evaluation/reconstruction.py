"""Reading image sets and reconstructing them with a tokenizer: what `vq reconstruct` and
`vq compare` (the tokenizer study) share.

Images are uint8 [N, H, W, 3] from a folder (searched recursively, sorted by path) or an `.npz`
holding one uint8 NHWC RGB array (named `images` if there are several). Pixels map to [-1, 1]
as x / 127.5 - 1 and back as round((y + 1) * 127.5) clipped to [0, 255].
"""
from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np
from tqdm import tqdm

from maskgil_jax.configlib import ConfigError
from maskgil_jax.data.preprocess import UnreadableImage, center_crop, decode_image, to_model_range
from maskgil_jax.data.sources import IMAGE_EXTENSIONS
from maskgil_jax.models.vq import VQModel, reconstruct
from maskgil_jax.parallel.pump import padded, pump, slices


def read_images(path: str | os.PathLike, image_size: int = 0) -> tuple[np.ndarray, list[str]]:
  """uint8 [N, H, W, 3] images and their file names (empty for an `.npz`)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"--images: {path} does not exist")
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise ConfigError(f"--images: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
    images = []
    for f in files:
      try:
        pixels = decode_image(f.read_bytes())
      except UnreadableImage as e:
        raise ConfigError(f"--images: {f} cannot be read as an image ({e})") from e
      images.append(center_crop(pixels, image_size) if image_size else pixels)
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
      first = {}
      for f, im in zip(files, images):
        first.setdefault(im.shape, f)
      examples = ", ".join(f"{f.name} is {s[1]}x{s[0]}" for s, f in list(first.items())[:2])
      raise ConfigError(f"--images: the images differ in size ({examples}); pass --image-size "
                        "to centre-crop and resize them")
    return np.stack(images), [str(f.relative_to(path)) for f in files]
  return _read_npz(path, image_size), []


def _read_npz(path: pathlib.Path, image_size: int) -> np.ndarray:
  try:
    with np.load(path, allow_pickle=False) as data:
      names = list(data.keys())
      name = "images" if "images" in names else names[0] if len(names) == 1 else None
      if name is None:
        raise ConfigError(f"--images: {path} holds {names}; name the image array 'images'")
      images = data[name]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated, pickles, other
    raise ConfigError(f"--images: {path} is not a readable .npz ({e})") from e
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ConfigError(f"--images: {path}:{name} is {images.dtype} {list(images.shape)}; expected "
                      "uint8 NHWC RGB images [N, H, W, 3]")
  if image_size:
    images = np.stack([center_crop(im, image_size) for im in images])
  return images


def to_pixels(images: np.ndarray) -> np.ndarray:
  """Model output in [-1, 1] -> uint8, the inverse of `to_model_range` (clipped, rounded)."""
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def reconstruct_all(model: VQModel, images: np.ndarray, batch_size: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Codes [N, h, w] and uint8 reconstructions of all images, `batch_size` at a time.

  The next batch is dispatched before the previous one is copied back, so the device does not
  wait for the host.
  """
  codes, recons = [], []

  def dispatch(part):
    start, _ = part
    return reconstruct(model, to_model_range(padded(images[start:start + batch_size], batch_size,
                                                    "edge")))

  def collect(part, result):
    count = part[1]
    codes.append(np.asarray(result[0])[:count])
    recons.append(to_pixels(np.asarray(result[1])[:count]))

  pump(dispatch, tqdm(slices(len(images), batch_size), disable=not progress, desc="reconstruct"),
       collect)
  return np.concatenate(codes), np.concatenate(recons)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of uint8 images (inf for identical images)."""
  mse = np.mean(np.square(a.astype(np.float64) - b.astype(np.float64)), axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    return (10.0 * np.log10(255.0 ** 2 / mse)).astype(np.float32)
