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
import time

import jax

from maskgil_jax import cli, files
from maskgil_jax.evaluation.evaluator import NAMES, evaluate
from maskgil_jax.evaluation.precision_recall import DISTANCES
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


def _main(argv=None) -> int:
  args = parse_args(argv)
  initialize_distributed(args.distributed)
  start = time.time()
  result = evaluate(
      samples=args.samples, ref=args.ref, inception=args.inception, batch=args.batch,
      preprocessing=args.preprocessing, distances=args.distances, is_splits=args.is_splits,
      recompute_stats=args.recompute_stats, save_samples_stats=args.save_samples_stats,
      save_ref_stats=args.save_ref_stats, allow_aspect_mismatch=args.allow_aspect_mismatch,
      per_image_minmax=args.per_image_minmax)
  if jax.process_index() != 0:
    return 0
  for key, value in result["metrics"].items():
    print(f"{NAMES[key]}: {value:.6g}")
  for key, why in result["not_computed"].items():
    print(f"{key}: not computed ({why})")
  if args.out:
    files.write_json(args.out, result, sort_keys=True)
  m = result["metrics"]
  summary = " | ".join(f"{NAMES[k]} {m[k]:.4g}" for k in ("fid", "sfid", "inception_score",
                                                            "precision", "recall") if k in m)
  cli.summary(f"evaluate: {summary or 'statistics written'} in {time.time() - start:.0f} s"
              + (f" -> {args.out}" if args.out else ""))
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
