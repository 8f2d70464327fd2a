"""`python -m maskgil_jax.study hybrid`: which AR / MAR split to decode with, measured.

  python -m maskgil_jax.study hybrid --ckpt CKPT [--ar-ckpt CKPT] [--config CONFIG] \
      --ar-tokens 0,16,32,64,128,192,256 --steps 4,8,16 --per-class N --out DIR \
      [--ref REF --inception WEIGHTS] [--cfg-scale W] [--ar-cfg-scale W] \
      [--hybrid-schedule {spread,head,tail}] [--batch-size B] [--seed S] [--tokenizer PATH]

Every point is a decoder setting: `a` tokens written by AR, then MAR in `s` steps. a = 0 is
MAR alone (one point per step count), a = all the grid's tokens is AR alone (one point, the
common end of every curve), anything between is the hybrid. For each point the same labels
(N per class) and seeds are decoded and the study records:
- seconds per image: wall time of the token decoder alone on this machine's default device,
  after a warm-up call that compiles it (the tokenizer's decoding is the same for every point
  and is left out), and the forward passes the decoder ran;
- quality: the demo judge's accuracy and Frechet distance when the model was trained on the
  demo data (`maskgil_jax.demo_quality`), and FID, sFID, IS, precision and recall (the
  `evaluate` command on the point's images) when `--ref` and `--inception` are given.

Writes DIR/results.json after every point (a rerun skips the points it holds, so an
interrupted study resumes, and a study given more points adds them) and DIR/tradeoff.png:
quality against seconds per image, one curve per MAR step count, MAR-only and AR-only marked.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from maskgil_jax import cli, configlib
from maskgil_jax.configlib.load import apply_override
from maskgil_jax.data.preprocess import to_model_range
from maskgil_jax.decode import DecodeSettings, generate_tokens, tokens_to_images
from maskgil_jax.decode.hybrid import mar_steps_run
from maskgil_jax.decode.sampling import HYBRID_SCHEDULES

RESULTS = "results.json"
PLOT = "tradeoff.png"
# decode fields a study may set from flags (the rest come from the checkpoint's config.decode)
DECODE_FLAGS = ("cfg_scale", "temperature", "ar_cfg_scale", "ar_temperature", "hybrid_schedule",
                "schedule", "choice_temperature")


# ---- points ---------------------------------------------------------------------------------
def point_name(ar_tokens: int, steps: int | None) -> str:
  return f"ar{ar_tokens}" if steps is None else f"ar{ar_tokens}_mar{steps}"


def study_points(ar_tokens: list[int], steps: list[int], length: int) -> list[tuple[int, int | None]]:
  """(AR tokens, MAR steps or None for AR alone) of every point, in the order they run."""
  bad = [a for a in ar_tokens if not 0 <= a <= length]
  if bad:
    raise cli.UsageError(f"--ar-tokens {bad}: the grid has {length} tokens (0 = MAR alone, "
                         f"{length} = AR alone)")
  points = []
  for a in sorted(set(ar_tokens)):
    points += [(a, None)] if a == length else [(a, s) for s in sorted(set(steps))]
  return points


def method_of(ar_tokens: int, length: int) -> str:
  return "mar" if ar_tokens == 0 else "ar" if ar_tokens == length else "hybrid"


def point_settings(base: DecodeSettings, ar_tokens: int, steps: int | None,
                   length: int) -> DecodeSettings:
  """The decoder settings of one point. AR alone decodes with the AR half's guidance and
  temperature, so it is the hybrid's end point."""
  if steps is None:
    return base.ar_half().replace(ar_tokens=length)
  return base.replace(steps=steps, ar_tokens=ar_tokens)


def forward_passes(settings: DecodeSettings, ar_tokens: int, length: int) -> int:
  """Network calls of one decoding (a guided call counts once): AR prefill + cached steps,
  then the MAR steps that run."""
  ar_calls = ar_tokens if ar_tokens else 0
  if ar_tokens == length:
    return ar_calls
  return ar_calls + mar_steps_run(settings.replace(ar_tokens=ar_tokens), length)


# ---- decoding, timed ------------------------------------------------------------------------
def decode_tokens(model, labels: np.ndarray, seed: int, settings: DecodeSettings, method: str,
                  ar_model=None, batch: int = 250) -> tuple[np.ndarray, float]:
  """(tokens [N, L], seconds per image) for `labels`, in fixed-size batches (one compiled
  program); batch i (by its first index) draws with fold_in(key(seed), i). The first batch
  compiles the program and is not timed; the clock runs over the others (over a second run of
  the first when there is only one), so the figure is decoding, not compilation."""
  if method == "ar" and ar_model is not None:  # AR alone with the separate AR model
    model, ar_model = ar_model, None
  padded = np.concatenate([labels, np.zeros(-len(labels) % batch, labels.dtype)]).astype(np.int32)
  starts = list(range(0, len(padded), batch))
  run = lambda i: generate_tokens(model, jnp.asarray(padded[i:i + batch]),
                                  jax.random.fold_in(jax.random.key(seed), i), settings, method,
                                  ar_model)
  out = [jax.block_until_ready(run(0))]
  timed = starts[1:] or [0]
  start = time.perf_counter()
  more = jax.block_until_ready([run(i) for i in timed])
  per_image = (time.perf_counter() - start) / (len(timed) * batch)
  out += more if starts[1:] else []
  return np.concatenate([np.asarray(t) for t in out])[:len(labels)], per_image


def images_of(tokenizer, tokens: np.ndarray, batch: int = 250) -> np.ndarray:
  """uint8 images [N, H, W, 3] of token grids, in fixed-size batches."""
  n = len(tokens)
  padded = np.concatenate([tokens, np.zeros((-n % batch, tokens.shape[1]), tokens.dtype)])
  out = [np.asarray(tokens_to_images(tokenizer, jnp.asarray(padded[i:i + batch])))
         for i in range(0, len(padded), batch)]
  return np.concatenate(out)[:n]


# ---- quality --------------------------------------------------------------------------------
class Judge:
  """The quality figures a study can compute: the demo judge on demo models, `evaluate` with
  --ref and --inception."""

  def __init__(self, config, ref: str | None, inception: str | None, workdir: pathlib.Path):
    self.demo = config.data.name == "demo"
    self.real = self.real_labels = None
    if self.demo:
      from maskgil_jax.data.demo_set import demo_images
      self.real, self.real_labels = demo_images("test", config.data.image_size, config.data.fit)
    self.ref, self.inception, self.workdir = ref, inception, workdir

  def __call__(self, images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    out = {}
    if self.demo:
      from maskgil_jax.demo_quality import demo_quality
      q = demo_quality(to_model_range(np.asarray(images)), labels, self.real)
      out.update(demo_accuracy=q["classifier_accuracy"], demo_frechet=q["frechet_distance"])
    if self.ref:
      from maskgil_jax import evaluate
      from maskgil_jax.evaluation.image_sets import write_npz
      path = self.workdir / "points" / f"{name}.npz"
      path.parent.mkdir(parents=True, exist_ok=True)
      write_npz(path, {"arr_0": images, "labels": labels})
      result = evaluate.evaluate(evaluate.parse_args(
          ["--samples", str(path), "--ref", self.ref, "--inception", self.inception]))
      out.update(result["metrics"])
      path.unlink()
    return out


# ---- the plot -------------------------------------------------------------------------------
QUALITY = (("fid", "FID (lower is better)"), ("demo_frechet", "demo judge Frechet distance"),
           ("demo_accuracy", "demo judge accuracy"))


def plot(results: dict, path: pathlib.Path, title: str = "") -> None:
  """Quality against seconds per image: one panel per measured quality, one curve per MAR
  step count running from MAR alone (square) through the hybrids to AR alone (star)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  points = list(results["points"].values())
  measures = [(k, label) for k, label in QUALITY if any(k in p for p in points)]
  if not measures:
    return
  fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures), 4.2), squeeze=False)
  ar_only = [p for p in points if p["steps"] is None]
  steps = sorted({p["steps"] for p in points if p["steps"] is not None})
  colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, max(len(steps), 1)))
  for ax, (key, label) in zip(axes[0], measures):
    for colour, s in zip(colours, steps):
      curve = sorted((p for p in points if p["steps"] == s), key=lambda p: p["ar_tokens"])
      curve += ar_only
      ax.plot([p["seconds_per_image"] for p in curve], [p[key] for p in curve], "o-",
              color=colour, label=f"MAR {s} steps", markersize=4)
      for p in curve:
        if p["steps"] is not None and 0 < p["ar_tokens"]:
          ax.annotate(str(p["ar_tokens"]), (p["seconds_per_image"], p[key]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
      mar_only = [p for p in curve if p["ar_tokens"] == 0]
      ax.plot([p["seconds_per_image"] for p in mar_only], [p[key] for p in mar_only], "s",
              color=colour, markersize=9, markeredgecolor="black")
    ax.plot([p["seconds_per_image"] for p in ar_only], [p[key] for p in ar_only], "*",
            color="crimson", markersize=14, markeredgecolor="black", label="AR only")
    ax.plot([], [], "s", color="grey", markeredgecolor="black", label="MAR only")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.suptitle(title or "hybrid decoding: numbers are tokens written by AR", fontsize=10)
  fig.tight_layout()
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def best_point(results: dict) -> str | None:
  """The point with the best quality: lowest FID, else lowest demo Frechet distance."""
  for key in ("fid", "demo_frechet"):
    scored = {n: p[key] for n, p in results["points"].items() if key in p}
    if scored:
      return min(scored, key=scored.get)
  return None


# ---- the command ----------------------------------------------------------------------------
def parse_ints(text: str, flag: str) -> list[int]:
  try:
    values = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise cli.UsageError(f"{flag} {text!r}: not comma-separated integers") from None
  if not values or any(v < 0 for v in values):
    raise cli.UsageError(f"{flag} {text!r}: give one or more integers >= 0")
  return values


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.Parser("study", "Measure the speed-quality trade-off of hybrid decoding (AR writes "
                 "the first tokens, MAR the rest) over a grid of splits and step counts.",
                 config="optional", override_prefixes=("ar-config",),
                 usage="hybrid --ckpt CKPT [--ar-ckpt CKPT] --ar-tokens 0,16,... --steps 4,8 "
                       "--per-class N --out DIR [options]")
  p.add_argument("study", choices=("hybrid",), help="what to study")
  p.add_argument("--ckpt", required=True, help="our checkpoint (trained with 'joint' or 'ar' "
                 "to decode AR alone), or a PyTorch GPT file with --config")
  p.add_argument("--ar-ckpt", help="a separate AR model for the AR half (and AR alone)")
  p.add_argument("--ar-config", help="the AR model's config (default: its checkpoint's)")
  p.add_argument("--ar-tokens", required=True, help="comma-separated AR token counts")
  p.add_argument("--steps", required=True, help="comma-separated MAR step counts")
  p.add_argument("--per-class", type=int, default=50, help="samples per class and point")
  p.add_argument("--out", required=True, help="folder of results.json and tradeoff.png (a "
                 "rerun resumes)")
  p.add_argument("--ref", help="reference images or statistics for FID (with --inception)")
  p.add_argument("--inception", help="FID Inception weights (with --ref)")
  p.add_argument("--tokenizer", help="tokenizer weights (default: config.tokenizer.ckpt)")
  p.add_argument("--cfg-scale", type=float, help="MAR guidance w")
  p.add_argument("--temperature", type=float, help="MAR temperature")
  p.add_argument("--ar-cfg-scale", type=float, help="AR guidance w")
  p.add_argument("--ar-temperature", type=float, help="AR temperature")
  p.add_argument("--hybrid-schedule", choices=HYBRID_SCHEDULES)
  p.add_argument("--schedule", help="MAR mask schedule")
  p.add_argument("--choice-temperature", type=float)
  p.add_argument("--batch-size", type=int, default=250, help="samples per compiled call")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds "
                 "another study")
  args = p.parse(argv)
  args.ar_token_list = parse_ints(args.ar_tokens, "--ar-tokens")
  args.step_list = parse_ints(args.steps, "--steps")
  if 0 in args.step_list:
    raise cli.UsageError("--steps: MAR needs at least one step")
  if args.per_class < 1 or args.batch_size < 1:
    raise cli.UsageError("--per-class and --batch-size must be >= 1")
  if bool(args.ref) != bool(args.inception):
    raise cli.UsageError("--ref and --inception go together (FID needs both)")
  return args


def study_record(args, config, device: str) -> dict:
  """What decides every point's figures: a rerun into the same --out must match it."""
  from maskgil_jax.sample import checkpoint_id, path_id
  return {"ckpt": list(checkpoint_id(args.ckpt)), "ar_ckpt": list(checkpoint_id(args.ar_ckpt)),
          "tokenizer": path_id(args.tokenizer or config.tokenizer.ckpt),
          "per_class": args.per_class, "seed": args.seed, "ref": path_id(args.ref),
          "decode": {k: config.decode[k] for k in ("schedule", "cfg_scale", "cfg_schedule",
                                                   "temperature", "choice_temperature", "top_k",
                                                   "top_p", "ar_cfg_scale", "ar_temperature",
                                                   "hybrid_schedule")},
          "device": device, "objective": config.objective.name}


def open_results(out: pathlib.Path, record: dict, overwrite: bool) -> dict:
  """The results held in --out (same study), or new ones; refuses another study's folder."""
  path = out / RESULTS
  if path.exists() and not overwrite:
    held = json.loads(path.read_text())
    if held.get("study") != record:
      changed = sorted(k for k in record if held.get("study", {}).get(k) != record[k])
      raise cli.OutputExistsError(f"--out {out} holds a study of other settings ({changed}); "
                                  "choose another folder or pass --overwrite")
    return held
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise cli.OutputExistsError(f"--out {out} holds files this command did not write; choose "
                                "another folder or pass --overwrite")
  return {"study": record, "points": {}}


def write_results(out: pathlib.Path, results: dict) -> None:
  tmp = out / f".{RESULTS}.tmp"
  tmp.write_text(json.dumps(results, indent=2) + "\n")
  os.replace(tmp, out / RESULTS)


def run_hybrid_study(model, tokenizer, config, out: pathlib.Path, points, labels, *, seed: int,
                     batch_size: int, judge, results: dict, ar_model=None,
                     progress: bool = True, on_images=None, title: str = "") -> dict:
  """Measure every point not yet in `results` (written after each), then the plot.
  `on_images(name, images)` (optional) sees each point's images (the demo's sample grid)."""
  length = model.layout.num_image_tokens
  base = DecodeSettings.from_config(config.decode)
  out.mkdir(parents=True, exist_ok=True)
  todo = [p for p in points if point_name(*p) not in results["points"]]
  bar = tqdm(todo, desc="study hybrid", disable=not progress or not todo)
  for ar_tokens, steps in bar:
    name = point_name(ar_tokens, steps)
    bar.set_postfix_str(name)
    settings = point_settings(base, ar_tokens, steps, length)
    method = method_of(ar_tokens, length)
    tokens, per_image = decode_tokens(model, labels, seed, settings, method, ar_model,
                                      batch_size)
    images = images_of(tokenizer, tokens, batch_size)
    if on_images is not None:
      on_images(name, images)
    results["points"][name] = {
        "ar_tokens": ar_tokens, "steps": steps, "method": method,
        "forward_passes": forward_passes(settings, ar_tokens, length),
        "seconds_per_image": per_image, "samples": len(labels),
        **judge(images, labels, name)}
    results["best"] = best_point(results)
    write_results(out, results)
  plot(results, out / PLOT, title)
  return results


def _main(argv=None) -> int:
  args = parse_args(argv)
  from maskgil_jax import checkpoints
  from maskgil_jax.sample import (check_ar_half, check_method, load_generator, parse_labels,
                                  resolve_config)
  config = resolve_config(args.config, args.ckpt, args.config_overrides)
  for field in DECODE_FLAGS:
    if getattr(args, field) is not None:
      apply_override(config.decode, field, getattr(args, field))
  DecodeSettings.from_config(config.decode)  # a bad value is named before any work
  ar_config = (resolve_config(args.ar_config, args.ar_ckpt, args.ar_config_overrides,
                              "--ar-config") if args.ar_ckpt else None)
  length = config.model.grid_size ** 2
  points = study_points(args.ar_token_list, args.step_list, length)
  if any(a > 0 for a, _ in points):
    check_ar_half(config, ar_config)
  if not (args.tokenizer or config.tokenizer.ckpt):
    raise configlib.ConfigError("the study judges images: give --tokenizer PATH (or set "
                                "config.tokenizer.ckpt)")
  judge_kinds = config.data.name == "demo" or args.ref
  if not judge_kinds:
    raise cli.UsageError("no quality to measure: the model was not trained on the demo data, "
                         "so give --ref and --inception for FID")
  out = pathlib.Path(args.out)
  if out.exists() and not out.is_dir():
    raise cli.UsageError(f"--out {out} is a file; give a folder")
  device = jax.devices()[0].device_kind
  results = open_results(out, study_record(args, config, device), args.overwrite)

  model = load_generator(args.ckpt, config.model)
  ar_model = load_generator(args.ar_ckpt, ar_config.model) if args.ar_ckpt else None
  for method in sorted({method_of(a, length) for a, _ in points}):
    check_method(method, ar_model if method == "ar" and ar_model else model, ar_model or model)
  tokenizer = checkpoints.load_tokenizer(args.tokenizer or config.tokenizer.ckpt,
                                         config.tokenizer)
  labels = parse_labels(None, args.per_class, config.model.num_classes).astype(np.int32)
  out.mkdir(parents=True, exist_ok=True)  # once everything it needs has loaded
  start = time.time()
  results = run_hybrid_study(model, tokenizer, config, out, points, labels, seed=args.seed,
                             batch_size=args.batch_size, judge=Judge(config, args.ref,
                                                                     args.inception, out),
                             results=results, ar_model=ar_model)
  cli.summary(f"study hybrid: {len(points)} points ({len(labels)} samples each) in "
              f"{time.time() - start:.0f} s, best {results.get('best')} -> {out / RESULTS}, "
              f"{out / PLOT}")
  return 0


def main(argv=None) -> int:
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
