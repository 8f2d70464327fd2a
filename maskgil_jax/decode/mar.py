"""MAR decoding (MaskGIL / MaskGIT confidence masking): a whole batch in one jitted `lax` loop.

Start from a grid of MASK tokens (or a partly filled one). Each of the `steps` iterations runs
one bidirectional forward pass (the batch doubled for classifier-free guidance), samples a token
at every position, scores it by its log-probability plus annealed Gumbel noise, and commits the
k most confident still-masked positions, k from the mask schedule (docs/reference.md section 6).
A committed position is never re-masked, and after the last step every position is committed.
Shapes are fixed throughout; k only moves a threshold on per-row confidence ranks, so one
compiled program serves any number of pre-filled tokens per sample.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from maskgil_jax.decode.sampling import (DecodeSettings, doubled, fold_rows, guide, row_keys,
                                         sample_factorized, sample_tokens)
from maskgil_jax.models import conditions
from maskgil_jax.decode.schedules import tokens_per_step


@struct.dataclass
class MarState:
  tokens: jax.Array  # int32 [B, L]; MASK where not yet committed
  commit_step: jax.Array  # int32 [B, L]: step that committed each position; -1 = given


def _progress(step, steps: int):
  """t / (T - 1): 0 at the first step, 1 at the last (0 throughout for a single step)."""
  return step.astype(jnp.float32) / max(steps - 1, 1)


def guided_logits(model, tokens, labels, settings: DecodeSettings, step):
  """Code logits [B, L, codebook] of one step, with the CFG weight ramped or constant.

  The output classes beyond the codebook (the maskgil_reference layout predicts MASK too) are
  dropped, so MASK is never sampled.
  """
  codes = model.layout.codebook_size
  if not settings.guided:
    return model.mar_logits(tokens, labels)[..., :codes]
  logits = model.mar_logits(doubled(tokens), conditions.doubled(labels, model.layout.null_label))
  return guide(logits[..., :codes], _guidance(settings, step))


def _guidance(settings: DecodeSettings, step):
  """The step's CFG weight: ramped linearly from 0 or constant."""
  w = settings.cfg_scale
  if settings.cfg_schedule == "linear":
    w = w * _progress(step, settings.steps)
  return w


def draw(model, tokens, labels, settings: DecodeSettings, step, keys):
  """(a code [B, L] drawn at every position, its log-probability) of one step: from the guided
  logits, or for a factorized model (models/factorized.py) sub-token by sub-token, log p(code)
  = log p(s0) + log p(s1 | s0) then scoring the confidence."""
  if getattr(model, "factorization", None) is None:
    return sample_tokens(keys, guided_logits(model, tokens, labels, settings, step), settings)
  if not settings.guided:
    return sample_factorized(model, model.mar_logits(tokens, labels), keys, settings)
  h = model.mar_logits(doubled(tokens), conditions.doubled(labels, model.layout.null_label))
  return sample_factorized(model, h, keys, settings, _guidance(settings, step))


def _ranks(scores):
  """Rank of every position within its row, 0 = highest score (ties by position)."""
  order = jnp.argsort(-scores, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def _step(model, labels, keys, settings: DecodeSettings, counts, step, state: MarState):
  mask_id = model.layout.mask_id
  pairs = jax.vmap(jax.random.split)(fold_rows(keys, step))
  k_sample, k_gumbel = pairs[:, 0], pairs[:, 1]
  sampled, logp = draw(model, state.tokens, labels, settings, step, k_sample)
  noise = jax.vmap(lambda k: jax.random.gumbel(k, logp.shape[1:], jnp.float32))(k_gumbel)
  confidence = logp + settings.choice_temperature * (1.0 - _progress(step, settings.steps)) * noise
  masked = state.tokens == mask_id
  # still-masked positions rank first (finite scores); committed ones last
  confidence = jnp.where(masked, jnp.maximum(confidence, jnp.finfo(jnp.float32).min), -jnp.inf)
  k = jnp.clip(counts[:, step], 0, jnp.sum(masked, axis=-1))
  commit = masked & (_ranks(confidence) < k[:, None])
  return MarState(tokens=jnp.where(commit, sampled, state.tokens),
                  commit_step=jnp.where(commit, step, state.commit_step))


def generate(model, labels, key, settings: DecodeSettings, init_tokens=None, counts=None,
             first_step: int = 0, stop_step: int | None = None) -> MarState:
  """Decode labels [B] (or a `conditions.Caption`) into a MarState of tokens [B, L] in `settings.steps` forward passes.

  `key` is one key or one per sample ([B]; see sampling.row_keys).

  `init_tokens` [B, L] (optional) holds given codes and MASK (`model.layout.mask_id`) where the
  decoder should write; each row's masked count is spread over the steps by the schedule,
  unless `counts` [steps] or [B, steps] gives the tokens each step commits. `first_step` and
  `stop_step` (static) run only steps first_step..stop_step-1 of the `settings.steps`-step
  schedule, guidance ramp and noise annealing still t / (steps - 1) (the hybrid's head and
  tail schedules).
  """
  layout = model.layout
  if layout.mask_id is None:
    raise ValueError(f"MAR decoding needs a MASK token; layout {layout.name!r} has none "
                     "(use the AR decoder)")
  b, n = conditions.batch_size(labels), layout.num_image_tokens
  if init_tokens is None:
    init_tokens = jnp.full((b, n), layout.mask_id, jnp.int32)
  if init_tokens.shape != (b, n):
    raise ValueError(f"init_tokens has shape {init_tokens.shape}; expected {(b, n)}")
  masked = init_tokens == layout.mask_id
  if counts is None:
    counts = tokens_per_step(settings.schedule, settings.steps, jnp.sum(masked, axis=-1))
  counts = jnp.broadcast_to(jnp.asarray(counts, jnp.int32), (b, settings.steps))
  state = MarState(tokens=init_tokens.astype(jnp.int32),
                   commit_step=jnp.full((b, n), -1, jnp.int32))
  keys = row_keys(key, b)
  body = lambda step, s: _step(model, labels, keys, settings, counts, step, s)
  stop = settings.steps if stop_step is None else stop_step
  return jax.lax.fori_loop(first_step, stop, body, state)


generate_jit = jax.jit(generate)
