"""The shipped demo set: real labelled images, balanced classes, a held-out split, small file."""
import numpy as np
import pytest

from maskgil_jax.data.demo_set import DEMO_FILE, demo_class_names, load_demo


def test_demo_set_is_balanced_real_images_with_a_held_out_split():
  train_x, train_y = load_demo("train")
  test_x, test_y = load_demo("test")
  assert train_x.shape == (10000, 28, 28) and test_x.shape == (2000, 28, 28)
  assert train_x.dtype == np.uint8 and train_y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(train_y), [1000] * 10)
  np.testing.assert_array_equal(np.bincount(test_y), [200] * 10)
  assert demo_class_names()[0] == "T-shirt/top" and len(demo_class_names()) == 10
  assert 50 < train_x.mean() < 100  # clothing on a black background, not noise or blanks
  # held-out images are not copies of training images
  train_keys = {x.tobytes() for x in train_x}
  assert not any(x.tobytes() in train_keys for x in test_x)
  assert DEMO_FILE.stat().st_size < 6_000_000


def test_unknown_split_is_refused():
  with pytest.raises(ValueError, match="held out"):
    load_demo("validation")
