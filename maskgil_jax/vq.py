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
import os
import pathlib
import sys
import zipfile

import numpy as np
from tqdm import tqdm

from maskgil_jax import cli
from maskgil_jax.configlib import ConfigError, TOKENIZER_PRESETS, tokenizer_config
from maskgil_jax.data.preprocess import UnreadableImage, center_crop, decode_image, to_model_range
from maskgil_jax.data.sources import IMAGE_EXTENSIONS
from maskgil_jax.checkpoints import load_tokenizer
from maskgil_jax.evaluation.image_sets import write_npz
from maskgil_jax.models.vq import VQModel, reconstruct

COMMANDS = ("reconstruct",)

def read_images(path: str | os.PathLike, image_size: int = 0) -> tuple[np.ndarray, list[str]]:
  """uint8 [N, H, W, 3] images and their file names (empty for an `.npz`)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"--images: {path} does not exist")
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise ConfigError(f"--images: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
    images = []
    for f in files:
      try:
        pixels = decode_image(f.read_bytes())
      except UnreadableImage as e:
        raise ConfigError(f"--images: {f} cannot be read as an image ({e})") from e
      images.append(center_crop(pixels, image_size) if image_size else pixels)
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
      first = {}
      for f, im in zip(files, images):
        first.setdefault(im.shape, f)
      examples = ", ".join(f"{f.name} is {s[1]}x{s[0]}" for s, f in list(first.items())[:2])
      raise ConfigError(f"--images: the images differ in size ({examples}); pass --image-size "
                        "to centre-crop and resize them")
    return np.stack(images), [str(f.relative_to(path)) for f in files]
  return _read_npz(path, image_size), []


def _read_npz(path: pathlib.Path, image_size: int) -> np.ndarray:
  try:
    with np.load(path, allow_pickle=False) as data:
      names = list(data.keys())
      name = "images" if "images" in names else names[0] if len(names) == 1 else None
      if name is None:
        raise ConfigError(f"--images: {path} holds {names}; name the image array 'images'")
      images = data[name]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated, pickles, other
    raise ConfigError(f"--images: {path} is not a readable .npz ({e})") from e
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ConfigError(f"--images: {path}:{name} is {images.dtype} {list(images.shape)}; expected "
                      "uint8 NHWC RGB images [N, H, W, 3]")
  if image_size:
    images = np.stack([center_crop(im, image_size) for im in images])
  return images


def to_pixels(images: np.ndarray) -> np.ndarray:
  """Model output in [-1, 1] -> uint8, the inverse of `to_model_range` (clipped, rounded)."""
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def reconstruct_all(model: VQModel, images: np.ndarray, batch_size: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Codes [N, h, w] and uint8 reconstructions of all images, `batch_size` at a time.

  The next batch is dispatched before the previous one is copied back, so the device does not
  wait for the host.
  """
  n = len(images)
  padded = -(-n // batch_size) * batch_size
  if padded != n:
    images = np.concatenate([images, np.repeat(images[-1:], padded - n, axis=0)])
  codes, recons, pending = [], [], None
  for start in tqdm(range(0, padded, batch_size), disable=not progress, desc="reconstruct"):
    result = reconstruct(model, to_model_range(images[start:start + batch_size]))
    if pending is not None:
      codes.append(np.asarray(pending[0]))
      recons.append(to_pixels(np.asarray(pending[1])))
    pending = result
  codes.append(np.asarray(pending[0]))
  recons.append(to_pixels(np.asarray(pending[1])))
  return np.concatenate(codes)[:n], np.concatenate(recons)[:n]


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of uint8 images (inf for identical images)."""
  mse = np.mean(np.square(a.astype(np.float64) - b.astype(np.float64)), axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    return (10.0 * np.log10(255.0 ** 2 / mse)).astype(np.float32)


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


SUBCOMMANDS = {"reconstruct": reconstruct_main}
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


def main(argv=None) -> int:
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
