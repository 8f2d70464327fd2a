"""MaskGIL's FID_sample.py conversion (each image stretched by its own min and max) against the
original torch lines run on a few arrays (tests/fixtures/README.md, `maskgil_fid_minmax.npz`)."""
import numpy as np

from maskgil_jax.evaluation import image_sets, minmax


def test_matches_the_original_on_float_and_uint8_images(fixtures_dir):
  f = np.load(fixtures_dir / "maskgil_fid_minmax.npz")
  floats = f["float_inputs_nchw"].transpose(0, 2, 3, 1)  # the decoder's NCHW output as NHWC
  np.testing.assert_array_equal(minmax.per_image_minmax(floats), f["float_outputs"])
  np.testing.assert_array_equal(minmax.per_image_minmax(f["uint8_inputs"]), f["uint8_outputs"])
  # the map is per image: each image reaches 0 and 255 whatever its own range was
  out = minmax.per_image_minmax(f["uint8_inputs"])
  assert (out.min(axis=(1, 2, 3)) == 0).all() and (out.max(axis=(1, 2, 3)) == 255).all()
  assert not np.array_equal(out, f["uint8_inputs"])


def test_a_constant_image_becomes_zeros():
  images = np.stack([np.full((4, 4, 3), 77, np.uint8), np.arange(48, dtype=np.uint8).reshape(4, 4, 3)])
  out = minmax.per_image_minmax(images)
  assert out.dtype == np.uint8 and (out[0] == 0).all()
  assert out[1].max() == 255 and out[1].min() == 0


def test_image_sets_rescale_their_batches(tmp_path, fixtures_dir):
  images = np.load(fixtures_dir / "maskgil_fid_minmax.npz")["uint8_inputs"]
  np.savez(tmp_path / "s.npz", arr_0=images)
  plain = image_sets.open_image_set(tmp_path / "s.npz")
  scaled = image_sets.open_image_set(tmp_path / "s.npz", per_image_minmax=True)
  assert (scaled.num_images, scaled.image_shape) == (plain.num_images, plain.image_shape)
  got = np.concatenate(list(scaled.batches(2)))
  np.testing.assert_array_equal(got, minmax.per_image_minmax(images))
  np.testing.assert_array_equal(np.concatenate(list(plain.batches(2))), images)
