"""Training objectives: pure functions of (model, batch, key, config.objective) -> (loss, metrics).

- `mar_loss` (MaskGIL): each sample draws a mask ratio from the schedule, each token is
  replaced by MASK with that probability, the class label is dropped to the null class for
  classifier-free guidance, and the bidirectional logits are scored with cross-entropy (label
  smoothing) over all image positions, as the reference does, or over the masked ones only.
- `ar_loss` (LlamaGen): teacher-forced next-token cross-entropy through the causal mode, with
  the same label drop.
- `joint_loss` (one model for both, layout `maskgil`): a fixed share `ar_fraction` of every
  batch's examples is trained as AR (LlamaGen's plain cross-entropy), the others as MAR (the
  MaskGIL loss above), one forward per mode over its own rows, so no slot is computed twice or
  thrown away. See `joint_loss` for why the split is per example and fixed.

batch = {'codes': int32 [B, h, w] (any h x w: the model runs over that grid) or [B, L], 'label': int32 [B]}, or for a caption model
'caption' float [B, P, caption_dim] + 'caption_mask' [B, P] (left padded) instead of 'label';
a dropped caption becomes the model's null caption (models/conditions.py). Metrics are fp32 scalars:
'loss', 'accuracy' (argmax hits on the positions the model had to predict: the masked ones for
MAR, all for AR) and, for MAR, 'mask_ratio' (fraction of tokens masked in the batch); the
joint loss also reports each mode's figures as 'mar_loss', 'mar_accuracy', 'ar_loss',
'ar_accuracy'.
"""
from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from maskgil_jax.decode.schedules import check_schedule, mask_ratio
from maskgil_jax.models import conditions, factorized
from maskgil_jax.models.transformer import at_grid

LOSS_POSITIONS = ("all", "masked")
OBJECTIVES = ("mar", "ar", "joint")


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


def code_scores(model, out, codes, label_smoothing: float = 0.0):
  """(per-position CE [B, L], argmax hits [B, L]) of the model's output `out` for `codes`.

  A flat head's `out` is its logits. A factorized model's (models/factorized.py) is its
  hidden states: its CE is the sum of the two sub-tokens' (s1 scored given the true s0,
  teacher-forced, as Open-MAGVIT2 trains), and a hit needs both sub-tokens right.
  """
  bits = getattr(model, "factorization", None)
  if bits is None:
    return cross_entropy(out, codes, label_smoothing), jnp.argmax(out, axis=-1) == codes
  s0, s1 = factorized.split(codes, bits)
  l0, l1 = model.sub_logits(out, s0)
  ce = cross_entropy(l0, s0, label_smoothing) + cross_entropy(l1, s1, label_smoothing)
  return ce, (jnp.argmax(l0, axis=-1) == s0) & (jnp.argmax(l1, axis=-1) == s1)


def drop_labels(key, batch, rate: float, null_label: int):
  """The batch's condition, each row replaced by the null one with probability `rate` (CFG)."""
  return conditions.dropped(key, conditions.from_batch(batch), rate, null_label)


def batch_grid(model, batch):
  """`model` over the batch's token grid: codes [B, h, w] of any h x w (an aspect bucket)
  set the RoPE table and sequence length; flat codes [B, L] keep the model's own grid."""
  codes = batch["codes"]
  return at_grid(model, codes.shape[1:3]) if codes.ndim == 3 else model


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
  model = batch_grid(model, batch)
  codes = _flat_codes(batch)
  k_ratio, k_mask, k_label, k_dropout = jax.random.split(key, 4)
  ratio = mask_ratio(objective_cfg.mask_schedule, jax.random.uniform(k_ratio, codes.shape[:1]))
  masked = jax.random.uniform(k_mask, codes.shape) < ratio[:, None]
  inputs = jnp.where(masked, layout.mask_id, codes)
  labels = drop_labels(k_label, batch, objective_cfg.label_drop, layout.null_label)
  logits = model.mar_logits(inputs, labels, key=k_dropout)
  per_token, hits = code_scores(model, logits, codes, objective_cfg.label_smoothing)
  scored = masked if objective_cfg.loss_on == "masked" else jnp.ones_like(masked)
  loss = _masked_mean(per_token, scored)
  hits = hits.astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": _masked_mean(hits, masked),
                "mask_ratio": jnp.mean(masked.astype(jnp.float32))}


def ar_loss(model, batch, key, objective_cfg):
  """Next-token loss of a causal model (layouts llamagen, maskgil): slot j predicts code j."""
  model = batch_grid(model, batch)
  codes = _flat_codes(batch)
  k_label, k_dropout = jax.random.split(key)
  labels = drop_labels(k_label, batch, objective_cfg.label_drop, model.layout.null_label)
  logits = model.ar_logits(codes, labels, key=k_dropout)
  per_token, hits = code_scores(model, logits, codes, objective_cfg.label_smoothing)
  loss = jnp.mean(per_token)
  accuracy = jnp.mean(hits.astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": accuracy}



def ar_rows(batch_size: int, ar_fraction: float):
  """(AR row indices, MAR row indices) of a batch: round(ar_fraction * B) rows, spread evenly
  over the batch (rows i where floor((i + 1) f) > floor(i f)), so that every data shard of a
  sharded batch holds both modes in the same proportion. Static: shapes never change."""
  n_ar = round(ar_fraction * batch_size)
  if not 1 <= n_ar <= batch_size - 1:
    raise ValueError(f"config.objective.ar_fraction: {ar_fraction} of a (micro-)batch of "
                     f"{batch_size} leaves {n_ar} AR rows; the joint objective needs at least "
                     "one row of each mode")
  marks = [int((i + 1) * n_ar // batch_size) > int(i * n_ar // batch_size)
           for i in range(batch_size)]
  ar = [i for i, m in enumerate(marks) if m]
  mar = [i for i, m in enumerate(marks) if not m]
  return jnp.asarray(ar, jnp.int32), jnp.asarray(mar, jnp.int32)


def joint_loss(model, batch, key, objective_cfg):
  """One model trained as MaskGIL and as LlamaGen at once (layout maskgil), so the hybrid
  decoder needs one checkpoint.

  The split is per example and fixed: `ar_rows` picks round(ar_fraction * B) rows of every
  batch for AR, the rest are MAR. Per example rather than per step, because every update then
  sees both objectives (no step is all-AR or all-MAR, so the loss and the gradient do not
  jump from step to step) and each mode's forward runs over exactly its rows (one compiled
  step, fixed shapes). Rows are examples in shuffled order, so which rows go to AR carries no
  information. The AR half uses LlamaGen's loss (no label smoothing); the MAR half MaskGIL's
  (schedule, label smoothing, `loss_on`). The loss is the per-example mean over the batch:
  f * AR + (1 - f) * MAR, with f the AR share of the rows.
  """
  b = jnp.shape(batch["codes"])[0]
  ar_idx, mar_idx = ar_rows(b, objective_cfg.ar_fraction)
  take = lambda idx: jax.tree.map(lambda x: jnp.take(jnp.asarray(x), idx, axis=0), batch)
  k_mar, k_ar = jax.random.split(key)
  m_loss, m = mar_loss(model, take(mar_idx), k_mar, objective_cfg)
  ar_cfg = types.SimpleNamespace(label_drop=objective_cfg.label_drop, label_smoothing=0.0)
  a_loss, a = ar_loss(model, take(ar_idx), k_ar, ar_cfg)
  f = ar_idx.shape[0] / b
  loss = f * a_loss + (1.0 - f) * m_loss
  return loss, {"loss": loss, "mar_loss": m_loss, "ar_loss": a_loss,
                "mar_accuracy": m["accuracy"], "ar_accuracy": a["accuracy"],
                "mask_ratio": m["mask_ratio"]}


LOSSES = {"mar": mar_loss, "ar": ar_loss, "joint": joint_loss}
