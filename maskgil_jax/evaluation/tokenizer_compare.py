"""The tokenizer study in one call: the same images through several tokenizers, side by side.

`compare(tokenizers, images, out)` reconstructs every image with each named tokenizer and writes
`out/compare.json` (everything measured, with the settings), `out/compare.md` (a table) and
`out/compare.png` (the first images, original then each tokenizer's reconstruction). Per
tokenizer: PSNR and SSIM (uint8 pixels), LPIPS (when VGG16 + LPIPS head files are given), rFID
(Inception features of the originals and the reconstructions, through `evaluation.features`
and `evaluation.fid`, when the FID Inception file is given), codebook usage (distinct codes /
codebook size) and perplexity (exp of the entropy of the code histogram over all images),
tokens per image, and encode / decode images per second (compiled, timed after one warm-up
call). It backs `python -m maskgil_jax.vq compare`.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from maskgil_jax import configlib
from maskgil_jax.loading import load_tokenizer
from maskgil_jax.data import preprocess
from maskgil_jax.data.demo_set import load_demo
from maskgil_jax.evaluation.fid import feature_statistics, frechet_distance
from maskgil_jax.models.vq import decode, encode
from maskgil_jax.evaluation.reconstruction import psnr, read_images, reconstruct_all

DEMO = "demo"  # `images` value for the shipped demo images (held-out split, padded to 32 px)


@dataclasses.dataclass(frozen=True)
class Named:
  """One tokenizer to compare: weights (`path`) and a preset name or a tokenizer config."""
  name: str
  path: str
  tokenizer: object  # preset name (str) or config.tokenizer

  def config(self):
    if isinstance(self.tokenizer, str):
      return configlib.tokenizer_config(self.tokenizer)
    return self.tokenizer


def load_images(images, image_size: int = 0, limit: int = 0) -> np.ndarray:
  """uint8 [N, H, W, 3] from a folder, an `.npz`, an array, or `DEMO` (the shipped test split)."""
  if isinstance(images, np.ndarray):
    pixels = images
  elif str(images) == DEMO:
    raw, _ = load_demo("test")
    pixels = np.stack([preprocess.fit(preprocess.to_rgb(x), image_size or 32, "pad")
                       for x in raw[:limit or len(raw)]])
  else:
    pixels, _ = read_images(images, image_size)
  return pixels[:limit] if limit else pixels


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image SSIM of uint8 images (Wang et al. 2004: Gaussian window sigma 1.5, 11 taps,
  K1 0.01, K2 0.03, L 255), averaged over positions and channels."""
  from scipy.ndimage import gaussian_filter
  a, b = a.astype(np.float64), b.astype(np.float64)
  blur = lambda x: gaussian_filter(x, sigma=(0, 1.5, 1.5, 0), truncate=3.5, mode="reflect")
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return s.mean(axis=(1, 2, 3)).astype(np.float32)


def code_statistics(codes: np.ndarray, codebook_size: int) -> dict:
  counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=codebook_size)
  p = counts[counts > 0] / counts.sum()
  return dict(codes_used=int((counts > 0).sum()),
              codebook_usage=float((counts > 0).sum() / codebook_size),
              perplexity=float(np.exp(-(p * np.log(p)).sum())))


def throughput(model, images: np.ndarray, batch_size: int) -> tuple[float, float]:
  """(encode, decode) images per second over `images`, compiled, after a warm-up call."""
  batch = jnp.asarray(preprocess.to_model_range(images[:batch_size]))
  codes = encode(model, batch).block_until_ready()
  decode(model, codes).block_until_ready()
  n = -(-len(images) // batch_size)
  t0 = time.perf_counter()
  for _ in range(n):
    codes = encode(model, batch)
  codes.block_until_ready()
  t1 = time.perf_counter()
  for _ in range(n):
    out = decode(model, codes)
  out.block_until_ready()
  t2 = time.perf_counter()
  count = n * len(batch)
  return count / (t1 - t0), count / (t2 - t1)


def _lpips(lpips, a: np.ndarray, b: np.ndarray, batch_size: int) -> float:
  call = jax.jit(lambda m, x, y: m(x, y))
  values = [np.asarray(call(lpips, preprocess.to_model_range(a[i:i + batch_size]),
                            preprocess.to_model_range(b[i:i + batch_size])))
            for i in range(0, len(a), batch_size)]
  return float(np.concatenate(values).mean())


def _features(inception, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  from maskgil_jax.evaluation.features import compute_features
  batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
  feats = compute_features(inception, batches, len(images), batch_size=batch_size,
                           desc="inception")
  return feature_statistics(feats.pool3)


def figure(images: np.ndarray, recons: dict[str, np.ndarray], count: int = 8,
           scale: int = 1) -> Image.Image:
  """Rows: the first `count` images; columns: the original, then each tokenizer's
  reconstruction, under a header naming the column."""
  n = min(count, len(images))
  h, w = images.shape[1] * scale, images.shape[2] * scale
  names = ["original", *recons]
  header, gap = 14, 2
  canvas = Image.new("RGB", (len(names) * (w + gap), header + n * (h + gap)), "white")
  draw = ImageDraw.Draw(canvas)
  for col, name in enumerate(names):
    draw.text((col * (w + gap) + 1, 1), name[:max(1, w // 6)], fill="black")
    column = images if name == "original" else recons[name]
    for row in range(n):
      tile = Image.fromarray(column[row]).resize((w, h), Image.NEAREST)
      canvas.paste(tile, (col * (w + gap), header + row * (h + gap)))
  return canvas


def markdown_table(results: dict[str, dict]) -> str:
  cols = [("PSNR dB", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"), ("LPIPS", "lpips", "{:.4f}"),
          ("rFID", "rfid", "{:.2f}"), ("codebook", "codebook_size", "{:,}"),
          ("usage", "codebook_usage", "{:.1%}"), ("perplexity", "perplexity", "{:.1f}"),
          ("tokens/img", "tokens_per_image", "{}"), ("encode img/s", "encode_images_per_s", "{:.1f}"),
          ("decode img/s", "decode_images_per_s", "{:.1f}")]
  lines = ["| tokenizer | " + " | ".join(c[0] for c in cols) + " |",
           "|---|" + "---|" * len(cols)]
  for name, r in results.items():
    cells = [fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in cols]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def compare(tokenizers: list[Named], images, out, *, image_size: int = 0, limit: int = 0,
            batch_size: int = 16, lpips_weights: str = "", inception: str = "",
            figure_count: int = 8, progress: bool = False) -> dict:
  """Measure each tokenizer on the same images and write compare.json / .md / .png to `out`."""
  if not tokenizers:
    raise configlib.ConfigError("--tokenizers: name at least one tokenizer (name=path)")
  names = [t.name for t in tokenizers]
  if len(set(names)) != len(names):
    raise configlib.ConfigError(f"--tokenizers: names repeat: {names}")
  out = pathlib.Path(out)
  pixels = load_images(images, image_size, limit)
  batch_size = min(batch_size, len(pixels))
  lpips = None
  if lpips_weights:
    from maskgil_jax.interop.vq_names import load_lpips
    lpips = load_lpips(lpips_weights)
  inception_model = ref_stats = None
  if inception:
    from maskgil_jax.interop.inception_names import load_fid_inception
    inception_model = load_fid_inception(inception)
    ref_stats = _features(inception_model, pixels, batch_size)

  results, recons = {}, {}
  for t in tokenizers:
    config = t.config()
    model = load_tokenizer(t.path, config)
    factor = model.downsample_factor
    if pixels.shape[1] % factor or pixels.shape[2] % factor:
      raise configlib.ConfigError(
          f"--images: size {pixels.shape[2]}x{pixels.shape[1]} is not a multiple of {t.name}'s "
          f"downsampling factor {factor}; pass an image size")
    codes, rec = reconstruct_all(model, pixels, batch_size, progress)
    enc_rate, dec_rate = throughput(model, pixels, batch_size)
    r = dict(path=str(t.path), preset=t.tokenizer if isinstance(t.tokenizer, str) else None,
             kind=config.kind, codebook_size=int(config.codebook_size),
             downsample_factor=factor, grid=list(codes.shape[1:]),
             tokens_per_image=int(codes.shape[1] * codes.shape[2]),
             psnr=float(np.mean(psnr(pixels, rec))), ssim=float(np.mean(ssim(pixels, rec))),
             lpips=_lpips(lpips, pixels, rec, batch_size) if lpips is not None else None,
             rfid=None, encode_images_per_s=enc_rate, decode_images_per_s=dec_rate,
             **code_statistics(codes, int(config.codebook_size)))
    if inception_model is not None:
      mu, sigma = _features(inception_model, rec, batch_size)
      r["rfid"] = float(frechet_distance(mu, sigma, *ref_stats))
    results[t.name], recons[t.name] = r, rec

  summary = dict(images=str(images) if not isinstance(images, np.ndarray) else "array",
                 num_images=int(len(pixels)), image_size=list(pixels.shape[1:3]),
                 batch_size=batch_size, lpips_weights=lpips_weights or None,
                 inception=inception or None, device=jax.devices()[0].device_kind,
                 tokenizers=results)
  out.mkdir(parents=True, exist_ok=True)  # only once every tokenizer has been measured
  (out / "compare.json").write_text(json.dumps(summary, indent=2))
  (out / "compare.md").write_text(
      f"Tokenizers on {len(pixels)} images of {pixels.shape[2]}x{pixels.shape[1]} px "
      f"({summary['images']}, {summary['device']}):\n\n" + markdown_table(results))
  scale = max(1, 64 // pixels.shape[1])
  figure(pixels, recons, figure_count, scale).save(out / "compare.png")
  return summary
