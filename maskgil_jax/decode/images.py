"""Tokens to pictures: the tokenizer's decoder with the uint8 conversion on the device, and the
near-square grid the sample command and the trainer write as PNG.
"""
from __future__ import annotations

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import PartitionSpec

from maskgil_jax import xla_cpu
from maskgil_jax.parallel.rules import active_rules, logical_to_spec


def to_uint8(images):
  """[-1, 1] float images -> uint8: round((x + 1) * 127.5), clipped (the tokenizer's inverse)."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@xla_cpu.jit(static_argnames=("grid",))  # on CPU with the tokenizer's XLA options
def tokens_to_images(tokenizer, tokens, grid: tuple[int, int] | None = None):
  """uint8 images [B, H, W, 3] of tokens [B, L] in raster order of an h x w `grid` (rows,
  columns; default square), or of tokens already shaped [B, h, w]; each image's pixels are the
  same whatever the batch, its placement or the number of devices."""
  if tokens.ndim == 3:
    grid = tokens.shape[1:]
  elif grid is None:
    side = int(round(tokens.shape[1] ** 0.5))
    grid = (side, side)
  if grid[0] * grid[1] != tokens.shape[-1] * (tokens.shape[-2] if tokens.ndim == 3 else 1):
    raise ValueError(f"{tokens.shape[1]} tokens do not fill a {grid[0]}x{grid[1]} grid")
  return to_uint8(decode_each(tokenizer, tokens.reshape(tokens.shape[0], *grid)))


# Images per tokenizer call: every image is decoded in a group of this many, whatever the batch.
MICRO_BATCH = 4


def decode_each(tokenizer, codes, micro_batch: int = MICRO_BATCH):
  """`tokenizer.decode_code` in groups of `micro_batch` images on the device that holds them.

  The convolutions' float sums depend on the batch shape the compiler sees: decoding a batch
  of 32 on one device and of 4 on each of 8 devices gave identical tokens but pixels off by one
  after rounding. Here every group of `micro_batch` images goes through the same program
  (`lax.map` over groups, the last one padded with code 0 and the padding dropped), on each
  device over its own rows (`shard_map` over the batch axes of the `jax.set_mesh` mesh). An
  image's pixels do not depend on its group's other images or its place in the group (each
  image's sums run alone; tests/test_decode_placement.py checks it), so images do not depend on
  the device count or the batch size, and the tokenizer still runs batched.
  """
  def in_groups(tok, c):
    n = c.shape[0]
    pad = -n % micro_batch
    if pad:
      c = jnp.concatenate([c, jnp.zeros((pad,) + c.shape[1:], c.dtype)])
    out = jax.lax.map(tok.decode_code, c.reshape(-1, micro_batch, *c.shape[1:]))
    return out.reshape(-1, *out.shape[2:])[:n]

  mesh = jax.sharding.get_abstract_mesh()
  spec = None if mesh.empty else logical_to_spec(("act_batch",), active_rules(), codes.shape, mesh)
  if spec is None or spec == PartitionSpec(None):
    return in_groups(tokenizer, codes)
  return jax.shard_map(in_groups, mesh=mesh, in_specs=(PartitionSpec(), spec),
                       out_specs=spec)(tokenizer, codes)


def image_grid(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, C] -> one [rows * H, cols * W, C] image, near-square, black padding."""
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  canvas = np.zeros((rows * h, cols * w, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, cols)
    canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
  return canvas


def write_png(path, image: np.ndarray) -> None:
  """A uint8 [H, W, C] image as PNG at a local or cloud path (`gs://...` workdirs), written
  under a temporary name and renamed, so a reader never sees half a file."""
  from PIL import Image
  path = epath.Path(path)
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "PNG")
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)


def captioned_grid(images: np.ndarray, texts, min_side: int = 96,
                   text_lines: int = 3) -> np.ndarray:
  """uint8 [N, H, W, 3] with one text each (the prompts) -> one image: the near-square grid
  of `image_grid`, each picture (enlarged to at least `min_side` px, nearest neighbour) with
  its text written under it in PIL's default font, wrapped to `text_lines` lines."""
  import textwrap

  from PIL import Image, ImageDraw, ImageFont
  n, h, w, _ = images.shape
  scale = max(1, -(-min_side // min(h, w)))
  ch, cw = h * scale, w * scale
  font = ImageFont.load_default()
  line_h = 12
  chars = max(8, cw // 6)
  cell_h = ch + line_h * text_lines + 4
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  canvas = Image.new("RGB", (cols * (cw + 4), rows * cell_h), "white")
  draw = ImageDraw.Draw(canvas)
  for i, (image, text) in enumerate(zip(images, texts)):
    r, c = divmod(i, cols)
    x, y = c * (cw + 4), r * cell_h
    canvas.paste(Image.fromarray(image).resize((cw, ch), Image.NEAREST), (x, y))
    for k, line in enumerate(textwrap.wrap(str(text), chars)[:text_lines]):
      draw.text((x + 1, y + ch + 2 + k * line_h), line, fill="black", font=font)
  return np.asarray(canvas)
