"""Training objectives: pure functions of (model, batch, key, config.objective) -> (loss, metrics).

- `mar_loss` (MaskGIL): each sample draws a mask ratio from the schedule, each token is
  replaced by MASK with that probability, the class label is dropped to the null class for
  classifier-free guidance, and the bidirectional logits are scored with cross-entropy (label
  smoothing) over all image positions, as the reference does, or over the masked ones only.
- `ar_loss` (LlamaGen): teacher-forced next-token cross-entropy through the causal mode, with
  the same label drop.

batch = {'codes': int32 [B, h, w] or [B, L], 'label': int32 [B]}, or for a caption model
'caption' float [B, P, caption_dim] + 'caption_mask' [B, P] (left padded) instead of 'label';
a dropped caption becomes the model's null caption (models/conditions.py). Metrics are fp32 scalars:
'loss', 'accuracy' (argmax hits on the positions the model had to predict: the masked ones for
MAR, all for AR) and, for MAR, 'mask_ratio' (fraction of tokens masked in the batch).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from maskgil_jax.decode.schedules import check_schedule, mask_ratio
from maskgil_jax.models import conditions

LOSS_POSITIONS = ("all", "masked")


def cross_entropy(logits, targets, label_smoothing: float = 0.0):
  """Per-position CE [...] of fp32 logits [..., V], smoothed as torch's CrossEntropyLoss:
  (1 - eps) * nll(target) + eps * mean over classes of nll(class)."""
  # from the log-normaliser alone: -log p(y) = lse - z_y and -mean(log p) = lse - mean(z), so
  # no [.., V] log-probability array is built besides the logits themselves
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  nll = lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if label_smoothing == 0.0:
    return nll
  return (1.0 - label_smoothing) * nll + label_smoothing * (lse - jnp.mean(logits, axis=-1))


def drop_labels(key, batch, rate: float, null_label: int):
  """The batch's condition, each row replaced by the null one with probability `rate` (CFG)."""
  return conditions.dropped(key, conditions.from_batch(batch), rate, null_label)


def _flat_codes(batch):
  codes = jnp.asarray(batch["codes"], jnp.int32)
  return codes.reshape(codes.shape[0], -1)


def _masked_mean(values, weights):
  weights = weights.astype(jnp.float32)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mar_loss(model, batch, key, objective_cfg):
  """Masked-token loss of a bidirectional model (layouts maskgil, maskgil_reference)."""
  layout = model.layout
  if layout.mask_id is None:
    raise ValueError(f"MAR training needs a MASK token; layout {layout.name!r} has none")
  check_schedule(objective_cfg.mask_schedule)
  if objective_cfg.loss_on not in LOSS_POSITIONS:
    raise ValueError(f"config.objective.loss_on: {objective_cfg.loss_on!r}; "
                     f"one of {LOSS_POSITIONS}")
  codes = _flat_codes(batch)
  k_ratio, k_mask, k_label, k_dropout = jax.random.split(key, 4)
  ratio = mask_ratio(objective_cfg.mask_schedule, jax.random.uniform(k_ratio, codes.shape[:1]))
  masked = jax.random.uniform(k_mask, codes.shape) < ratio[:, None]
  inputs = jnp.where(masked, layout.mask_id, codes)
  labels = drop_labels(k_label, batch, objective_cfg.label_drop, layout.null_label)
  logits = model.mar_logits(inputs, labels, key=k_dropout)
  per_token = cross_entropy(logits, codes, objective_cfg.label_smoothing)
  scored = masked if objective_cfg.loss_on == "masked" else jnp.ones_like(masked)
  loss = _masked_mean(per_token, scored)
  hits = (jnp.argmax(logits, axis=-1) == codes).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": _masked_mean(hits, masked),
                "mask_ratio": jnp.mean(masked.astype(jnp.float32))}


def ar_loss(model, batch, key, objective_cfg):
  """Next-token loss of a causal model (layouts llamagen, maskgil): slot j predicts code j."""
  codes = _flat_codes(batch)
  k_label, k_dropout = jax.random.split(key)
  labels = drop_labels(k_label, batch, objective_cfg.label_drop, model.layout.null_label)
  logits = model.ar_logits(codes, labels, key=k_dropout)
  loss = jnp.mean(cross_entropy(logits, codes, objective_cfg.label_smoothing))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == codes).astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": accuracy}

