"""The demo judge: the shipped classifier tells real clothes from noise; training; save/load."""
import numpy as np
import pytest
from flax import nnx

from maskgil_jax.evaluation import demo_judge as dq
from maskgil_jax.data.demo_set import demo_images
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.demo_classifier import DemoClassifier


@pytest.fixture(scope="module")
def heldout():
  return demo_images("test", dq.IMAGE_SIZE)


def test_shipped_judge_rates_real_images_far_above_noise(heldout):
  images, labels = heldout
  order = np.random.default_rng(0).permutation(len(labels))
  half, rest = order[:1000], order[1000:]
  real = dq.demo_quality(images[half], labels[half], images[rest])
  noise = np.random.default_rng(1).uniform(-1, 1, images[half].shape).astype(np.float32)
  fake = dq.demo_quality(noise, labels[half], images[rest])
  assert real["classifier_accuracy"] > 0.85
  assert fake["classifier_accuracy"] < 0.3
  assert 0 <= real["frechet_distance"] < 0.05 * fake["frechet_distance"]
  wrong_labels = dq.demo_quality(images[half], (labels[half] + 1) % 10, images[rest])
  assert wrong_labels["classifier_accuracy"] < 0.1  # generated for another class: no credit
  assert wrong_labels["frechet_distance"] == pytest.approx(real["frechet_distance"])


def test_training_learns_to_separate_classes(heldout):
  images, labels = heldout
  keep = np.isin(labels, (1, 8))  # trousers and bags
  x, y = images[keep][:, ::2, ::2], (labels[keep] == 8).astype(np.int32)  # 16px: fast on CPU
  model = dq.train_demo_classifier(x[:300], y[:300], steps=30, batch_size=32, lr=3e-3)
  logits, features = dq.classify(model, x[300:])
  assert features.shape == (len(x) - 300, model.feature_dim)
  assert np.mean(np.argmax(logits, -1) == y[300:]) > 0.9


def test_save_load_round_trip_and_bad_files(tmp_path, heldout):
  model = DemoClassifier(10, rngs=nnx.Rngs(3))
  path = tmp_path / "judge.npz"
  dq.save_classifier(model, path)
  back = dq.load_classifier(path)
  images = heldout[0][:4]
  np.testing.assert_array_equal(dq.classify(model, images)[0], dq.classify(back, images)[0])
  (tmp_path / "broken.npz").write_bytes(path.read_bytes()[:100])
  with pytest.raises(CheckpointError, match="broken.npz"):
    dq.load_classifier(tmp_path / "broken.npz")
  with np.load(path) as npz:
    arrays = {k: npz[k] for k in npz.files}
  arrays["convs.0.weight"] = arrays["convs.0.weight"][:, :, :1]
  np.savez(tmp_path / "misshaped.npz", **arrays)
  with pytest.raises(CheckpointError, match="mis-shaped convs.0.weight"):
    dq.load_classifier(tmp_path / "misshaped.npz")
  with pytest.raises(CheckpointError, match="no such file"):
    dq.load_classifier(tmp_path / "missing.npz")


def test_inputs_of_different_sizes_are_refused(heldout):
  images, labels = heldout
  with pytest.raises(ValueError, match="same size"):
    dq.demo_quality(images[:4, :16, :16], labels[:4], images[:8])
  with pytest.raises(ValueError, match="one class per image"):
    dq.demo_quality(images[:4], labels[:3], images[:8])
