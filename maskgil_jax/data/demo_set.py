"""The built-in demo data: a labelled Fashion-MNIST subset shipped inside the package.

10 classes of 28x28 grayscale clothing photos (Zalando, MIT licence): 1,000 training images per
class and 200 held-out images per class for measuring generated samples. Provenance and the
extraction recipe are in `demo/README.md`. Small enough (5 MB) that the first command of a new
user trains on real images without downloading anything.
"""
from __future__ import annotations

import functools
import pathlib

import numpy as np

from maskgil_jax.data import preprocess

DEMO_FILE = pathlib.Path(__file__).resolve().parent / "demo" / "fashion_mnist_subset.npz"
DEMO_SPLITS = ("train", "test")  # 'test' is the held-out set
DEMO_IMAGE_SIZE = 28
# where `python -m maskgil_jax.demo` works by default; the web demo serves DEMO_WORKDIR/generator
DEMO_WORKDIR = "out/demo"


@functools.cache
def _arrays() -> dict[str, np.ndarray]:
  if not DEMO_FILE.is_file():
    raise FileNotFoundError(f"demo data {DEMO_FILE} is missing; reinstall maskgil_jax "
                            "(setup.py ships maskgil_jax/data/demo/*.npz)")
  with np.load(DEMO_FILE) as npz:
    return {k: npz[k] for k in npz.files}


def load_demo(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28], labels int32 [N]) of the 'train' or held-out 'test' split."""
  if split not in DEMO_SPLITS:
    raise ValueError(f"demo split {split!r} unknown; one of {DEMO_SPLITS} ('test' is held out)")
  arrays = _arrays()
  return arrays[f"{split}_images"], arrays[f"{split}_labels"].astype(np.int32)


def demo_class_names() -> tuple[str, ...]:
  return tuple(str(n) for n in _arrays()["class_names"])


def demo_images(split: str = "test", image_size: int = 32,
                fit: str = "pad") -> tuple[np.ndarray, np.ndarray]:
  """(float32 [N, S, S, 3] in [-1, 1], labels int32 [N]): a split as the pipeline shows it to the
  model (same fit, three channels), without random views."""
  images, labels = load_demo(split)
  pixels = np.stack([preprocess.fit(x, image_size, fit) for x in images])
  return preprocess.to_model_range(pixels), labels
