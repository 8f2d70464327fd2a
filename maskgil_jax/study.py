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
import pathlib
import time

import jax
import numpy as np

from maskgil_jax import cli, configlib, loading
from maskgil_jax.configlib.load import apply_override
from maskgil_jax.decode import DecodeSettings, sampling
from maskgil_jax.evaluation.hybrid_study import (PLOT, RESULTS, Judge, method_of,
                                                 run_hybrid_study, study_points)
from maskgil_jax.pipeline import check_ar_half, check_method
# decode fields a study may set from flags (the rest come from the checkpoint's config.decode)
DECODE_FLAGS = ("cfg_scale", "temperature", "ar_cfg_scale", "ar_temperature", "hybrid_schedule",
                "schedule", "choice_temperature")


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
  p.add_argument("--hybrid-schedule", choices=sampling.HYBRID_SCHEDULES)
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
  checkpoint_id, path_id = loading.checkpoint_id, loading.path_id
  return {"ckpt": list(checkpoint_id(args.ckpt)), "ar_ckpt": list(checkpoint_id(args.ar_ckpt)),
          "tokenizer": path_id(args.tokenizer or config.tokenizer.ckpt),
          "per_class": args.per_class, "seed": args.seed, "ref": path_id(args.ref),
          "decode": {k: config.decode[k] for k in sampling.FIELDS + sampling.HYBRID_FIELDS
                     if k not in ("steps", "ar_tokens")},  # the points' own
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


def _main(argv=None) -> int:
  args = parse_args(argv)
  resolve_config = loading.resolve_config
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

  model = loading.load_generator(args.ckpt, config.model)
  ar_model = loading.load_generator(args.ar_ckpt, ar_config.model) if args.ar_ckpt else None
  for method in sorted({method_of(a, length) for a, _ in points}):
    check_method(method, ar_model if method == "ar" and ar_model else model, ar_model or model)
  tokenizer = loading.load_tokenizer(args.tokenizer or config.tokenizer.ckpt, config.tokenizer)
  labels = np.repeat(np.arange(config.model.num_classes, dtype=np.int32), args.per_class)
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


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
