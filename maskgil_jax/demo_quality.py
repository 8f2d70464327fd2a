"""`python -m maskgil_jax.demo_quality --out FILE`: train the demo judge and save it.

The judge (a small classifier of the demo set's 10 classes, `evaluation/demo_judge.py`) is
trained once and shipped (`data/demo/demo_classifier.npz`); this command retrains it (about
20 minutes on two busy CPU cores):

    python -m maskgil_jax.demo_quality --out maskgil_jax/data/demo/demo_classifier.npz
"""
from __future__ import annotations

import time

import numpy as np

from maskgil_jax import cli
from maskgil_jax.data.demo_set import demo_images
from maskgil_jax.evaluation.demo_judge import (IMAGE_SIZE, classify, save_classifier,
                                               train_demo_classifier)


def _main(argv=None) -> int:
  p = cli.Parser("demo_quality", "Train the demo-set classifier that judges generated samples, "
                 "save it, and report its accuracy on the held-out real images.")
  p.add_argument("--out", required=True, help="where to write the parameters (.npz)")
  p.add_argument("--steps", type=int, default=1500, help="training steps of batch 128")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  args = p.parse(argv)
  if args.steps < 1:
    raise cli.UsageError(f"--steps must be >= 1, got {args.steps}")
  cli.check_new_output(args.out, overwrite=args.overwrite)
  start = time.time()
  train_x, train_y = demo_images("train", IMAGE_SIZE)
  model = train_demo_classifier(train_x, train_y, steps=args.steps, seed=args.seed,
                                log_every=100)
  save_classifier(model, args.out)
  test_x, test_y = demo_images("test", IMAGE_SIZE)
  logits, _ = classify(model, test_x)
  accuracy = float(np.mean(np.argmax(logits, -1) == test_y))
  cli.summary(f"classifier saved to {args.out}: held-out accuracy {accuracy:.4f} "
              f"({len(test_y)} images), trained {args.steps} steps in {time.time() - start:.0f}s")
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
