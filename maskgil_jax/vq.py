"""`python -m maskgil_jax.vq reconstruct --ckpt CKPT --images PATH --out OUT.npz`: tokenizer check.

Encodes images to codes and decodes them back with a tokenizer checkpoint, then reports how
many codes were used and the reconstruction PSNR.

  --ckpt       a LlamaGen VQ `.pt` / `.safetensors` file, or one of our tokenizer checkpoints
               (a training workdir or step folder)
  --images     a folder of images (searched recursively, sorted by path) or an `.npz` holding
               one uint8 NHWC RGB array (named `images` if there are several)
  --out        the `.npz` to write: `indices` int32 [N, h, w], `reconstructions` uint8
               [N, H, W, 3], `psnr` float32 [N] (dB, per image), `files` (folder input) and
               `settings` (a JSON string: checkpoint, tokenizer config, sizes, summary)
  --tokenizer  the tokenizer preset (default vq16), unless --config names an experiment file
  --image-size centre-crop and resize every image to this square size first (ADM / LlamaGen
               recipe); without it all images must already share one size
  --batch-size images per compiled call (the last batch is padded, so shapes stay static)
  --overwrite  replace an existing --out

Pixels map to [-1, 1] as x / 127.5 - 1 and back as round((y + 1) * 127.5) clipped to [0, 255].
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from maskgil_jax import cli
from maskgil_jax.configlib import ConfigError, TOKENIZER_PRESETS, tokenizer_config
from maskgil_jax.loading import load_tokenizer
from maskgil_jax.evaluation.image_sets import write_npz
from maskgil_jax.evaluation.reconstruction import psnr, read_images, reconstruct_all

COMMANDS = ("reconstruct",)

def reconstruct_command(ckpt: str, images_path: str, out: str, tokenizer, image_size: int = 0,
                        batch_size: int = 16, progress: bool = True,
                        overwrite: bool = False) -> dict:
  """The `reconstruct` command; returns the summary it prints and stores as `settings`."""
  out_path = pathlib.Path(out)
  if out_path.suffix != ".npz":
    raise ConfigError(f"--out: {out} must end in .npz")
  cli.check_new_output(out_path, overwrite=overwrite)
  if not out_path.parent.is_dir():
    raise FileNotFoundError(f"--out: folder {out_path.parent} does not exist")
  if batch_size <= 0:
    raise ConfigError(f"--batch-size: must be positive, got {batch_size}")
  images, files = read_images(images_path, image_size)
  factor = 2 ** (len(tokenizer.ch_mult) - 1)
  if images.shape[1] % factor or images.shape[2] % factor:
    raise ConfigError(f"--images: size {images.shape[2]}x{images.shape[1]} is not a multiple of "
                      f"the tokenizer's downsampling factor {factor}; pass --image-size")
  model = load_tokenizer(ckpt, tokenizer)
  codes, recons = reconstruct_all(model, images, min(batch_size, len(images)), progress)
  quality = psnr(images, recons)
  used = int(np.unique(codes).size)
  summary = dict(ckpt=str(ckpt), images=str(images_path), num_images=len(images),
                 image_size=[int(images.shape[1]), int(images.shape[2])],
                 grid=[int(codes.shape[1]), int(codes.shape[2])], batch_size=batch_size,
                 codes_used=used, codebook_size=int(tokenizer.codebook_size),
                 codebook_usage=used / tokenizer.codebook_size,
                 psnr_mean=float(np.mean(quality)), tokenizer=tokenizer.to_dict())
  arrays = dict(indices=codes.astype(np.int32), reconstructions=recons, psnr=quality,
                settings=np.array(json.dumps(summary)))
  if files:
    arrays["files"] = np.array(files)
  write_npz(out_path, arrays)
  return summary


def reconstruct_parser() -> cli.Parser:
  p = cli.Parser("vq reconstruct", __doc__.split("\n\n")[0], config="optional")
  p.add_argument("--ckpt", required=True, help="tokenizer weights: LlamaGen .pt/.safetensors "
                 "or our checkpoint")
  p.add_argument("--images", required=True, help="folder of images, or .npz of uint8 NHWC images")
  p.add_argument("--out", required=True, help="output .npz")
  p.add_argument("--tokenizer", default="vq16", help=f"tokenizer preset, one of "
                 f"{sorted(TOKENIZER_PRESETS)} (default vq16), unless --config is given")
  p.add_argument("--image-size", type=int, default=0, help="centre-crop and resize to this "
                 "size (default 0: keep)")
  p.add_argument("--batch-size", type=int, default=16, help="images per compiled call")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return p


def reconstruct_main(argv) -> int:
  a = reconstruct_parser().parse(argv)
  if a.config is not None:
    tokenizer = cli.load_config(a).tokenizer
  elif a.tokenizer in TOKENIZER_PRESETS:
    tokenizer = tokenizer_config(a.tokenizer)
  else:
    raise ConfigError(f"--tokenizer: {a.tokenizer!r} unknown; one of {sorted(TOKENIZER_PRESETS)}")
  s = reconstruct_command(a.ckpt, a.images, a.out, tokenizer, a.image_size, a.batch_size,
                          overwrite=a.overwrite)
  print(f"codebook usage: {s['codes_used']} of {s['codebook_size']} codes "
        f"({100 * s['codebook_usage']:.2f}%)")
  print(f"PSNR: {s['psnr_mean']:.2f} dB (mean over {s['num_images']} images)")
  cli.summary(f"reconstructed {s['num_images']} images {s['image_size'][0]}x"
              f"{s['image_size'][1]} -> {s['grid'][0]}x{s['grid'][1]} codes, written to {a.out}")
  return 0


def parse_tokenizers(text: str) -> list:
  """`name=path[:preset],...` -> [tokenizer_compare.Named]; the preset defaults to vq16."""
  from maskgil_jax.evaluation.tokenizer_compare import Named
  named = []
  for item in [x.strip() for x in text.split(",") if x.strip()]:
    name, eq, rest = item.partition("=")
    if not eq or not name or not rest:
      raise cli.UsageError(f"--tokenizers: {item!r} is not name=path[:preset]")
    path, preset = rest, "vq16"
    head, colon, tail = rest.rpartition(":")
    if colon and tail in TOKENIZER_PRESETS:
      path, preset = head, tail
    elif colon and head and tail.isidentifier() and not pathlib.Path(rest).exists():
      # `PATH:NAME` whose NAME is no preset (a colon of a path, as in gs://, comes before a /)
      raise cli.UsageError(f"--tokenizers: {name}={rest}: unknown preset {tail!r}; one of "
                           f"{sorted(TOKENIZER_PRESETS)}")
    named.append(Named(name, path, preset))
  return named


def compare_parser() -> cli.Parser:
  p = cli.Parser("vq compare", "Reconstruct the same images with several tokenizers and "
                 "compare them: PSNR, SSIM, LPIPS, rFID, codebook usage, perplexity, tokens per "
                 "image, encode/decode speed.")
  p.add_argument("--tokenizers", required=True, metavar="NAME=PATH[:PRESET],...",
                 help=f"tokenizers to compare; PRESET one of {sorted(TOKENIZER_PRESETS)} "
                      "(default vq16)")
  p.add_argument("--images", required=True, help="folder of images, .npz of uint8 NHWC images, "
                 "or 'demo' (the shipped held-out demo images)")
  p.add_argument("--out", required=True, help="output folder: compare.json, compare.md, "
                 "compare.png")
  p.add_argument("--image-size", type=int, default=0, help="centre-crop and resize first")
  p.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
  p.add_argument("--batch-size", type=int, default=16, help="images per compiled call")
  p.add_argument("--figure-count", type=int, default=8, help="images in the side-by-side figure")
  p.add_argument("--lpips-weights", default="", help="VGG16 + LPIPS head files, comma-separated "
                 "(LPIPS is skipped without them)")
  p.add_argument("--inception", default="", help="FID Inception weights (rFID is skipped "
                 "without them)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return p


def compare_main(argv) -> int:
  from maskgil_jax.evaluation import tokenizer_compare
  a = compare_parser().parse(argv)
  cli.require_positive(("--batch-size", a.batch_size), ("--figure-count", a.figure_count))
  for flag, value in (("--limit", a.limit), ("--image-size", a.image_size)):
    if value < 0:
      raise cli.UsageError(f"{flag} must be >= 0, got {value}")
  tokenizers = parse_tokenizers(a.tokenizers)
  out = cli.check_new_output(a.out, overwrite=a.overwrite, what="folder")
  result = tokenizer_compare.compare(
      tokenizers, a.images, out, image_size=a.image_size, limit=a.limit, batch_size=a.batch_size,
      lpips_weights=a.lpips_weights, inception=a.inception, figure_count=a.figure_count,
      progress=True)
  print((out / "compare.md").read_text(), end="")
  cli.summary(f"compared {len(tokenizers)} tokenizers on {result['num_images']} "
              f"images -> {out}/compare.json, compare.md, compare.png")
  return 0


SUBCOMMANDS = {"reconstruct": reconstruct_main, "compare": compare_main}
COMMANDS = tuple(SUBCOMMANDS)


def _main(argv) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0
  if not argv or argv[0] not in SUBCOMMANDS:
    raise cli.UsageError(f"python -m maskgil_jax.vq {{{','.join(SUBCOMMANDS)}}} ...: got "
                         f"{argv[0] if argv else 'no subcommand'!r}")
  return SUBCOMMANDS[argv[0]](argv[1:])


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
