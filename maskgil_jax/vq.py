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
  --image_size centre-crop and resize every image to this square size first (ADM / LlamaGen
               recipe); without it all images must already share one size
  --batch_size images per compiled call (the last batch is padded, so shapes stay static)

Pixels map to [-1, 1] as x / 127.5 - 1 and back as round((y + 1) * 127.5) clipped to [0, 255].
"""
from __future__ import annotations

import json
import os
import pathlib
import zipfile

import numpy as np
from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from maskgil_jax import cli
from maskgil_jax.configlib import ConfigError, TOKENIZER_PRESETS, tokenizer_config
from maskgil_jax.data.preprocess import UnreadableImage, center_crop, decode_image, to_model_range
from maskgil_jax.data.sources import IMAGE_EXTENSIONS
from maskgil_jax.checkpoints import load_tokenizer
from maskgil_jax.evaluation.image_sets import write_npz
from maskgil_jax.models.vq import VQModel, reconstruct

COMMANDS = ("reconstruct",)

def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (other modules a process may
  import define `--config` and `--out` too)."""
  flags.DEFINE_string("ckpt", None, "tokenizer weights: LlamaGen .pt/.safetensors or our checkpoint")
  flags.DEFINE_string("images", None, "folder of images, or .npz of uint8 NHWC images")
  flags.DEFINE_string("out", None, "output .npz")
  flags.DEFINE_string("tokenizer", "vq16", f"tokenizer preset: {sorted(TOKENIZER_PRESETS)}")
  flags.DEFINE_integer("image_size", 0, "centre-crop and resize to this size (0: keep)")
  flags.DEFINE_integer("batch_size", 16, "images per compiled call")
  config_flags.DEFINE_config_file("config", None, "experiment file (its tokenizer section)",
                                  lock_config=False)


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
      raise ConfigError(f"--images: the images differ in size ({examples}); pass --image_size "
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
                        batch_size: int = 16, progress: bool = True) -> dict:
  """The `reconstruct` command; returns the summary it prints and stores as `settings`."""
  out_path = pathlib.Path(out)
  if out_path.suffix != ".npz":
    raise ConfigError(f"--out: {out} must end in .npz")
  if not out_path.parent.is_dir():
    raise FileNotFoundError(f"--out: folder {out_path.parent} does not exist")
  if batch_size <= 0:
    raise ConfigError(f"--batch_size: must be positive, got {batch_size}")
  images, files = read_images(images_path, image_size)
  factor = 2 ** (len(tokenizer.ch_mult) - 1)
  if images.shape[1] % factor or images.shape[2] % factor:
    raise ConfigError(f"--images: size {images.shape[2]}x{images.shape[1]} is not a multiple of "
                      f"the tokenizer's downsampling factor {factor}; pass --image_size")
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


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise ConfigError(f"usage: python -m maskgil_jax.vq reconstruct --ckpt CKPT --images PATH "
                      f"--out OUT.npz; got command {argv[1:]}")
  f = flags.FLAGS
  for name in ("ckpt", "images", "out"):
    if not f[name].value:
      raise ConfigError(f"--{name} is required")
  if f.config is not None:
    tokenizer = f.config.tokenizer
  elif f.tokenizer in TOKENIZER_PRESETS:
    tokenizer = tokenizer_config(f.tokenizer)
  else:
    raise ConfigError(f"--tokenizer: {f.tokenizer!r} unknown; one of {sorted(TOKENIZER_PRESETS)}")
  s = reconstruct_command(f.ckpt, f.images, f.out, tokenizer, f.image_size, f.batch_size)
  print(f"codebook usage: {s['codes_used']} of {s['codebook_size']} codes "
        f"({100 * s['codebook_usage']:.2f}%)")
  print(f"PSNR: {s['psnr_mean']:.2f} dB (mean over {s['num_images']} images)")
  print(f"reconstructed {s['num_images']} images {s['image_size'][0]}x{s['image_size'][1]} -> "
        f"{s['grid'][0]}x{s['grid'][1]} codes, written to {f.out}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
