"""Frechet distance between Gaussian fits of two feature sets (FID on pool3, sFID on spatial).

Computed exactly as pytorch-fid and ADM's evaluator do, on the host in float64:
mu = mean, sigma = `np.cov(rowvar=False)` (unbiased, N - 1), then
  d = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 @ sigma2))
with `scipy.linalg.sqrtm`. Only when that square root has a non-finite entry is 1e-6 added to
both diagonals and the root taken again (an ill-conditioned but finite product gets no offset);
a complex root is accepted when its diagonal's imaginary part is within 1e-3 of zero and its
real part is used, otherwise it is an error. The statistics of 50k x 2048 features and the
2048 x 2048 square root take seconds on a host CPU, so they stay in numpy where float64 is native.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from maskgil_jax.errors import UserError

SINGULAR_OFFSET = 1e-6


class FIDError(UserError):
  """Statistics that cannot be compared (mismatched sizes, too few samples, complex root)."""


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu [D], sigma [D, D]) in float64 of a [N, D] feature array."""
  act = np.asarray(features, dtype=np.float64)
  if act.ndim != 2:
    raise FIDError(f"features must be [N, D], got shape {act.shape}")
  if act.shape[0] < 2:
    raise FIDError(f"need at least 2 feature vectors for a covariance, got {act.shape[0]}")
  return np.mean(act, axis=0), np.cov(act, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():  # singular / ill-conditioned: handled below, as the reference
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise FIDError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                   f"sigma {sigma1.shape} vs {sigma2.shape}")
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    warnings.warn(f"fid calculation produces singular product; adding {SINGULAR_OFFSET} to "
                  "diagonal of cov estimates", RuntimeWarning, stacklevel=2)
    offset = np.eye(sigma1.shape[0]) * SINGULAR_OFFSET
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise FIDError(f"Imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(sigma1 sigma2)")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
