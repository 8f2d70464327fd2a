"""Turning one stored image into the square crop a tokenizer sees.

Every source goes through the same two steps, so on-the-fly training, evaluation and code
extraction cut identical pixels:

1. `fit`: decoded pixels (any size, RGB uint8) -> a square `base` image. 'center_crop' is the
   ADM / LlamaGen recipe (halve with a box filter while the short side is at least twice the
   target, bicubic-resize the short side to the target, cut the centre); 'pad' centres the
   image on a black canvas without resampling (small images such as the 28px demo set; a
   side longer than the canvas is centre-cut instead).
2. `view`: one of `num_views` variants of the base image. Without ten-crop the views are the
   image itself (0) and its mirror (1). With ten-crop the base is `crop_range` times larger and
   the views are LlamaGen's ten crops: top-left, top-right, bottom-left, bottom-right, centre
   (0-4), then the same five crops mirrored (5-9). Training draws one view per example; code
   extraction encodes all of them, and the code pipeline draws the stored view with the same
   random number, so both give the same batches.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

FITS = ("center_crop", "pad")


class UnreadableImage(ValueError):
  """An image that cannot be decoded; the pipeline skips it, counts it and reports it."""


def decode_image(data: bytes) -> np.ndarray:
  """Encoded bytes (JPEG, PNG, ...) -> RGB uint8 [H, W, 3]; UnreadableImage on any failure."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()  # decodes now: a truncated file fails here, not later
      return np.asarray(img.convert("RGB"))
  except Exception as e:  # PIL raises OSError, SyntaxError, zlib.error, DecompressionBombError
    raise UnreadableImage(f"{type(e).__name__}: {e}") from e


def header_size(path_or_bytes) -> tuple[int, int]:
  """(height, width) from an image header without decoding the pixels (aspect buckets);
  UnreadableImage if the header cannot be read."""
  try:
    f = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(f) as img:
      return img.height, img.width
  except Exception as e:
    raise UnreadableImage(f"{type(e).__name__}: {e}") from e


def to_rgb(pixels: np.ndarray) -> np.ndarray:
  """uint8 [H, W] or [H, W, 1|3] -> [H, W, 3]."""
  if pixels.ndim == 2:
    pixels = pixels[:, :, None]
  if pixels.shape[-1] == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  if pixels.ndim != 3 or pixels.shape[-1] != 3:
    raise UnreadableImage(f"expected a grayscale or RGB image, got shape {pixels.shape}")
  return pixels


def hw(size) -> tuple[int, int]:
  """(height, width) of a square side or an (h, w) pair (an aspect bucket)."""
  return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def center_crop(pixels: np.ndarray, size) -> np.ndarray:
  """ADM / LlamaGen resize-then-centre-crop of an RGB uint8 image to [h, w, 3] (`size`: a
  side, or (h, w) for an aspect bucket: the image is scaled to cover it, then centre-cut)."""
  th, tw = hw(size)
  img = Image.fromarray(pixels)
  while img.height >= 2 * th and img.width >= 2 * tw:
    img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
  scale = max(th / img.height, tw / img.width)
  img = img.resize((max(tw, round(img.width * scale)), max(th, round(img.height * scale))),
                   resample=Image.BICUBIC)
  arr = np.asarray(img)
  top, left = (arr.shape[0] - th) // 2, (arr.shape[1] - tw) // 2
  return arr[top:top + th, left:left + tw]


def pad_or_crop(pixels: np.ndarray, size) -> np.ndarray:
  """Centre the image on a black [h, w, 3] canvas (`size`: a side or (h, w)); longer sides
  are centre-cut."""
  th, tw = hw(size)
  out = np.zeros((th, tw, 3), np.uint8)
  h, w = min(pixels.shape[0], th), min(pixels.shape[1], tw)
  src_top, src_left = (pixels.shape[0] - h) // 2, (pixels.shape[1] - w) // 2
  top, left = (th - h) // 2, (tw - w) // 2
  out[top:top + h, left:left + w] = pixels[src_top:src_top + h, src_left:src_left + w]
  return out


def fit(pixels: np.ndarray, size, mode: str) -> np.ndarray:
  """Any grayscale/RGB uint8 image -> RGB uint8 [size, size, 3], or [h, w, 3] for size (h, w)
  (see module doc)."""
  pixels = to_rgb(pixels)
  if mode == "center_crop":
    return center_crop(pixels, size)
  if mode == "pad":
    return pad_or_crop(pixels, size)
  raise ValueError(f"data.fit: {mode!r} unknown; one of {FITS}")


def base_size(image_size: int, ten_crop: bool, crop_range: float) -> int:
  """Side of the base image the views are cut from (LlamaGen: int(size * 1.1) for ten-crop)."""
  return int(image_size * crop_range) if ten_crop else image_size


def num_views(ten_crop: bool, random_flip: bool) -> int:
  return 10 if ten_crop else (2 if random_flip else 1)


def view(base: np.ndarray, index: int, image_size: int, ten_crop: bool) -> np.ndarray:
  """View `index` of a base image (see module doc) as uint8 [image_size, image_size, 3]."""
  mirrored = index >= 5 if ten_crop else index == 1
  if ten_crop:
    extra_h, extra_w = base.shape[0] - image_size, base.shape[1] - image_size
    corner = index % 5
    top = {0: 0, 1: 0, 2: extra_h, 3: extra_h, 4: extra_h // 2}[corner]
    left = {0: 0, 1: extra_w, 2: 0, 3: extra_w, 4: extra_w // 2}[corner]
    base = base[top:top + image_size, left:left + image_size]
  return np.ascontiguousarray(base[:, ::-1]) if mirrored else base


def all_views(base: np.ndarray, image_size: int, ten_crop: bool, random_flip: bool) -> np.ndarray:
  """Every view of a base image, uint8 [num_views, image_size, image_size, 3]."""
  n = num_views(ten_crop, random_flip)
  return np.stack([view(base, v, image_size, ten_crop) for v in range(n)])


def to_model_range(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1, i.e. LlamaGen's 2 * x / 255 - 1)."""
  return images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def chameleon_input(img: Image.Image, size: int = 512) -> np.ndarray:
  """Chameleon's image preparation (docs/reference.md section 10), as uint8 [size, size, 3]:
  transparent pixels blended onto white, the shorter side Lanczos-resized to `size`, the centre
  cut out. `to_model_range` then gives the tokenizer's input."""
  rgba = np.asarray(img.convert("RGBA")).astype(np.float64)
  alpha = rgba[:, :, 3:] / 255.0
  rgb = Image.fromarray(((1 - alpha) * 255 + alpha * rgba[:, :, :3]).astype(np.uint8), "RGB")
  scale = size / min(rgb.size)
  rgb = rgb.resize((round(scale * rgb.width), round(scale * rgb.height)), Image.LANCZOS)
  x0, y0 = (rgb.width - size) // 2, (rgb.height - size) // 2
  return np.asarray(rgb.crop((x0, y0, x0 + size, y0 + size)))
