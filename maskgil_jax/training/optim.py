"""The optimizer from `config.optim`: global-norm clipping, then AdamW on a learning-rate schedule.

Weight decay can be limited to matrices (LlamaGen: `p.dim() >= 2` in PyTorch). Layer parameters
here are stacked on a leading `layers` axis, so "matrix" is read from a parameter's logical axis
names (two or more besides `layers`), not from its number of dimensions: a stacked RMSNorm
weight [layers, dim] is still a vector and is not decayed. Gradient accumulation happens inside
the train step (`training/steps.py`), so one optimizer update is one train step.
"""
from __future__ import annotations

import jax
import optax
from flax import nnx

from maskgil_jax.configlib.finalize import ConfigError

SCHEDULES = ("constant", "warmup_cosine")


def check_optim(o, batch_size: int) -> None:
  """ConfigError naming the first `config.optim` field that cannot work."""
  def need(ok, field, msg):
    if not ok:
      raise ConfigError(f"config.optim.{field}: {msg}")
  need(o.lr > 0, "lr", f"must be > 0, got {o.lr}")
  need(o.schedule in SCHEDULES, "schedule", f"{o.schedule!r}; one of {SCHEDULES}")
  need(isinstance(o.warmup_steps, int) and o.warmup_steps >= 0, "warmup_steps",
       f"must be an int >= 0, got {o.warmup_steps!r}")
  need(0.0 <= o.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
  need(0.0 <= o.b1 < 1.0 and 0.0 <= o.b2 < 1.0, "b1", f"betas must be in [0, 1), got "
       f"({o.b1}, {o.b2})")
  need(o.weight_decay >= 0, "weight_decay", f"must be >= 0, got {o.weight_decay}")
  need(o.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 disables), got {o.grad_clip}")
  need(isinstance(o.grad_accum, int) and o.grad_accum >= 1 and batch_size % o.grad_accum == 0,
       "grad_accum", f"must be a positive int dividing batch_size={batch_size}, got "
       f"{o.grad_accum!r}")
  need(0.0 <= o.ema_decay < 1.0, "ema_decay", f"must be in [0, 1) (0 disables), got {o.ema_decay}")


def learning_rate(o, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then constant or cosine to lr * min_lr_ratio."""
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, o.lr, o.warmup_steps, max(total_steps, o.warmup_steps + 1), o.lr * o.min_lr_ratio)
  if o.warmup_steps == 0:
    return optax.constant_schedule(o.lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, o.lr, o.warmup_steps), optax.constant_schedule(o.lr)],
      [o.warmup_steps])


def is_matrix(variable: nnx.Variable) -> bool:
  names = variable.get_metadata().get("out_sharding") or ()
  return len([n for n in names if n != "layers"]) >= 2


def matrix_mask(params):
  """True for each matrix parameter (a prefix tree of `params`, for `optax.masked`)."""
  return jax.tree.map(is_matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(o, total_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip) -> AdamW(schedule, b1, b2, eps, weight_decay[, matrices])."""
  adamw = optax.adamw(learning_rate(o, total_steps), b1=o.b1, b2=o.b2, eps=o.eps,
                      weight_decay=o.weight_decay,
                      mask=matrix_mask if o.decay_matrices_only else None)
  if o.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), adamw)
  return adamw
