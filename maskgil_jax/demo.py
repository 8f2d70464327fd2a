"""`python -m maskgil_jax.demo --workdir DIR`: the whole MaskGIL pipeline on a CPU, end to end.

1. trains the demo tokenizer on the Fashion-MNIST images shipped in the package,
2. trains a small MaskGIL on the codes of that (frozen) tokenizer,
3. samples with the 8-step MAR decoder and writes `DIR/samples.png`, one row per class,
4. judges the samples with the shipped demo classifier (accuracy on the asked-for class,
   Frechet distance to held-out real images in its feature space) next to the same figures
   for uniformly random codes and for the tokenizer's reconstructions of real images,
   and writes `DIR/results.json`.

Each stage is the ordinary trainer (`configs/demo.py:tokenizer` / `:generator`), so rerunning
the same command resumes an interrupted stage and skips finished ones.
"""
from __future__ import annotations

import argparse  # noqa: F401 (the Namespace type)
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax import checkpoints, cli, configlib, train
from maskgil_jax.data.demo_set import demo_class_names, demo_images
from maskgil_jax.decode import DecodeSettings, generate_tokens, tokens_to_images, write_png
from maskgil_jax.demo_quality import demo_quality
from maskgil_jax.models import vq
from maskgil_jax.models.transformer import Transformer

_GRID_COLUMNS = 10


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.Parser("demo", "Train the demo tokenizer and MaskGIL on the shipped Fashion-MNIST "
                 "subset, sample one row per class and measure the samples.")
  p.add_argument("--workdir", default="out/demo", help="where both runs, samples and figures go")
  p.add_argument("--task", choices=("class", "text"), default="class",
                 help="class-conditional demo, or text-to-image (maskgil_jax/demo_text.py)")
  p.add_argument("--per-class", type=int, default=100, help="samples per class for the figures")
  p.add_argument("--tokenizer-steps", type=int, help="override the tokenizer's training steps")
  p.add_argument("--generator-steps", type=int, help="override the generator's training steps")
  args = p.parse(argv)
  for name in ("per_class", "tokenizer_steps", "generator_steps"):
    value = getattr(args, name)
    if value is not None and value < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
  return args


def stage_config(stage: str, steps: int | None, tokenizer_ckpt: str = ""):
  config = configlib.load_config(f"demo:{stage}")
  if steps is not None:
    config.total_steps = steps
    config.optim.warmup_steps = min(config.optim.warmup_steps, steps // 10)
  config.tokenizer.ckpt = tokenizer_ckpt
  return config


def run_stage(config, workdir: pathlib.Path) -> float:
  """Train (or resume, or skip when finished) one stage; returns the seconds it took."""
  start = time.time()
  if checkpoints.latest_step(workdir) != config.total_steps:
    train.train(config, str(workdir))
  return time.time() - start


def class_rows(images: np.ndarray, labels: np.ndarray, columns: int) -> np.ndarray:
  """A grid whose row c holds the first `columns` images generated for class c."""
  rows = [np.concatenate(list(images[labels == c][:columns]), axis=1)
          for c in np.unique(labels)]
  return np.concatenate(rows, axis=0)


def to_model_range(images_uint8) -> np.ndarray:
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def sample_images(model, tokenizer, labels, seed: int, settings, batch: int = 250):
  """uint8 images for `labels`, in fixed-size batches (one compiled program)."""
  out = []
  padded = np.concatenate([labels, np.zeros(-len(labels) % batch, labels.dtype)])
  for i in range(0, len(padded), batch):
    key = jax.random.fold_in(jax.random.key(seed), i)
    tokens = generate_tokens(model, jnp.asarray(padded[i:i + batch]), key, settings, "mar")
    out.append(np.asarray(tokens_to_images(tokenizer, tokens)))
  return np.concatenate(out)[:len(labels)]


def run(args) -> None:
  workdir = pathlib.Path(args.workdir).absolute()  # configs store absolute paths
  tok_dir, gen_dir = workdir / "tokenizer", workdir / "generator"
  seconds = {}

  tok_config = stage_config("tokenizer", args.tokenizer_steps)
  seconds["tokenizer"] = run_stage(tok_config, tok_dir)
  gen_config = stage_config("generator", args.generator_steps, str(tok_dir))
  seconds["generator"] = run_stage(gen_config, gen_dir)

  start = time.time()
  config = configlib.finalize(gen_config)
  tokenizer = checkpoints.load_tokenizer(tok_dir, config.tokenizer)
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  model = checkpoints.restore_params(gen_dir, abstract)
  settings = DecodeSettings.from_config(config.decode)
  classes = config.model.num_classes
  labels = np.repeat(np.arange(classes, dtype=np.int32), args.per_class)
  generated = sample_images(model, tokenizer, labels, config.seed, settings)
  write_png(workdir / "samples.png", class_rows(generated, labels, _GRID_COLUMNS))

  real, real_labels = demo_images("test", config.data.image_size, config.data.fit)
  grid = config.model.grid_size
  random_codes = jax.random.randint(jax.random.key(1), (len(labels), grid * grid), 0,
                                    config.model.codebook_size)
  random_images = np.asarray(tokens_to_images(tokenizer, random_codes))
  _, reconstructed = vq.reconstruct(tokenizer, jnp.asarray(real))
  seconds["sampling"] = time.time() - start

  results = {
      "maskgil_mar_8_steps": demo_quality(to_model_range(generated), labels, real),
      "random_codes": demo_quality(to_model_range(random_images), labels, real),
      "tokenizer_reconstructions": demo_quality(np.clip(np.asarray(reconstructed), -1, 1),
                                                real_labels, real),
      "settings": {"decode": {k: config.decode[k] for k in ("steps", "cfg_scale",
                                                            "temperature", "choice_temperature")},
                   "samples_per_class": args.per_class, "classes": list(demo_class_names()),
                   "tokenizer_steps": tok_config.total_steps,
                   "generator_steps": gen_config.total_steps},
      "seconds": {k: round(v, 1) for k, v in seconds.items()},
  }
  (workdir / "results.json").write_text(json.dumps(results, indent=2))
  for name in ("maskgil_mar_8_steps", "random_codes", "tokenizer_reconstructions"):
    r = results[name]
    print(f"{name:<28} classifier accuracy {r['classifier_accuracy']:.3f}   "
          f"Frechet distance {r['frechet_distance']:.2f}")
  print(f"demo: samples {workdir / 'samples.png'}, figures {workdir / 'results.json'}, "
        f"{sum(seconds.values()) / 60:.1f} min")


def _main(argv=None) -> int:
  args = parse_args(argv)
  if args.task == "text":
    from maskgil_jax import demo_text
    demo_text.run(args, stage_config, run_stage)
  else:
    run(args)
  return 0


def main(argv=None) -> int:
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
