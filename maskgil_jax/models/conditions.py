"""What a generation is conditioned on: a class label, or a caption (text-encoder features).

A class condition is int32 labels [B] (`num_classes` = the null class). A caption condition is
a `Caption`: left-padded features [B, P, C] from the text encoder, their mask [B, P] (True on
real tokens) and a per-row `null` flag that swaps the features for the model's learned null
caption (guidance, and caption drop in training). Decoders and objectives handle both through
the functions here, so nothing else asks which kind it holds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

CONDITIONS = ("class", "caption")


@struct.dataclass
class Caption:
  features: jax.Array  # float [B, P, caption_dim], LlamaGen's left padding (pads zeroed)
  mask: jax.Array  # bool [B, P]: real caption tokens
  null: jax.Array  # bool [B]: use the null caption instead of `features`

  @classmethod
  def create(cls, features, mask, null=None) -> "Caption":
    features = jnp.asarray(features)
    null = jnp.zeros(features.shape[:1], bool) if null is None else jnp.asarray(null, bool)
    return cls(features, jnp.asarray(mask).astype(bool), null)


def is_caption(cond) -> bool:
  return isinstance(cond, Caption)


def batch_size(cond) -> int:
  return (cond.features if is_caption(cond) else cond).shape[0]


def doubled(cond, null_label: int):
  """[B] -> [2B] interleaved (cond, null) rows for classifier-free guidance. The null half of a
  caption keeps its prompt's padding mask, as LlamaGen's sampler does."""
  if not is_caption(cond):
    return jnp.stack([cond, jnp.full_like(cond, null_label)], axis=1).reshape(-1)
  rep = lambda x: jnp.repeat(x, 2, axis=0)
  null = jnp.stack([cond.null, jnp.ones_like(cond.null)], axis=1).reshape(-1)
  return Caption(rep(cond.features), rep(cond.mask), null)


def dropped(key, cond, rate: float, null_label: int):
  """Each row replaced by the null condition with probability `rate` (CFG training)."""
  if rate == 0.0:
    return cond
  drop = jax.random.bernoulli(key, rate, (batch_size(cond),))
  if is_caption(cond):
    return cond.replace(null=cond.null | drop)
  return jnp.where(drop, null_label, cond)


def from_batch(batch: dict):
  """The condition a training batch carries: 'caption' + 'caption_mask', else 'label'."""
  if "caption" in batch:
    return Caption.create(batch["caption"], batch["caption_mask"])
  return batch["label"]


def check_kind(cond, condition: str) -> None:
  """ValueError unless `cond` is the kind a model with config.model.condition takes."""
  if is_caption(cond) != (condition == "caption"):
    given = "a caption" if is_caption(cond) else "class labels"
    raise ValueError(f"this model is conditioned on {condition}s (config.model.condition="
                     f"{condition!r}) but was given {given}")
