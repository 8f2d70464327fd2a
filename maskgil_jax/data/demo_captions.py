"""The text demo's data: the shipped Fashion-MNIST subset with captions made from templates.

Every image gets one caption per training template filled with its class name ("a photo of a
sneaker"); the pipeline draws one of them per epoch. The held-out templates are never seen in
training: the demo judges samples drawn from prompts written with them. Every other image is
shown cut to a 3:4 portrait (28 x 21 px), so the two aspect buckets of the demo (32x32 and
32x24 px) both receive images, as a real captioned set of mixed shapes would give them.
"""
from __future__ import annotations

import numpy as np

from maskgil_jax.data.demo_set import demo_class_names
from maskgil_jax.data.sources import DemoSource

TRAIN_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}",
                   "a {} on a black background", "a small grey {}", "a {}")
HELD_OUT_TEMPLATES = ("a product shot of a {}", "this is a {}", "a centered {} in the frame")


def class_words() -> tuple[str, ...]:
  """Readable class names for captions: 'T-shirt/top' -> 't-shirt', 'Ankle boot' -> 'ankle boot'."""
  return tuple(n.split("/")[0].lower() for n in demo_class_names())


def captions_for(label: int, templates=TRAIN_TEMPLATES) -> tuple[str, ...]:
  return tuple(t.format(class_words()[label]) for t in templates)


def held_out_prompts(per_class: int) -> tuple[list[str], np.ndarray]:
  """(prompts, labels): `per_class` prompts for each class from the held-out templates, in
  class order, cycling through the templates."""
  prompts, labels = [], []
  for label in range(len(class_words())):
    for i in range(per_class):
      prompts.append(HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)].format(class_words()[label]))
      labels.append(label)
  return prompts, np.array(labels, np.int32)


def portrait(record: int) -> bool:
  return record % 2 == 1


class DemoCaptionSource(DemoSource):
  """The demo subset ('train' or held-out 'test') with template captions, in memory."""

  skipped_empty = 0

  def load(self, record: int) -> tuple[np.ndarray, tuple[str, ...]]:
    pixels = self.images[record]
    if portrait(record):
      pixels = pixels[:, 4:25]  # 28 x 21: the centre columns (the garment stays whole)
    return pixels, captions_for(int(self.labels[record]))

  def size(self, record: int) -> tuple[int, int]:
    return (28, 21) if portrait(record) else (28, 28)

  def captions_of(self, record: int) -> tuple[str, ...]:
    return captions_for(int(self.labels[record]))

  def label(self, record: int) -> int:
    return int(self.labels[record])

  def describe(self, record: int) -> str:
    return f"demo image {record}"
