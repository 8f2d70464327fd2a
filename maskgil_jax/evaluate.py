"""`python -m maskgil_jax.evaluate`: FID, sFID, Inception Score, precision and recall of samples.

  python -m maskgil_jax.evaluate --samples SAMPLES --ref REF --inception WEIGHTS \
      [--batch N] [--out results.json]

SAMPLES and REF are each an ADM `.npz` batch (`arr_0` uint8 NHWC, e.g. ADM's
`VIRTUAL_imagenet256_labeled.npz`), a folder of images, or a statistics file written by
`--save-samples-stats` / `--save-ref-stats`. WEIGHTS is pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (or the same keys as `.safetensors` / `.npz`).

As ADM's evaluator: statistics stored in an input `.npz` (`mu`, `sigma`, `mu_s`, `sigma_s`) are
used as they are (`--recompute-stats` computes them from its images instead); features are
computed from the images otherwise, and always where precision and recall need them. `--ref` may be left out when only `--save-samples-stats` is wanted. On several
hosts, run the same command on every host (`--distributed auto` detects the job); process 0
prints and writes.

Images may have any height and width (one shape per set): the Inception stretches each to
299x299, as ADM's graph does. Samples and reference of different sizes but one aspect ratio
(within ASPECT_TOLERANCE) are compared as they are; of different aspect ratios they are
refused before any work (each set would be stretched differently, and FID would measure the
stretch too) unless `--allow-aspect-mismatch` is given. Statistics files record the shape of
the images they were computed from, so they are checked too (a file without one is not).
See docs/evaluation.md for the ImageNet 256 protocol.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time

import jax

import maskgil_jax
from maskgil_jax import cli
from maskgil_jax.evaluation.features import compute_features, data_mesh, global_batch_size
from maskgil_jax.evaluation.fid import frechet_distance
from maskgil_jax.evaluation.image_sets import IMAGES_KEY, ImageSetError, npz_members, open_image_set
from maskgil_jax.evaluation.inception_score import class_logits, inception_score
from maskgil_jax.evaluation.precision_recall import DEFAULT_K, DISTANCES, precision_recall
from maskgil_jax.evaluation.stats_io import (SetStatistics, StatsFileError, has_statistics,
                                             read_statistics, statistics_from_features,
                                             write_statistics)
from maskgil_jax.interop.inception_names import load_fid_inception
from maskgil_jax.models.inception import PREPROCESSING
from maskgil_jax.parallel.mesh import DISTRIBUTED_MODES, initialize_distributed


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.Parser("evaluate", "FID, sFID, Inception Score, precision and recall, as ADM's "
                 "evaluator defines them, computed with the FID Inception-v3 on the local "
                 "accelerators.", usage="--samples SAMPLES --ref REF --inception WEIGHTS "
                 "[--batch N] [--out results.json] [options]")
  p.add_argument("--samples", required=True, metavar="SAMPLES", help="ADM .npz batch, image folder or stats .npz")
  p.add_argument("--ref", metavar="REF", help="reference: ADM .npz batch, image folder or stats .npz")
  p.add_argument("--inception", required=True, metavar="WEIGHTS",
                 help="pt_inception-2015-12-05-6726825d.pth, or .safetensors / .npz of it")
  p.add_argument("--batch", type=int, default=256, metavar="N", help="global images per forward (default 256)")
  p.add_argument("--out", metavar="FILE", help="results JSON (metrics and the settings used)")
  p.add_argument("--preprocessing", choices=PREPROCESSING, default="tf1",
                 help="tf1: as the TF graph ADM uses (default); pytorch_fid: as pytorch-fid")
  p.add_argument("--distances", choices=DISTANCES, default="adm",
                 help="precision/recall distances: ADM's float16 rounding (default) or float32")
  p.add_argument("--is-splits", type=int, default=10, metavar="N", help="Inception Score splits (default 10)")
  p.add_argument("--recompute-stats", action="store_true",
                 help="ignore statistics stored beside images (ADM's mu/sigma) and compute them")
  p.add_argument("--save-samples-stats", metavar="FILE", help="write the samples' statistics .npz here")
  p.add_argument("--save-ref-stats", metavar="FILE", help="write the reference's statistics .npz here")
  p.add_argument("--distributed", choices=DISTRIBUTED_MODES, default="auto",
                 help="jax.distributed set-up: auto (when launched on several processes), yes, no")
  p.add_argument("--overwrite", action="store_true", help="replace existing --out and "
                 "statistics files")
  p.add_argument("--allow-aspect-mismatch", action="store_true", help="compare samples and "
                 "reference of different aspect ratios (each is stretched to 299x299)")
  p.add_argument("--per-image-minmax", action="store_true", help="rescale each sample image "
                 "by its own min and max to 0..255, as MaskGIL's FID_sample.py writes its "
                 "samples (statistics stored with the samples are then recomputed)")
  args = p.parse(argv)
  if args.ref is None and args.save_samples_stats is None:
    p.error("--ref is required unless --save-samples-stats is given")
  if args.ref is None and args.save_ref_stats is not None:
    p.error("--save-ref-stats needs --ref")
  if args.batch <= 0:
    p.error(f"--batch must be positive, got {args.batch}")
  for flag in ("out", "save_samples_stats", "save_ref_stats"):  # before any work is done
    if getattr(args, flag):
      cli.check_new_output(getattr(args, flag), "--" + flag.replace("_", "-"),
                           overwrite=args.overwrite)
  return args


@dataclasses.dataclass
class Input:
  """One side of the comparison: its images (if any) and its statistics (once known)."""
  role: str
  path: pathlib.Path
  images: object = None  # NpzImages | FolderImages
  stats: SetStatistics | None = None
  stats_from_file: bool = False


def open_input(path: str, role: str, recompute_stats: bool = False,
               per_image_minmax: bool = False) -> Input:
  """Classify SAMPLES / REF without reading images: image set, statistics, or both."""
  item = Input(role, pathlib.Path(path))
  recompute_stats = recompute_stats or per_image_minmax  # stored statistics are of the originals
  if item.path.is_file() and item.path.suffix == ".npz":
    has_images = IMAGES_KEY in npz_members(item.path)
    if has_statistics(item.path) and not (recompute_stats and has_images):
      item.stats, item.stats_from_file = read_statistics(item.path), True
    if has_images:
      item.images = open_image_set(item.path, per_image_minmax)
    elif item.stats is None:
      raise ImageSetError(f"{item.path}: neither images ({IMAGES_KEY}) nor statistics (mu, sigma)")
    elif per_image_minmax:
      raise ImageSetError(f"{item.path}: holds statistics only; --per-image-minmax rescales "
                          "the sample images, so it needs the images")
  else:
    item.images = open_image_set(item.path, per_image_minmax)
  return item


ASPECT_TOLERANCE = 0.01  # relative width/height difference below which two sets share an aspect


def image_shape(item: Input | None) -> list[int] | None:
  """[H, W, 3] of an input's images, or as recorded in its statistics file; None if unknown."""
  if item is None:
    return None
  if item.images is not None:
    return [int(s) for s in item.images.image_shape]
  shape = item.stats.meta.get("image_shape") if item.stats is not None else None
  return [int(s) for s in shape] if shape else None


def check_aspect_ratios(samples: Input, ref: Input | None, allow: bool) -> None:
  """ImageSetError when samples and reference differ in aspect ratio (module doc)."""
  a, b = image_shape(samples), image_shape(ref)
  if allow or a is None or b is None:
    return
  ra, rb = a[1] / a[0], b[1] / b[0]
  if abs(ra / rb - 1) > ASPECT_TOLERANCE:
    raise ImageSetError(
        f"--samples {samples.path} are {a[0]}x{a[1]} (height x width, aspect {ra:.3g}) but "
        f"--ref {ref.path} is {b[0]}x{b[1]} (aspect {rb:.3g}): the Inception stretches each "
        "set to 299x299, so FID would also measure the different stretch; compare sets of one "
        "aspect ratio (any size), or pass --allow-aspect-mismatch to compare them anyway")


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _write_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def evaluate(args: argparse.Namespace) -> dict:
  """Every metric the inputs allow, the reason for each one left out, and the settings."""
  minmax = getattr(args, "per_image_minmax", False)
  samples = open_input(args.samples, "samples", args.recompute_stats, minmax)
  ref = open_input(args.ref, "ref", args.recompute_stats) if args.ref else None
  for item in (samples, ref):
    made_with = item and item.stats and item.stats.meta.get("preprocessing")
    if made_with and made_with != args.preprocessing:
      raise StatsFileError(f"{item.path}: statistics made with --preprocessing {made_with}, "
                           f"this run uses {args.preprocessing}; features must come alike")
  check_aspect_ratios(samples, ref, args.allow_aspect_mismatch)
  model = load_fid_inception(args.inception)
  mesh = data_mesh()
  meta = {"preprocessing": args.preprocessing, "inception": pathlib.Path(args.inception).name,
          "inception_sha256": _sha256(pathlib.Path(args.inception))}

  for item in [x for x in (samples, ref) if x is not None and x.images is not None]:
    feats = compute_features(model, item.images.batches(args.batch), item.images.num_images,
                             batch_size=args.batch, mesh=mesh, preprocessing=args.preprocessing,
                             desc=item.role)
    computed = statistics_from_features(feats, dict(meta, source=str(item.path),
                                                    image_shape=image_shape(item)))
    if item.stats is None:
      item.stats = computed
    else:  # ADM: stored statistics win; our features still serve precision/recall and IS
      item.stats.pool3 = computed.pool3

  metrics, notes = {}, {}
  pool3 = samples.stats.pool3
  if pool3 is not None and pool3.shape[0] >= args.is_splits:
    mean, std = inception_score(class_logits(pool3, model.fc.weight[...]), args.is_splits)
    metrics["inception_score"], metrics["inception_score_std"] = mean, std
  else:
    notes["inception_score"] = "needs at least --is-splits sample pool3 features"
  if ref is not None:
    s, r = samples.stats, ref.stats
    metrics["fid"] = frechet_distance(s.mu, s.sigma, r.mu, r.sigma)
    if s.mu_s is not None and r.mu_s is not None:
      metrics["sfid"] = frechet_distance(s.mu_s, s.sigma_s, r.mu_s, r.sigma_s)
    else:
      notes["sfid"] = "a statistics file without mu_s/sigma_s"
    if s.pool3 is not None and r.pool3 is not None:
      metrics["precision"], metrics["recall"] = precision_recall(
          r.pool3, s.pool3, k=DEFAULT_K, distances=args.distances)
    else:
      notes["precision_recall"] = "needs pool3 features of both sets"

  for item, out in ((samples, args.save_samples_stats), (ref, args.save_ref_stats)):
    if out and jax.process_index() == 0:
      write_statistics(out, item.stats)

  def describe(item):
    return None if item is None else {
        "path": str(item.path),
        "num_images": (item.images.num_images if item.images is not None
                       else item.stats.meta.get("num_images")),
        "statistics": "read from file" if item.stats_from_file else "computed",
        "image_shape": image_shape(item)}

  return {
      "metrics": metrics,
      "not_computed": notes,
      "settings": dict(
          meta, samples=describe(samples), ref=describe(ref), batch=args.batch,
          global_batch=global_batch_size(args.batch, mesh), devices=int(mesh.devices.size),
          processes=jax.process_count(), platform=jax.devices()[0].platform,
          distances=args.distances, precision_recall_k=DEFAULT_K, is_splits=args.is_splits,
          allow_aspect_mismatch=args.allow_aspect_mismatch, samples_per_image_minmax=minmax,
          is_logits="pool3 @ fc.weight (no bias), as ADM", fid_statistics="float64, np.cov",
          maskgil_jax=maskgil_jax.__version__, jax=jax.__version__),
  }


NAMES = {"inception_score": "Inception Score", "inception_score_std": "Inception Score std",
         "fid": "FID", "sfid": "sFID", "precision": "Precision", "recall": "Recall"}


def _main(argv=None) -> int:
  args = parse_args(argv)
  initialize_distributed(args.distributed)
  start = time.time()
  result = evaluate(args)
  if jax.process_index() != 0:
    return 0
  for key, value in result["metrics"].items():
    print(f"{NAMES[key]}: {value:.6g}")
  for key, why in result["not_computed"].items():
    print(f"{key}: not computed ({why})")
  if args.out:
    _write_json(pathlib.Path(args.out), result)
  m = result["metrics"]
  summary = " | ".join(f"{NAMES[k]} {m[k]:.4g}" for k in ("fid", "sfid", "inception_score",
                                                            "precision", "recall") if k in m)
  cli.summary(f"evaluate: {summary or 'statistics written'} in {time.time() - start:.0f} s"
              + (f" -> {args.out}" if args.out else ""))
  return 0


def main(argv=None) -> int:
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
