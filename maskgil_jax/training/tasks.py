"""What the trainer trains (`config.task`): the model, optimizer, loss and step of each task,
the frozen networks the step reads and the batch it takes.

  generator  MaskGIL (objective 'mar'), LlamaGen (objective 'ar') or one model for both
             (objective 'joint') on codes, or on images that a frozen tokenizer
             (`tokenizer.ckpt`) encodes inside the step (caption models: T5 ids that the
             frozen T5 encodes there too, or pre-extracted features);
  tokenizer  the VQ tokenizer with its perceptual, adversarial and codebook losses and a
             PatchGAN discriminator with its own optimizer.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

from maskgil_jax.configlib import ConfigError
from maskgil_jax.models import vq
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.text import encoder as text_encoder
from maskgil_jax.training import flops as flops_lib
from maskgil_jax.training import objectives, optim
from maskgil_jax.training import state as state_lib, steps, tokenizer_losses


@dataclasses.dataclass
class Task:
  """What differs between the generator and the tokenizer tasks."""
  init: Callable[[], state_lib.TrainState]  # builds the train state (run under jit)
  step: Callable  # (state, batch, key, frozen) -> (state, metrics)
  batch: dict[str, tuple[tuple[int, ...], Any]]  # global batch entries: (shape, dtype)
  frozen: Any  # the frozen network the step reads (tokenizer / LPIPS), or None
  flops_per_step: float | None  # analytic model FLOPs, or None to ask XLA
  tokens_per_example: int
  # (h, w) pixel size -> the batch entries of that aspect bucket (None: the one shape above)
  batch_for: Callable[[tuple[int, int]], dict] | None = None
  buckets: tuple = ()  # the (h, w) pixel sizes batches may take (one compiled step each)


def image_batch(config, size: tuple[int, int] | None = None, text_ids: bool = False) -> dict:
  """Global batch entries of images (of one aspect bucket's (h, w), default square) and
  their condition: labels, T5 ids encoded in the step, or pre-extracted caption features."""
  h, w = size or (config.data.image_size, config.data.image_size)
  batch = {"image": ((config.batch_size, h, w, 3), jnp.float32)}
  if config.model.condition != "caption" or config.task != "generator":
    return {**batch, "label": ((config.batch_size,), jnp.int32)}
  p = config.model.cls_token_num
  if not text_ids:  # pre-extracted features (or their shapes, for the memory report)
    return {**batch, "caption": ((config.batch_size, p, config.model.caption_dim), jnp.float32),
            "caption_mask": ((config.batch_size, p), jnp.bool_)}
  return {**batch, "text_ids": ((config.batch_size, p), jnp.int32),
          "text_mask": ((config.batch_size, p), jnp.int32)}


def with_text_encoder(step: Callable) -> Callable:
  """The generator step for batches of T5 ids: the frozen T5 (second frozen network) encodes
  them on the devices, left-padded as LlamaGen, before the step proper."""
  def train_step(state, batch, key, frozen):
    tokenizer, t5 = frozen
    if "text_ids" in batch:
      features = t5(batch["text_ids"], batch["text_mask"]).astype(jnp.float32)
      caption, mask = text_encoder.left_pad(features, batch["text_mask"])
      batch = {k: v for k, v in batch.items() if k not in ("text_ids", "text_mask")}
      batch = {**batch, "caption": caption, "caption_mask": mask}
    return step(state, batch, key, tokenizer)
  return train_step


def generator_task(config, tokenizer, t5=None) -> Task:
  """MAR / AR on codes, or on images encoded by the frozen tokenizer inside the step."""
  tx = optim.make_optimizer(config.optim, config.total_steps)
  objective = objectives.LOSSES[config.objective.name]
  step = steps.make_generator_step(
      lambda model, batch, key: objective(model, batch, key, config.objective), tx,
      optim.learning_rate(config.optim, config.total_steps), grad_accum=config.optim.grad_accum,
      ema_decay=config.optim.ema_decay)
  g = config.model.grid_size
  if config.data.name == "codes":
    batch = {"codes": ((config.batch_size, g, g), jnp.int32),
             "label": ((config.batch_size,), jnp.int32)}
  elif tokenizer is None:
    raise ConfigError("config.tokenizer.ckpt: training on images needs the tokenizer that "
                      "encodes them (or train on extracted codes with data.name='codes')")
  else:
    batch = image_batch(config, text_ids=t5 is not None)
  frozen = tokenizer if "image" in batch else None
  buckets = tuple(tuple(b) for b in config.data.buckets) or ((config.data.image_size,) * 2,)
  if "text_ids" in batch:
    step, frozen = with_text_encoder(step), (tokenizer, t5)
  return Task(
      init=lambda: state_lib.init_train_state(
          Transformer(config.model, rngs=nnx.Rngs(config.seed)), tx,
          ema=config.optim.ema_decay > 0),
      step=step,
      batch=image_batch(config, buckets[0], t5 is not None) if "image" in batch else batch,
      frozen=frozen, flops_per_step=flops_lib.generator_step_flops(config),
      tokens_per_example=g * g,
      batch_for=((lambda size: image_batch(config, size, t5 is not None)) if "image" in batch
                 else None),
      buckets=buckets if "image" in batch else ())


def tokenizer_task(config) -> Task:
  """VQ + PatchGAN with two optimizers; LPIPS (if weights are given) is the frozen network."""
  tx = optim.make_optimizer(config.optim, config.total_steps)
  disc_tx = tx  # LlamaGen gives the discriminator the same Adam recipe, with its own state
  loss = config.tokenizer.loss
  step = steps.make_tokenizer_step(
      tx, disc_tx, optim.learning_rate(config.optim, config.total_steps),
      tokenizer_losses.LossWeights.from_config(loss), ema_decay=config.optim.ema_decay)
  down = 2 ** (len(config.tokenizer.ch_mult) - 1)
  return Task(
      init=lambda: state_lib.init_train_state(
          vq.VQModel(config.tokenizer, rngs=nnx.Rngs(config.seed)), tx,
          ema=config.optim.ema_decay > 0, disc_tx=disc_tx,
          disc=tokenizer_losses.build_discriminator(loss, nnx.Rngs(config.seed + 1))),
      step=step, batch=image_batch(config), frozen=tokenizer_losses.build_lpips(loss),
      flops_per_step=None, tokens_per_example=(config.data.image_size // down) ** 2)
