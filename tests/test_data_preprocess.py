"""Decoding, fitting and view cutting: the pixels every pipeline hands on."""
import io

import numpy as np
import pytest
from PIL import Image

from maskgil_jax.data import preprocess


def png_bytes(pixels):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def test_decode_gives_rgb_and_refuses_broken_files():
  gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
  out = preprocess.decode_image(png_bytes(gray))
  assert out.shape == (12, 10, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 1], gray)
  data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
  with pytest.raises(preprocess.UnreadableImage):
    preprocess.decode_image(data[: len(data) // 2])  # truncated
  with pytest.raises(preprocess.UnreadableImage):
    preprocess.decode_image(b"definitely not an image")


def test_center_crop_keeps_the_middle_of_a_wide_image():
  img = np.zeros((40, 120, 3), np.uint8)
  img[:, 40:80] = 200  # the central square is bright, the sides dark
  out = preprocess.fit(img, 16, "center_crop")
  assert out.shape == (16, 16, 3)
  assert out[:, 2:-2].min() > 190  # bicubic rings only at the borders


def test_center_crop_halves_large_images_first():
  img = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
  assert preprocess.fit(img, 32, "center_crop").shape == (32, 32, 3)


def test_pad_centres_small_images_and_cuts_large_ones():
  img = np.full((28, 28), 255, np.uint8)
  out = preprocess.fit(img, 32, "pad")
  assert out.shape == (32, 32, 3)
  assert out[2:30, 2:30].min() == 255 and out.sum() == 255 * 28 * 28 * 3
  wide = np.arange(40, dtype=np.uint8)[None, :, None].repeat(10, 0).repeat(3, 2)
  out = preprocess.fit(wide, 32, "pad")
  np.testing.assert_array_equal(out[11, :, 0], np.arange(4, 36))  # centre-cut columns
  assert out[:11].sum() == 0 and out[21:].sum() == 0
  with pytest.raises(ValueError, match="data.fit"):
    preprocess.fit(img, 32, "stretch")


def test_ten_crop_views_are_corners_centre_and_mirrors():
  base = np.arange(11 * 11, dtype=np.uint8).reshape(11, 11, 1).repeat(3, -1)
  views = preprocess.all_views(base, 8, ten_crop=True, random_flip=True)
  assert views.shape == (10, 8, 8, 3)
  np.testing.assert_array_equal(views[0], base[:8, :8])
  np.testing.assert_array_equal(views[1], base[:8, 3:])
  np.testing.assert_array_equal(views[2], base[3:, :8])
  np.testing.assert_array_equal(views[3], base[3:, 3:])
  np.testing.assert_array_equal(views[4], base[1:9, 1:9])
  for v in range(5):
    np.testing.assert_array_equal(views[5 + v], views[v][:, ::-1])
  assert preprocess.base_size(256, True, 1.1) == 281


def test_flip_views_and_model_range():
  base = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
  views = preprocess.all_views(base, 8, ten_crop=False, random_flip=True)
  np.testing.assert_array_equal(views[0], base)
  np.testing.assert_array_equal(views[1], base[:, ::-1])
  assert preprocess.all_views(base, 8, ten_crop=False, random_flip=False).shape[0] == 1
  x = preprocess.to_model_range(np.array([0, 255], np.uint8))
  assert x.dtype == np.float32 and x.tolist() == [-1.0, 1.0]
