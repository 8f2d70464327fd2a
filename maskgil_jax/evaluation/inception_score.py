"""Inception Score: exp(E_x KL(p(y|x) || p(y))), averaged over splits of the sample set.

ADM's evaluator (after improved-GAN) takes p(y|x) = softmax(pool3 @ W) with the 1008-way head's
weight and no bias, cuts the set into consecutive chunks of 5,000 and averages exp(mean KL) over
the chunks; for the standard 50,000 samples that is 10 splits of 5,000, which is what
`num_splits=10` gives here (`np.array_split`: consecutive, sizes differing by at most one).
Computed in float64 from log-softmax, with 0 log 0 = 0, so confident one-hot predictions are
exact instead of NaN.
"""
from __future__ import annotations

import numpy as np


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def class_logits(pool3, fc_weight) -> np.ndarray:
  """ADM's Inception-Score logits: pool3 [N, 2048] @ the head's weight [2048, 1008], no bias."""
  return np.asarray(pool3, np.float32) @ np.asarray(fc_weight, np.float32)


def inception_score(logits, num_splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `num_splits` consecutive splits of [N, C] class logits."""
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2:
    raise ValueError(f"logits must be [N, classes], got shape {logits.shape}")
  if logits.shape[0] < num_splits:
    raise ValueError(f"{logits.shape[0]} samples cannot fill {num_splits} splits")
  scores = []
  for part in np.array_split(logits, num_splits):
    log_p = _log_softmax(part)
    p = np.exp(log_p)
    with np.errstate(divide="ignore", invalid="ignore"):  # classes nobody predicts
      log_py = np.log(p.mean(axis=0, keepdims=True))
      kl = np.where(p > 0, p * (log_p - log_py), 0.0).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
