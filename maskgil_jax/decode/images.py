"""Tokens to pictures: the tokenizer's decoder with the uint8 conversion on the device, and the
near-square grid the sample command and the trainer write as PNG.
"""
from __future__ import annotations

import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np


def to_uint8(images):
  """[-1, 1] float images -> uint8: round((x + 1) * 127.5), clipped (the tokenizer's inverse)."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@jax.jit
def tokens_to_images(tokenizer, tokens):
  """uint8 images [B, H, W, 3] of tokens [B, L] (raster order of a square grid)."""
  side = int(round(tokens.shape[1] ** 0.5))
  return to_uint8(tokenizer.decode_code(tokens.reshape(tokens.shape[0], side, side)))


def image_grid(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, C] -> one [rows * H, cols * W, C] image, near-square, black padding."""
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  canvas = np.zeros((rows * h, cols * w, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, cols)
    canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
  return canvas


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """A uint8 [H, W, 3] image as PNG, written under a temporary name and renamed."""
  from PIL import Image
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  Image.fromarray(image).save(tmp, format="PNG")
  os.replace(tmp, path)
