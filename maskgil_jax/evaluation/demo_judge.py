"""How good are samples of the demo set? A fixed judge: a small classifier of its 10 classes.

    quality = demo_quality(images, labels, real_heldout)
    # {'classifier_accuracy': share of samples labelled as the class they were generated for,
    #  'frechet_distance': Frechet distance to held-out real images in the classifier's features}

`images` are generated samples (float [N, S, S, 3] in [-1, 1]), `labels` the classes asked
for, `real_heldout` held-out real images in the same form (`demo_set.demo_images('test', S)`).
The judge is trained once and shipped (`data/demo/demo_classifier.npz`), so figures of
different runs are comparable (held-out accuracy 88 %). To retrain it (about 20 minutes on
two busy CPU cores):

    python -m maskgil_jax.demo_quality --out maskgil_jax/data/demo/demo_classifier.npz
"""
from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from maskgil_jax import files
from maskgil_jax.evaluation.fid import feature_statistics, frechet_distance
from maskgil_jax.interop.names import Rule, import_state_dict, named_arrays
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.demo_classifier import DemoClassifier
from maskgil_jax.parallel.pump import ahead, padded, slices

CLASSIFIER_FILE = (pathlib.Path(__file__).resolve().parents[1] / "data" / "demo"
                   / "demo_classifier.npz")
IMAGE_SIZE = 32  # the classifier sees the 28px images padded to 32, like the demo pipeline
EVAL_BATCH = 250


def train_demo_classifier(images, labels, *, steps: int = 1500, batch_size: int = 128,
                          lr: float = 2e-3, seed: int = 0, log_every: int = 0) -> DemoClassifier:
  """Adam with a cosine decay on cross-entropy, random horizontal flips; returns the model."""
  model = DemoClassifier(int(labels.max()) + 1, rngs=nnx.Rngs(seed))
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  opt_state = tx.init(model)

  @jax.jit
  def step(model, opt_state, x, y, key):
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1], x)

    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(model)
    updates, opt_state = tx.update(grads, opt_state, model)
    return optax.apply_updates(model, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  for i in range(steps):
    idx = rng.integers(0, len(labels), batch_size)
    model, opt_state, loss = step(model, opt_state, images[idx], labels[idx],
                                  jax.random.fold_in(key, i))
    if log_every and (i + 1) % log_every == 0:
      print(f"step {i + 1}/{steps} loss {float(loss):.4f}", flush=True)
  return model


@jax.jit
def _logits_and_features(model, images):
  features = model.features(images)
  return model.head(features), features


def classify(model: DemoClassifier, images) -> tuple[np.ndarray, np.ndarray]:
  """(logits [N, classes], features [N, feature_dim]) in fixed-size batches (one compile)."""
  images = np.asarray(images, np.float32)
  outs = list(ahead(
      lambda part: _logits_and_features(model, padded(images[part[0]:part[0] + EVAL_BATCH],
                                                      EVAL_BATCH)),
      slices(len(images), EVAL_BATCH),
      lambda part, out: tuple(np.asarray(x)[:part[1]] for x in out)))
  logits, features = (np.concatenate([o[k] for o in outs]) for k in (0, 1))
  return logits, features


def demo_quality(images, labels, real_heldout,
                 classifier: DemoClassifier | None = None) -> dict[str, float]:
  """{'classifier_accuracy', 'frechet_distance'} of generated `images` (see module doc)."""
  images, real_heldout = np.asarray(images), np.asarray(real_heldout)
  labels = np.asarray(labels)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:] != real_heldout.shape[1:]:
    raise ValueError(f"images {images.shape} and real_heldout {real_heldout.shape} must both be "
                     "[N, S, S, 3] of the same size")
  if labels.shape != (len(images),):
    raise ValueError(f"labels {labels.shape} must hold one class per image ({len(images)})")
  classifier = classifier if classifier is not None else load_classifier()
  logits, features = classify(classifier, images)
  _, real_features = classify(classifier, real_heldout)
  return {
      "classifier_accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
      "frechet_distance": frechet_distance(*feature_statistics(features),
                                           *feature_statistics(real_features)),
  }


def _identity_rules(model) -> list[Rule]:
  return [Rule(name, name) for name in named_arrays(model)]


def save_classifier(model: DemoClassifier, path: str | os.PathLike) -> None:
  """Parameters as a compressed .npz keyed by parameter path (written to a temp file, renamed)."""
  arrays = {name: np.asarray(value) for name, value in named_arrays(model).items()}
  with files.atomic_path(path, ".tmp.npz") as tmp:
    np.savez_compressed(tmp, **arrays)


def load_classifier(path: str | os.PathLike = CLASSIFIER_FILE) -> DemoClassifier:
  """The classifier saved at `path` (default: the shipped one); CheckpointError if unusable."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  try:
    with np.load(path) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError
    raise CheckpointError(f"{path}: not a readable .npz of classifier parameters ({e})") from e
  head = arrays.get("head.weight")
  if head is None or head.ndim != 2:
    raise CheckpointError(f"{path}: lacks the classifier's head.weight")
  abstract = nnx.eval_shape(lambda: DemoClassifier(head.shape[1], rngs=nnx.Rngs(0)))
  return import_state_dict(abstract, arrays, _identity_rules(abstract), source=str(path))
