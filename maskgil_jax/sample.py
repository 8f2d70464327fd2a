"""`python -m maskgil_jax.sample`: class- or text-conditional samples with MAR, AR or hybrid decoding.

  python -m maskgil_jax.sample --config CONFIG --ckpt CKPT --decode {mar,ar,hybrid} \
      [--labels 1,2,3 | --per-class N | --prompt TEXT ... [--prompts FILE] --text-encoder DIR] \
      [--steps 8] [--cfg-scale W] [--temperature T] \
      [--top-k K] [--top-p P] [--choice-temperature R] [--ar-tokens N] [--ar-cfg-scale W] \
      [--ar-temperature T] [--hybrid-schedule {spread,head,tail}] [--seed S] \
      [--batch-size B] [--tokenizer PATH] [--ar-ckpt CKPT --ar-config CONFIG] [--ema] \
      [--height H --width W] [--tokens-only] --out DIR [--config.a.b=value ...]

CKPT is one of our checkpoints (a training workdir, its `checkpoints/` folder or a step folder;
CONFIG then defaults to the one stored with it) or a PyTorch LlamaGen / MaskGIL GPT `.pt` /
`.safetensors` file (CONFIG says which layout and size). Unset decode flags take the values of
`config.decode`; `--cfg-scale` is w of (1 + w) * cond - w * uncond in every decoder (LlamaGen's
s = 1 + w) and `--temperature` divides the logits, 0 = greedy (docs/generation.md). The hybrid
needs an AR-capable model for its AR half: one checkpoint trained with the `ar` or `joint`
objective, or `--ar-ckpt`; its AR half has its own `--ar-cfg-scale` (default 1.0, LlamaGen's
s = 2.0) and `--ar-temperature`.

`--height/--width` (pixels, multiples of the tokenizer's downsampling) sample any image shape:
the model runs over that token grid (one compiled program per shape); a size far from what the
model was trained on (config.data.buckets, else data.image_size) is sampled with a warning.

Writes DIR/samples.npz: `arr_0` uint8 images [N, H, W, 3] (ADM's layout, so the file goes
straight to `maskgil_jax.evaluate --samples`; left out with --tokens-only, which needs no
tokenizer), `labels` int64 [N], `tokens` int32 [N, h, w] and `settings` (a JSON string of every
setting that decides the samples); DIR/samples.json (the same settings, N, shapes, label
counts) and DIR/grid.png with the first 64 images; from prompts also `prompts` (a string per
sample) and the grid with each prompt under its image. Sample i draws with the key
fold_in(PRNGKey(seed), i) alone, so the same command and seed give the same tokens whatever the
batch size or number of devices.

Samples go through DIR/shards/ (evaluation/sample_store.py), one file per batch as they are
made, and are merged into samples.npz at the end (the shards are then deleted). Rerunning the
same command after an interruption generates only the samples no shard holds (any batch size,
device or host count); a rerun with other settings into the same DIR is refused. On several
hosts run the same command on every host (jax.distributed is set up from the environment): each
process generates and writes its own contiguous share of the indices, every batch is sharded
over the mesh's batch axes, and process 0 merges.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shutil
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from maskgil_jax import cli, configlib
from maskgil_jax.configlib.load import apply_override
from maskgil_jax.decode import METHODS, DecodeSettings, captioned_grid, image_grid, write_png
from maskgil_jax.decode import sampling
from maskgil_jax.evaluation.image_sets import NpzImages
from maskgil_jax.evaluation.sample_store import SETTINGS_FILE, SampleStore
from maskgil_jax.models.conditions import Caption
from maskgil_jax.models.vq import TokenizerSpec
from maskgil_jax.parallel.mesh import (BATCH_AXES, batch_sharding, batch_shards, global_batch,
                                       initialize_distributed, make_mesh)
from maskgil_jax.parallel import topology
from maskgil_jax.parallel.pump import local_rows, pump
from maskgil_jax.training import decode_report
from maskgil_jax.parallel.rules import make_rules
from maskgil_jax.loading import checkpoint_id, path_id, resolve_config
from maskgil_jax.pipeline import (DECODE_FIELDS, Pipeline, check_ar_half, check_seed,
                                  decode_settings, sample_keys)
from maskgil_jax.text.prompts import check_condition, read_prompts

GRID_IMAGES = 64
SAMPLES_FILE = "samples.npz"
SHARDS_DIR = "shards"


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str], list[str]]:
  """(flags, `--config.*` overrides, `--ar-config.*` overrides)."""
  p = cli.Parser("sample", "Class- or text-conditional samples: a PNG grid and samples.npz "
                 "(see docs/generation.md, docs/text_to_image.md).", config="optional",
                 override_prefixes=("ar-config",),
                 usage="[--config CONFIG] --ckpt CKPT --decode {mar,ar,hybrid} [--labels 1,2,3 "
                       "| --per-class N | --prompt TEXT] [options] --out DIR")
  p.add_argument("--ckpt", help="our checkpoint folder, or a PyTorch GPT file (required but "
                 "with --memory-report)")
  p.add_argument("--decode", choices=METHODS, default="mar")
  labels = p.add_mutually_exclusive_group()
  labels.add_argument("--labels", help="comma-separated class ids (default: classes 0..7)")
  labels.add_argument("--per-class", type=int, help="N samples of every class, class by class")
  labels.add_argument("--prompt", action="append", help="text-to-image: a prompt (repeatable)")
  p.add_argument("--prompts", help="text-to-image: a file of prompts, one per line")
  p.add_argument("--text-encoder", help="text-to-image: Hugging Face T5 folder (default: "
                 "config.text.encoder)")
  p.add_argument("--steps", type=int, help="MAR steps (hybrid: MAR steps after AR)")
  p.add_argument("--cfg-scale", type=float, help="guidance w: (1 + w) cond - w uncond; 0 = off")
  p.add_argument("--temperature", type=float, help="divides the logits; 0 = greedy")
  p.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = all)")
  p.add_argument("--top-p", type=float, help="keep the top-p probability mass (1 = all)")
  p.add_argument("--choice-temperature", type=float, help="MAR Gumbel noise on confidences")
  p.add_argument("--ar-tokens", type=int, help="hybrid: tokens written by AR first")
  p.add_argument("--ar-cfg-scale", type=float, help="hybrid: the AR half's guidance w "
                 "(default config.decode.ar_cfg_scale, 1.0 = LlamaGen's s 2.0)")
  p.add_argument("--ar-temperature", type=float, help="hybrid: the AR half's temperature")
  p.add_argument("--hybrid-schedule", choices=sampling.HYBRID_SCHEDULES, help="hybrid: MAR steps "
                 "spread over what AR left (spread), the full-grid schedule's first steps "
                 "(head, the reference code) or its last steps (tail)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=64, help="samples per compiled call")
  p.add_argument("--tokenizer", help="tokenizer weights (default: config.tokenizer.ckpt)")
  p.add_argument("--ar-ckpt", help="hybrid: a separate AR model (default: --ckpt does both)")
  p.add_argument("--ar-config", help="hybrid: the AR model's config (default: its checkpoint's)")
  p.add_argument("--ema", action="store_true", help="use the EMA parameters of our checkpoint")
  p.add_argument("--tokens-only", action="store_true", help="no images, no tokenizer needed")
  p.add_argument("--height", type=int, help="image height in pixels (default: the config's)")
  p.add_argument("--width", type=int, help="image width in pixels (default: the config's)")
  p.add_argument("--out", help="output folder (an interrupted set of the same settings is "
                 "resumed; required but with --memory-report)")
  p.add_argument("--memory-report", action="store_true", help="compile one batch's decode "
                 "without weights, print memory, FLOPs, collectives and cost estimate, exit")
  topology.add_flags(p)
  p.add_argument("--overwrite", action="store_true", help="start a new set in an --out that "
                 "holds other files or another set (they are deleted)")
  args = p.parse(argv)
  for flag in ("ckpt", "out"):
    if not args.memory_report and not getattr(args, flag):
      p.error(f"the following argument is required: --{flag}")
  return args, args.config_overrides, args.ar_config_overrides


# ---- labels, batches, outputs ---------------------------------------------------------------
def parse_labels(labels: str | None, per_class: int | None, num_classes: int) -> np.ndarray:
  if per_class is not None:
    if per_class < 1:
      raise configlib.ConfigError(f"--per-class must be >= 1, got {per_class}")
    return np.repeat(np.arange(num_classes), per_class)
  if labels is None:
    return np.arange(min(8, num_classes))
  try:
    out = np.array([int(x) for x in labels.split(",") if x.strip()], np.int64)
  except ValueError as e:
    raise configlib.ConfigError(f"--labels {labels!r}: not comma-separated integers") from e
  bad = out[(out < 0) | (out >= num_classes)]
  if out.size == 0 or bad.size:
    raise configlib.ConfigError(f"--labels: {bad.tolist() or 'none given'}; classes are "
                                f"0..{num_classes - 1}")
  return out


def rows_per_process(sharding, batch_size: int) -> int:
  """Rows of each global batch this process feeds; ConfigError unless the batch axes split the
  batch evenly over the processes (each process then generates only its own samples)."""
  starts = {index[0].start or 0
            for index in sharding.addressable_devices_indices_map((batch_size,)).values()}
  rows = len(starts) * batch_size // batch_shards(sharding.mesh)
  if rows * jax.process_count() != batch_size:
    raise configlib.ConfigError(
        f"config.mesh: the batch axes {BATCH_AXES} must split each batch evenly over the "
        f"{jax.process_count()} processes (this one holds {rows} of {batch_size} rows)")
  return rows


def sample_into(store: SampleStore, pipe: Pipeline, labels: np.ndarray, seed: int,
                settings: DecodeSettings, method: str, *, batch_size: int, images: bool = True,
                progress: bool = True, captions=None, prompts=None) -> int:
  """Generate this process's pending samples of `store` (tokens, and images unless not
  `images`) with the models of `pipe` (placed at the grid to draw), in global batches of
  `batch_size`, each process feeding its own rows; returns how many.

  Every process runs the same number of batches (the largest share), padding with rows of
  index N (no sample's) that are dropped. The next batch is dispatched before the previous one
  is copied back and written, so the devices do not wait for the host; a batch that finished
  when an exception (e.g. Ctrl-C) arrives is still written. `captions` (left-padded features
  [N, P, C], mask [N, P]) condition sample i on caption i instead of its label; `prompts`
  (strings [N]) are then stored beside each sample."""
  n = len(labels)
  mesh = pipe.mesh
  sharding = batch_sharding(mesh)
  rows = rows_per_process(sharding, batch_size)
  todo = store.pending()
  num_batches = int(np.max(multihost_utils.process_allgather(np.array(-(-len(todo) // rows)))))
  indices = np.full(num_batches * rows, n, np.int32)
  indices[:len(todo)] = todo
  batch_labels = np.zeros(num_batches * rows, np.int32)
  batch_labels[:len(todo)] = labels[todo]
  seed_key = jax.random.PRNGKey(seed)
  grid = pipe.model.layout.grid

  def dispatch(i):
    part = slice(i * rows, (i + 1) * rows)
    local = {"index": indices[part], "label": batch_labels[part]}
    if captions is not None:
      which = np.minimum(indices[part], n - 1)  # padding rows borrow a real caption
      local.update(caption=captions[0][which], caption_mask=captions[1][which])
    batch = global_batch(local, mesh)
    cond = (Caption.create(batch["caption"], batch["caption_mask"]) if captions is not None
            else batch["label"])
    tokens = pipe.tokens(cond, sample_keys(seed_key, batch["index"]), settings, method)
    return tokens, (pipe.images(tokens) if images else None)

  def collect(i, result):
    tokens, images = result
    mine = indices[i * rows:(i + 1) * rows]
    count = int(np.sum(mine < n))
    if count:
      store.write(mine[:count], None if images is None else local_rows(images, sharding)[:count],
                  labels[mine[:count]],
                  {"tokens": local_rows(tokens, sharding)[:count].reshape(count, *grid),
                 **({} if prompts is None else {"prompts": prompts[mine[:count]]})})

  pump(dispatch, tqdm(range(num_batches), desc=f"sample {method}",
                      disable=not progress or num_batches < 2), collect, collect_on_error=True)
  return len(todo)


def image_shape(args, config, down: int) -> tuple[int, int]:
  """(height, width) in pixels from --height/--width (each defaults to the config's square
  side); UsageError unless multiples of the tokenizer's downsampling; a warning when the model
  was not trained near that shape (aspect or token count off every trained size)."""
  side = config.model.grid_size * down
  h = side if args.height is None else args.height  # 0 is refused, not the default
  w = side if args.width is None else args.width
  for flag, v in (("--height", h), ("--width", w)):
    if v < 1 or v % down:
      raise cli.UsageError(f"{flag} {v}: must be a positive multiple of the tokenizer's "
                           f"downsampling {down}")
  trained = [tuple(b) for b in config.data.buckets] or [(side, side)]
  near = lambda b: (abs(np.log((w / h) / (b[1] / b[0]))) < 0.2
                    and 0.5 < (h * w) / (b[0] * b[1]) < 2.0)
  if not any(near(b) for b in trained):
    cli.notice("warning: %dx%d px (height x width) is far from the sizes this model was "
               "trained on (%s); sampling anyway", h, w,
               ", ".join(f"{a}x{b}" for a, b in trained))
  return h, w


def settings_record(args, config, ar_config, method: str, labels: np.ndarray, ckpt: tuple,
                    ar_ckpt: tuple) -> dict:
  """Everything that decides the samples (checked when a run resumes into the same folder);
  batch size and devices are left out, as they do not change a sample."""
  d = config.decode
  record = {k: d[k] for k in sampling.FIELDS}
  if method == "hybrid":
    record.update({k: d[k] for k in sampling.HYBRID_FIELDS})
  record.update(decode=method, cfg_convention="(1 + w) * cond - w * uncond",
                cfg_scale_llamagen=1.0 + d.cfg_scale, seed=args.seed, num_samples=len(labels),
                per_class=args.per_class, labels=None if args.per_class else labels.tolist(),
                ckpt=ckpt[0], ckpt_step=ckpt[1], ema=args.ema, ar_ckpt=ar_ckpt[0],
                ar_ckpt_step=ar_ckpt[1], model=config.model.to_dict())
  if not args.tokens_only:
    record.update(tokenizer=path_id(args.tokenizer or config.tokenizer.ckpt),
                  tokenizer_spec=dataclasses.asdict(TokenizerSpec.from_config(config.tokenizer)))
  if ar_config is not None:
    record["ar_model"] = ar_config.model.to_dict()
  return record


def _main(argv=None) -> int:
  args, overrides, ar_overrides = parse_args(argv)
  if args.memory_report:
    print(memory_report(args, overrides).format())
    return 0
  start = time.time()
  initialize_distributed("auto")  # before any device is touched; a no-op on one process
  summary = run(args, overrides, ar_overrides)
  if jax.process_index() == 0:
    cli.summary(f"sample: {summary} in {time.time() - start:.0f} s -> {args.out}")
  return 0


def prepare_out(out: pathlib.Path, overwrite: bool) -> None:
  """Refuses an --out holding anything but a sample set of this command (whose stored settings
  the store then checks), unless `overwrite`; then clears it (process 0, then a barrier)."""
  if out.exists() and not out.is_dir():
    raise cli.UsageError(f"--out {out} is a file; give a folder")
  ours = (out / SHARDS_DIR / SETTINGS_FILE).exists()
  empty_store = lambda p: p.name == SHARDS_DIR and p.is_dir() and not any(p.iterdir())
  busy = out.is_dir() and any(not empty_store(p) for p in out.iterdir())
  if busy and not ours and not overwrite:
    raise cli.OutputExistsError(f"--out {out} holds files this command did not write (no "
                                f"{SHARDS_DIR}/{SETTINGS_FILE}); choose another folder or pass "
                                "--overwrite")
  if busy and overwrite:
    if jax.process_index() == 0:
      for name in (SHARDS_DIR, SAMPLES_FILE, "grid.png", pathlib.Path(SAMPLES_FILE).stem +
                   ".json"):
        target = out / name
        if target.is_dir():
          shutil.rmtree(target)
        elif target.exists():
          target.unlink()
    multihost_utils.sync_global_devices("sample: --out cleared")


def run(args, overrides, ar_overrides) -> str:
  config = resolve_config(args.config, args.ckpt, overrides)
  for field in DECODE_FIELDS:  # each has its flag (--cfg-scale sets cfg_scale)
    if getattr(args, field) is not None:
      apply_override(config.decode, field, getattr(args, field))
  DecodeSettings.from_config(config.decode)  # checked before anything is read
  check_seed(args.seed, "--seed")
  prompts = read_prompts(args.prompt, args.prompts)
  check_condition(config.model.condition, prompts=bool(prompts),
                  labels=args.labels is not None or args.per_class is not None)
  labels = (np.zeros(len(prompts), np.int64) if prompts else
            parse_labels(args.labels, args.per_class, config.model.num_classes))
  text_encoder = args.text_encoder or (config.text.encoder if "text" in config else "")
  if prompts and not text_encoder:
    raise configlib.ConfigError("prompts need the text encoder: give --text-encoder DIR (a "
                                "FLAN-T5 folder) or set config.text.encoder")
  mesh = make_mesh(config.mesh)
  rules = make_rules(config.mesh.rules)
  shards = batch_shards(mesh)
  if args.batch_size < 1:
    raise configlib.ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
  batch_size = -(-min(args.batch_size, len(labels)) // shards) * shards
  if args.ar_ckpt and args.decode != "hybrid":
    raise configlib.ConfigError(f"--ar-ckpt is only used with --decode hybrid (got --decode "
                                f"{args.decode})")
  ar_config = None
  if args.ar_ckpt:
    ar_config = resolve_config(args.ar_config, args.ar_ckpt, ar_overrides, "--ar-config")
  if args.decode == "hybrid":
    check_ar_half(config, ar_config)
  if not args.tokens_only and not (args.tokenizer or config.tokenizer.ckpt):
    raise configlib.ConfigError("images need a tokenizer: give --tokenizer PATH (or set "
                                "config.tokenizer.ckpt), or --tokens-only")

  # the folder is opened (and other settings refused) before any weights are read; settings
  # are written with the first samples, so a run that fails before them leaves nothing behind
  ckpt, ar_ckpt = checkpoint_id(args.ckpt), checkpoint_id(args.ar_ckpt)
  down = TokenizerSpec.from_config(config.tokenizer).downsample_factor
  height, width = image_shape(args, config, down)
  grid = (height // down, width // down)
  out = pathlib.Path(args.out)
  prepare_out(out, args.overwrite)
  record = settings_record(args, config, ar_config, args.decode, labels, ckpt, ar_ckpt)
  arrays = {"tokens": (grid, "int32")}
  if prompts:
    record.update(prompts=prompts, text_encoder=path_id(text_encoder),
                  text=config.text.to_dict())
    arrays["prompts"] = ((), f"<U{max(len(p) for p in prompts)}")
  if grid != (config.model.grid_size,) * 2:
    record["image_shape"] = [height, width]
  store = SampleStore(
      out / SHARDS_DIR, num_samples=len(labels),
      image_shape=None if args.tokens_only else (height, width, 3),
      settings=record,
      process_index=jax.process_index(), process_count=jax.process_count(),
      arrays=arrays)

  pipe = Pipeline.from_config(
      config, args.ckpt, ar_ckpt=args.ar_ckpt, ar_config=ar_config, ema=args.ema,
      step=ckpt[1], ar_step=ar_ckpt[1], mesh=mesh, rules=rules,
      tokenizer=None if args.tokens_only else args.tokenizer or config.tokenizer.ckpt,
      text_encoder=text_encoder if prompts else None)
  pipe = pipe.at_grid(grid)  # the same parameters over the grid to draw
  settings = pipe.settings(args.decode)  # the decoder checked against the loaded layout
  captions = pipe.captions(prompts) if prompts else None

  with pipe.placed():
    generated = sample_into(store, pipe, labels, args.seed, settings, args.decode,
                            batch_size=batch_size, images=not args.tokens_only,
                            progress=jax.process_index() == 0, captions=captions,
                            prompts=np.array(prompts) if prompts else None)
  # a collective, so also the barrier before process 0 merges every process's shards
  generated = int(np.sum(multihost_utils.process_allgather(np.array(generated))))
  if jax.process_index() != 0:
    return "done"
  store.finalize(out / SAMPLES_FILE)
  if pipe.tokenizer is not None:
    first = next(NpzImages(out / SAMPLES_FILE).batches(GRID_IMAGES))
    write_png(out / "grid.png", captioned_grid(first, prompts[:len(first)]) if prompts
              else image_grid(first))
  what = "token grids" if pipe.tokenizer is None else "images"
  return (f"{len(labels)} {what} ({args.decode}, w {config.decode.cfg_scale:g}, "
          f"temperature {config.decode.temperature:g}, seed {args.seed}; {generated} generated "
          f"now on {jax.device_count()} devices, {len(labels) - generated} stored before)")


def memory_report(args, overrides):
  """The report `--memory-report` asks for (training/decode_report.py): the config of
  `--config` (or of `--ckpt`'s checkpoint), the decode flags over `config.decode`, the batch
  of `--batch-size`, the slice of `--topology` / `--num-slices`."""
  if not args.config and not args.ckpt:
    raise cli.UsageError("--memory-report needs --config (or --ckpt, whose stored config is used)")
  topology_ = topology.from_args(args)
  config = resolve_config(args.config, args.ckpt, overrides)
  settings = decode_settings(config.decode, **{f: getattr(args, f) for f in DECODE_FIELDS})
  if args.batch_size < 1:
    raise cli.UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
  return decode_report.decode_report(config, args.decode, args.batch_size, settings, topology_)


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
