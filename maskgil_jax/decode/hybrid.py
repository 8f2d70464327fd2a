"""Hybrid decoding (the paper's AR + MAR): AR writes the first tokens, MAR completes the grid.

One jitted program: the AR model writes `settings.ar_tokens` tokens in raster order (one per
step, KV-cached) with its own guidance and temperature (`settings.ar_half()`: LlamaGen's
settings suit a causal model, MaskGIL's a masked one), then the MAR model fills the remaining
positions. How the MAR half schedules them (`settings.hybrid_schedule`, see `mar_plan`):
- 'spread' (ours): all `settings.steps` steps, the schedule spread over the tokens AR left;
- 'head' (the reference code's way: MaskGIL's `sample(init_code=...)`): the full-grid schedule
  of `settings.steps` steps run from its first step, each step committing what it schedules or
  what is still masked if that is less; it stops when nothing is left, so the head of the
  schedule runs (128 of 256 given, 8 arccos steps: [1, 18, 26, 32, 38, 13] in 6 passes) and the
  guidance ramp w * t / (steps - 1) stops short of w;
- 'tail': the full-grid schedule with the tokens AR wrote taken off its first steps; the steps
  left with nothing to commit are not run, so the last steps run ([0, 0, 0, 0, 0, 30, 48, 50]:
  3 passes) and guidance ramp and noise annealing continue from the first step that runs.
The two may be one model (layout `maskgil` trained with the `ar` or `joint` objective) or two
parameter sets that share the tokenizer: same codebook, classes and grid.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maskgil_jax.decode import ar, mar
from maskgil_jax.decode.sampling import DecodeSettings, row_keys
from maskgil_jax.decode.schedules import tokens_per_step
from maskgil_jax.models import conditions


def check_pair(ar_model, mar_model) -> None:
  """The AR and MAR models must speak the same tokens; raises ValueError naming the mismatch."""
  if ar_model.condition != mar_model.condition:
    raise ValueError(f"hybrid: the AR model is conditioned on {ar_model.condition}s but the MAR "
                     f"model on {mar_model.condition}s")
  a, m = ar_model.layout, mar_model.layout
  for field in ("codebook_size", "num_classes", "grid"):
    if getattr(a, field) != getattr(m, field):
      raise ValueError(f"hybrid: the AR model has {field} {getattr(a, field)} but the MAR "
                       f"model has {getattr(m, field)}")
  if a.prefix_len == 0:
    raise ValueError(f"hybrid: layout {a.name!r} cannot decode AR (use llamagen or maskgil)")
  if m.mask_id is None:
    raise ValueError(f"hybrid: layout {m.name!r} cannot decode MAR (use maskgil or "
                     "maskgil_reference)")


def _full_grid(schedule: str, steps: int, length: int) -> np.ndarray:
  with jax.ensure_compile_time_eval():
    return np.asarray(tokens_per_step(schedule, steps, length))


def head_counts(schedule: str, steps: int, length: int, n_ar: int) -> tuple[np.ndarray, int]:
  """(tokens each of the `steps` steps commits, steps to run) of the reference's schedule:
  the full-grid counts from the first step, each capped by what is still masked (MaskGIL's
  sampler takes min(scheduled, masked left) and stops once nothing is masked)."""
  left = length - n_ar
  counts = np.zeros(steps, np.int64)
  for i, k in enumerate(_full_grid(schedule, steps, length)):
    counts[i] = min(max(int(k), 0), left)
    left -= counts[i]
  run = int(np.nonzero(counts)[0][-1]) + 1 if counts.any() else 0
  return counts, run


def tail_counts(schedule: str, steps: int, length: int, n_ar: int) -> tuple[np.ndarray, int]:
  """(tokens each of the `steps` steps commits, first step to run) of the tail schedule: the
  full-grid counts with the first `n_ar` tokens taken off the front."""
  full = _full_grid(schedule, steps, length)
  written = np.minimum(np.cumsum(full), n_ar)
  counts = full - np.diff(written, prepend=0)
  first = int(np.argmax(counts > 0)) if np.any(counts > 0) else steps
  return counts, first


def mar_plan(settings: DecodeSettings, length: int) -> tuple[np.ndarray | None, int, int]:
  """(counts [steps] or None for the decoder's own spread, first step, stop step) of the MAR
  half: it runs steps first..stop-1 of the `settings.steps`-step schedule. Static (host
  numbers), so the program knows how many forward passes it runs."""
  kind, steps, n_ar = settings.hybrid_schedule, settings.steps, settings.ar_tokens
  if kind == "head":
    counts, run = head_counts(settings.schedule, steps, length, n_ar)
    return counts, 0, run
  if kind == "tail":
    counts, first = tail_counts(settings.schedule, steps, length, n_ar)
    return counts, first, steps
  return None, 0, steps


def mar_steps_run(settings: DecodeSettings, length: int) -> int:
  """Forward passes the MAR half of a hybrid runs (for reports of cost)."""
  if settings.ar_tokens >= length:
    return 0
  _, first, stop = mar_plan(settings, length)
  return stop - first


def complete(mar_model, labels, key, settings: DecodeSettings, grid) -> mar.MarState:
  """The MAR half: tokens [B, L] from `grid`, whose first `settings.ar_tokens` positions are
  given and the rest MASK, scheduled by `settings.hybrid_schedule`."""
  counts, first, stop = mar_plan(settings, mar_model.layout.num_image_tokens)
  return mar.generate(mar_model, labels, key, settings, init_tokens=grid,
                      counts=None if counts is None else jnp.asarray(counts),
                      first_step=first, stop_step=stop)


def generate(ar_model, mar_model, labels, key, settings: DecodeSettings) -> mar.MarState:
  """Tokens [B, L] for labels [B] or a `conditions.Caption`; commit_step is -1 where AR wrote
  the token. `key` is one key or one per sample."""
  check_pair(ar_model, mar_model)
  layout = mar_model.layout
  n_ar, length = settings.ar_tokens, layout.num_image_tokens
  if n_ar > length:
    raise ValueError(f"config.decode.ar_tokens: {n_ar} is more than the {length} tokens of "
                     "the grid")
  b = conditions.batch_size(labels)
  pairs = jax.vmap(jax.random.split)(row_keys(key, b))
  k_ar, k_mar = pairs[:, 0], pairs[:, 1]
  grid = jnp.full((b, length), layout.mask_id, jnp.int32)
  if n_ar > 0:
    written = ar.generate(ar_model, labels, k_ar, settings.ar_half(), n_ar).tokens
    grid = grid.at[:, :n_ar].set(written)
  if n_ar == length:
    return mar.MarState(tokens=grid, commit_step=jnp.full_like(grid, -1))
  return complete(mar_model, labels, k_mar, settings, grid)


generate_jit = jax.jit(generate)
