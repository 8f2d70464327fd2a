"""Train steps: pure functions (state, batch, key[, frozen tokenizer]) -> (state, metrics).

The trainer jits them with explicit in/out shardings and donates the state. Randomness is
`fold_in(key, state.step)`, so a resumed run draws exactly what an uninterrupted one would.
A step whose loss or gradient norm is not finite leaves parameters, optimizer state and EMA
as they were and reports `nonfinite` (the trainer stops on it); no host sync happens here.

Gradient accumulation splits the batch into `grad_accum` micro-batches inside the step (each
spread over every batch shard) and averages their gradients, so memory follows the
micro-batch while the update sees the whole batch.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from maskgil_jax.models.vq import record_usage
from maskgil_jax.parallel.rules import constrain
from maskgil_jax.training import tokenizer_losses as losses
from maskgil_jax.training.state import TrainState

LossFn = Callable  # (module, batch, key) -> (loss, metrics dict)


def split_microbatches(batch: dict, n: int) -> dict:
  """[B, ...] -> [n, B/n, ...]; micro-batch i takes rows i, i+n, ..., so every batch shard
  contributes to every micro-batch and no data moves between devices."""
  def split(x):
    x = jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
    return constrain(x, (None, "act_batch"))
  return jax.tree.map(split, batch)


def accumulate(grad_fn: Callable, params, batch: dict, key, n: int):
  """(mean gradients, mean metrics) of `grad_fn(params, micro_batch, key_i)` over n splits."""
  if n == 1:
    return grad_fn(params, batch, key)
  micro = split_microbatches(batch, n)
  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, params, first, key))

  def body(total, xs):
    i, mb = xs
    out = grad_fn(params, mb, jax.random.fold_in(key, i))
    return jax.tree.map(jnp.add, total, out), None

  total, _ = jax.lax.scan(body, zeros, (jnp.arange(n), micro))
  return jax.tree.map(lambda x: x / n, total)


def apply_gradients(params, grads, opt_state, tx: optax.GradientTransformation, finite):
  """(new params, new optimizer state, grad norm, ok): the update, or nothing when not `ok`."""
  grad_norm = optax.global_norm(grads)
  ok = finite & jnp.isfinite(grad_norm)
  updates, new_opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  return keep(new_params, params), keep(new_opt_state, opt_state), grad_norm, ok


def ema_update(ema_module, params: nnx.State, rest, graphdef, decay: float, ok):
  """EMA of the Params (skipped on a non-finite step); buffers follow the live model."""
  old = nnx.state(ema_module, nnx.Param)
  new = jax.tree.map(lambda e, p: jnp.where(ok, decay * e + (1.0 - decay) * p, e), old, params)
  return nnx.merge(graphdef, new, rest)


def make_generator_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                        schedule: optax.Schedule, *, grad_accum: int = 1,
                        ema_decay: float = 0.0) -> Callable:
  """The MAR / AR train step. Batches hold 'codes' or, with a frozen `tokenizer` passed to the
  step, 'image' (tokenized inside the step, on the accelerator)."""

  def train_step(state: TrainState, batch: dict, key, tokenizer=None):
    key = jax.random.fold_in(key, state.step)
    if "codes" not in batch:
      rest = {k: v for k, v in batch.items() if k != "image"}  # label or caption entries
      batch = {"codes": tokenizer.encode(batch["image"]), **rest}
    graphdef, params, rest = nnx.split(state.params, nnx.Param, ...)

    def grad_fn(p, micro, k):
      return jax.grad(lambda p: _with_loss(loss_fn(nnx.merge(graphdef, p, rest), micro, k)),
                      has_aux=True)(p)

    grads, metrics = accumulate(grad_fn, params, batch, key, grad_accum)
    params, opt_state, grad_norm, ok = apply_gradients(
        params, grads, state.opt_state, tx, jnp.isfinite(metrics["loss"]))
    ema = state.ema_params
    if ema is not None:
      ema = ema_update(ema, params, rest, graphdef, ema_decay, ok)
    new_state = state.replace(step=state.step + 1, params=nnx.merge(graphdef, params, rest),
                              opt_state=opt_state, ema_params=ema)
    return new_state, {**metrics, "grad_norm": grad_norm, "lr": schedule(state.step),
                       "nonfinite": ~ok}

  return train_step


def _with_loss(out):
  """(loss, metrics) with the loss also in the metrics (accumulated and logged with them)."""
  loss, metrics = out
  return loss, {**metrics, "loss": loss}


def make_tokenizer_step(tx: optax.GradientTransformation, disc_tx: optax.GradientTransformation,
                        schedule: optax.Schedule, weights, *, ema_decay: float = 0.0) -> Callable:
  """The VQ step (LlamaGen `vq_train.py`): update the tokenizer on reconstruction, perceptual,
  adversarial and codebook losses, then the PatchGAN on the same reconstructions, each with its
  own optimizer; before `disc_start` the PatchGAN is not run at all (its parameters and moments
  stay as they are). The frozen LPIPS network (or None) is passed to the step."""
  def train_step(state: TrainState, batch: dict, key, lpips=None):
    key = jax.random.fold_in(key, state.step)
    images = batch["image"]
    graphdef, params, rest = nnx.split(state.params, nnx.Param, ...)
    disc = state.disc_params

    def g_loss(p):
      return losses.generator_loss(nnx.merge(graphdef, p, rest), images, step=state.step,
                                   discriminator=disc, lpips=lpips, weights=weights, rng=key)

    (loss, out), grads = jax.value_and_grad(g_loss, has_aux=True)(params)
    params, opt_state, grad_norm, ok = apply_gradients(params, grads, state.opt_state, tx,
                                                       jnp.isfinite(loss))
    model = nnx.merge(graphdef, params, rest)
    model = record_usage(model, jnp.where(ok, out["codebook_used"],
                                          model.quantize.codebook_used[...]))
    ema = state.ema_params
    if ema is not None:
      ema = ema_update(ema, params, nnx.state(model, nnx.Not(nnx.Param)), graphdef, ema_decay, ok)

    d_graphdef, d_params, d_rest = nnx.split(disc, nnx.Param, ...)

    def d_loss(p):
      return losses.discriminator_loss(nnx.merge(d_graphdef, p, d_rest), images,
                                       out["reconstructions"], step=state.step, weights=weights)

    def disc_update(d_params, d_opt_state):
      (disc_loss, disc_metrics), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_params)
      d_params, d_opt_state, d_grad_norm, d_ok = apply_gradients(
          d_params, d_grads, d_opt_state, disc_tx, jnp.isfinite(disc_loss))
      return d_params, d_opt_state, {**disc_metrics, "disc_grad_norm": d_grad_norm}, d_ok

    def disc_idle(d_params, d_opt_state):  # before disc_start: no forward, backward or update
      zero = jnp.zeros((), jnp.float32)
      metrics = dict(disc_loss=zero, logits_real=zero, logits_fake=zero, disc_grad_norm=zero)
      return d_params, d_opt_state, metrics, jnp.ones((), bool)

    d_params, d_opt_state, disc_metrics, d_ok = jax.lax.cond(
        losses.discriminator_active(state.step, weights), disc_update, disc_idle, d_params,
        state.disc_opt_state)
    new_state = state.replace(step=state.step + 1, params=model, opt_state=opt_state,
                              ema_params=ema, disc_params=nnx.merge(d_graphdef, d_params, d_rest),
                              disc_opt_state=d_opt_state)
    return new_state, {**out["metrics"], **disc_metrics, "grad_norm": grad_norm,
                       "lr": schedule(state.step), "nonfinite": ~(ok & d_ok)}

  return train_step
