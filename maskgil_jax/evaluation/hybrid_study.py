"""The speed-quality trade-off of hybrid decoding, measured point by point (the `study hybrid`
command and the demo run it).

Every point is a decoder setting: `a` tokens written by AR, then MAR in `s` steps. a = 0 is
MAR alone (one point per step count), a = all the grid's tokens is AR alone (one point, the
common end of every curve), anything between is the hybrid. For each point the same labels
and seeds are decoded and timed (`decode_tokens`: the token decoder alone, after a warm-up
call that compiles it) and judged (`Judge`: the demo judge on demo models, the evaluator's FID,
sFID, IS, precision and recall against a reference); `run_hybrid_study` writes results.json
after every point (so a rerun resumes) and the plot (`plot`: quality against seconds per image,
one curve per MAR step count).
"""
from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from maskgil_jax import files
from maskgil_jax.data.preprocess import to_model_range
from maskgil_jax.decode import DecodeSettings, generate_tokens, tokens_to_images
from maskgil_jax.decode.hybrid import mar_steps_run
from maskgil_jax.errors import UsageError
from maskgil_jax.parallel.pump import ahead, padded, slices

RESULTS = "results.json"
PLOT = "tradeoff.png"


# ---- points ---------------------------------------------------------------------------------
def point_name(ar_tokens: int, steps: int | None) -> str:
  return f"ar{ar_tokens}" if steps is None else f"ar{ar_tokens}_mar{steps}"


def study_points(ar_tokens: list[int], steps: list[int], length: int) -> list[tuple[int, int | None]]:
  """(AR tokens, MAR steps or None for AR alone) of every point, in the order they run."""
  bad = [a for a in ar_tokens if not 0 <= a <= length]
  if bad:
    raise UsageError(f"--ar-tokens {bad}: the grid has {length} tokens (0 = MAR alone, "
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
  starts = [start for start, _ in slices(len(labels), batch)]
  run = lambda i: generate_tokens(model, jnp.asarray(padded(labels[i:i + batch], batch)
                                                     .astype(np.int32)),
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
  out = ahead(lambda part: tokens_to_images(tokenizer, jnp.asarray(
                  padded(tokens[part[0]:part[0] + batch], batch))),
              slices(len(tokens), batch), lambda part, images: np.asarray(images)[:part[1]])
  return np.concatenate(list(out))


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
      from maskgil_jax.evaluation.demo_judge import demo_quality
      q = demo_quality(to_model_range(np.asarray(images)), labels, self.real)
      out.update(demo_accuracy=q["classifier_accuracy"], demo_frechet=q["frechet_distance"])
    if self.ref:
      from maskgil_jax.evaluation.evaluator import evaluate
      from maskgil_jax.evaluation.image_sets import write_npz
      path = self.workdir / "points" / f"{name}.npz"
      path.parent.mkdir(parents=True, exist_ok=True)
      write_npz(path, {"arr_0": images, "labels": labels})
      result = evaluate(samples=str(path), ref=self.ref, inception=self.inception)
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
  with files.atomic_path(path, ".tmp.png") as tmp:
    fig.savefig(tmp, dpi=110)
  plt.close(fig)


def best_point(results: dict) -> str | None:
  """The point with the best quality: lowest FID, else lowest demo Frechet distance."""
  for key in ("fid", "demo_frechet"):
    scored = {n: p[key] for n, p in results["points"].items() if key in p}
    if scored:
      return min(scored, key=scored.get)
  return None


def write_results(out: pathlib.Path, results: dict) -> None:
  files.write_json(out / RESULTS, results)


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
