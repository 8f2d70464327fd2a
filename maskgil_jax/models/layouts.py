"""Token layouts: how image codes and class labels become one sequence, and its RoPE table.

- `llamagen`: [class] + image tokens; class table with a null row; 2D RoPE whose class-token
  row is zero (q = k = 0 there), exactly as LlamaGen.
- `maskgil_reference`: image tokens + [class] (class last) from ONE table
  (codes, MASK, classes, null); 1D RoPE table with zero row 0, slot s uses row s, exactly as the
  public MaskGIL code (so image token 0 has q = k = 0: a quirk kept for compatibility).
- `maskgil`: [class] + image tokens, codes + MASK table and a class table; 2D RoPE on the image
  grid. The class prefix token is placed at grid position (-1, -1), one step above and left of
  the first cell: it is rotated like any token (its q and k are not zeroed), attention to it
  depends on relative offset like everything else, and it never coincides with a grid cell.

Labels at the API are 0..num_classes-1 and `num_classes` is the null (unconditional) class in
every layout; the reference layout maps them into its single table.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from maskgil_jax.models import rope


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str
  codebook_size: int
  num_classes: int
  cls_token_num: int
  grid: tuple[int, int]  # image tokens (rows, columns); any shape, see `at_grid`
  rope_kind: str
  head_dim: int
  rope_base: float

  @classmethod
  def from_config(cls, m) -> "Layout":
    return cls(m.layout, m.codebook_size, m.num_classes, m.cls_token_num,
               (m.grid_size, m.grid_size), m.rope, m.dim // m.n_head, m.rope_base)

  def at_grid(self, grid) -> "Layout":
    """This layout over an h x w token grid (the parameters do not depend on it: only the
    sequence length and the RoPE table do)."""
    h, w = (int(x) for x in grid)
    if h < 1 or w < 1:
      raise ValueError(f"a token grid needs positive sides, got {h}x{w}")
    return dataclasses.replace(self, grid=(h, w))

  @property
  def num_image_tokens(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def prefix_len(self) -> int:
    """Condition slots before the image tokens (0 when the class token comes last)."""
    return 0 if self.name == "maskgil_reference" else self.cls_token_num

  @property
  def seq_len(self) -> int:
    return self.num_image_tokens + self.cls_token_num

  @property
  def mask_id(self) -> int | None:
    return None if self.name == "llamagen" else self.codebook_size

  @property
  def null_label(self) -> int:
    return self.num_classes

  def reference_class_ids(self, labels):
    """Row of a label (or the null class) in the maskgil_reference single table."""
    return self.codebook_size + 1 + labels

  def rope_tables(self) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [seq_len, head_dim/2] for every slot of the full sequence; 2D RoPE takes
    (row, column) of the actual grid, so a square grid gives the tables it always had."""
    n, w, p = self.num_image_tokens, self.grid[1], self.cls_token_num
    cells = np.arange(n)
    if self.name == "maskgil_reference":
      # slot s uses row s of a table whose row 0 is zero and row r >= 1 is position r - 1
      slots = np.arange(n + p)
      angles = rope.angles_1d(np.maximum(slots - 1, 0), self.head_dim, self.rope_base)
      return rope.table(angles, (slots > 0).astype(np.float32))
    if self.rope_kind == "1d":
      positions = np.concatenate([np.full(p, -1), cells])
      angles = rope.angles_1d(positions, self.head_dim, self.rope_base)
    else:
      rows = np.concatenate([np.full(p, -1), cells // w])  # raster order over the h x w grid
      cols = np.concatenate([np.full(p, -1), cells % w])
      angles = rope.angles_2d(rows, cols, self.head_dim, self.rope_base)
    scale = np.ones(n + p, np.float32)
    if self.name == "llamagen":
      scale[:p] = 0.0  # LlamaGen zeroes the condition rows
    return rope.table(angles, scale)
