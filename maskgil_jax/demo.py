"""`python -m maskgil_jax.demo --workdir DIR`: the whole MaskGIL pipeline on a CPU, end to end.

1. trains the demo tokenizer on the Fashion-MNIST images shipped in the package,
2. trains a small MaskGIL on the codes of that (frozen) tokenizer with the joint objective, so
   the one model decodes MAR, AR and the hybrid (docs/generation.md),
3. runs a small hybrid study (`maskgil_jax.study`): 8-step MAR alone, AR alone and hybrids in
   between, every point decoded for the same labels and timed, and writes `DIR/samples.png`
   (8-step MAR, one row per class) and `DIR/study/tradeoff.png`,
4. judges the samples with the shipped demo classifier (accuracy on the asked-for class,
   Frechet distance to held-out real images in its feature space) next to the same figures
   for uniformly random codes and for the tokenizer's reconstructions of real images,
   and writes `DIR/results.json`: MAR-8, AR and the best hybrid side by side.

Each stage is the ordinary trainer (`configs/demo.py:tokenizer` / `:generator`), so rerunning
the same command resumes an interrupted stage and skips finished ones.
"""
from __future__ import annotations

import argparse  # noqa: F401 (the Namespace type)
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from maskgil_jax import checkpoints, cli, configlib, loading
from maskgil_jax.training import trainer
from maskgil_jax.data.demo_set import DEMO_WORKDIR, demo_class_names
from maskgil_jax.data.preprocess import to_model_range
from maskgil_jax.decode import tokens_to_images, write_png
from maskgil_jax.evaluation import hybrid_study as study
from maskgil_jax.evaluation.demo_judge import demo_quality
from maskgil_jax.models import vq

_GRID_COLUMNS = 10
# the demo's hybrid study: AR tokens of the 8x8 grid (0 = MAR alone; the whole grid, AR alone,
# is always added), each followed by config.decode.steps MAR steps. Kept to the short splits
# (the best of 4, 8, 16 and 32 was 4 when measured) so the demo stays under 15 minutes; the
# study command measures more (docs/generation.md).
STUDY_AR_TOKENS = (0, 4, 8)


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.Parser("demo", "Train the demo tokenizer and MaskGIL on the shipped Fashion-MNIST "
                 "subset, sample one row per class and measure the samples.")
  p.add_argument("--workdir", default=DEMO_WORKDIR, help="where both runs, samples and figures go")
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
    trainer.train(config, str(workdir))
  return time.time() - start


def class_rows(images: np.ndarray, labels: np.ndarray, columns: int) -> np.ndarray:
  """A grid whose row c holds the first `columns` images generated for class c."""
  rows = [np.concatenate(list(images[labels == c][:columns]), axis=1)
          for c in np.unique(labels)]
  return np.concatenate(rows, axis=0)


def run_study(model, tokenizer, config, workdir: pathlib.Path, labels, judge) -> dict:
  """The demo's hybrid study (fresh each run); writes samples.png from the MAR point."""
  length = model.layout.num_image_tokens
  mar_point = study.point_name(0, config.decode.steps)

  def grid(name, images):
    if name == mar_point:
      write_png(workdir / "samples.png", class_rows(images, labels, _GRID_COLUMNS))

  points = study.study_points([a for a in STUDY_AR_TOKENS if a <= length] + [length],
                              [config.decode.steps], length)
  return study.run_hybrid_study(
      model, tokenizer, config, workdir / "study", points, labels, seed=config.seed,
      batch_size=min(250, len(labels)), judge=judge, results={"study": "demo", "points": {}},
      on_images=grid,
      title="demo model (joint objective): numbers are tokens written by AR")


def figures(point: dict) -> dict:
  return {"classifier_accuracy": point["demo_accuracy"],
          "frechet_distance": point["demo_frechet"],
          "seconds_per_image": point["seconds_per_image"], "ar_tokens": point["ar_tokens"],
          "mar_steps": point["steps"]}


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
  tokenizer = loading.load_tokenizer(tok_dir, config.tokenizer)
  model = loading.load_generator(gen_dir, config.model)
  classes = config.model.num_classes
  labels = np.repeat(np.arange(classes, dtype=np.int32), args.per_class)
  judge = study.Judge(config, None, None, workdir)
  hybrid = run_study(model, tokenizer, config, workdir, labels, judge)
  points = hybrid["points"]
  length = config.model.grid_size ** 2
  mar_name, ar_name = study.point_name(0, config.decode.steps), study.point_name(length, None)
  between = {n: p for n, p in points.items() if 0 < p["ar_tokens"] < length}
  best = min(between, key=lambda n: between[n]["demo_frechet"])

  real = judge.real
  grid = config.model.grid_size
  random_codes = jax.random.randint(jax.random.key(1), (len(labels), grid * grid), 0,
                                    config.model.codebook_size)
  random_images = np.asarray(tokens_to_images(tokenizer, random_codes))
  _, reconstructed = vq.reconstruct(tokenizer, jnp.asarray(real))
  seconds["sampling"] = time.time() - start

  results = {
      "maskgil_mar_8_steps": figures(points[mar_name]),
      "ar": figures(points[ar_name]),
      "best_hybrid": {"point": best, **figures(points[best])},
      "random_codes": demo_quality(to_model_range(random_images), labels, real),
      "tokenizer_reconstructions": demo_quality(np.clip(np.asarray(reconstructed), -1, 1),
                                                judge.real_labels, real),
      "hybrid_study": points,
      "settings": {"decode": {k: config.decode[k] for k in (
                       "steps", "cfg_scale", "temperature", "choice_temperature",
                       "ar_cfg_scale", "ar_temperature", "hybrid_schedule")},
                   "objective": config.objective.to_dict(),
                   "samples_per_class": args.per_class, "classes": list(demo_class_names()),
                   "tokenizer_steps": tok_config.total_steps,
                   "generator_steps": gen_config.total_steps},
      "seconds": {k: round(v, 1) for k, v in seconds.items()},
  }
  (workdir / "results.json").write_text(json.dumps(results, indent=2))
  for name in ("maskgil_mar_8_steps", "ar", "best_hybrid", "random_codes",
               "tokenizer_reconstructions"):
    r = results[name]
    label = f"{name} ({r['point']})" if name == "best_hybrid" else name
    speed = f"   {r['seconds_per_image'] * 1e3:.2f} ms/image" if "seconds_per_image" in r else ""
    print(f"{label:<30} classifier accuracy {r['classifier_accuracy']:.3f}   "
          f"Frechet distance {r['frechet_distance']:.2f}{speed}")
  print(f"demo: samples {workdir / 'samples.png'}, trade-off {workdir / 'study' / study.PLOT}, "
        f"figures {workdir / 'results.json'}, {sum(seconds.values()) / 60:.1f} min")


def _main(argv=None) -> int:
  args = parse_args(argv)
  if args.task == "text":
    from maskgil_jax import demo_text
    demo_text.run(args, stage_config, run_stage)
  else:
    run(args)
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
