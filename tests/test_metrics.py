"""FID / sFID, Inception Score and precision/recall against closed forms and brute force."""
import warnings

import numpy as np
import pytest

from maskgil_jax.evaluation.fid import FIDError, feature_statistics, frechet_distance
from maskgil_jax.evaluation.inception_score import class_logits, inception_score
from maskgil_jax.evaluation.precision_recall import (manifold_radii, pairwise_distances,
                                                     precision_recall)


def _spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _sqrt_psd(s):
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def closed_form_fid(mu1, s1, mu2, s2):
  """Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) + |mu1 - mu2|^2 through symmetric eigensolves."""
  r = _sqrt_psd(s1)
  middle = np.linalg.eigvalsh(r @ s2 @ r)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(middle, 0, None))))


def test_statistics_are_the_mean_and_unbiased_covariance():
  mu, sigma = feature_statistics(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], np.float32))
  np.testing.assert_allclose(mu, [2.0, 2.0])
  np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])  # divides by N - 1 = 2
  assert mu.dtype == sigma.dtype == np.float64
  with pytest.raises(FIDError, match="at least 2"):
    feature_statistics(np.zeros((1, 4)))
  with pytest.raises(FIDError, match=r"\[N, D\]"):
    feature_statistics(np.zeros(4))


def test_fid_of_a_set_against_itself_is_zero():
  feats = np.random.default_rng(0).standard_normal((300, 24)).astype(np.float32)
  mu, sigma = feature_statistics(feats)
  assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_fid_matches_the_closed_form_for_gaussians():
  rng = np.random.default_rng(1)
  d = 12
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = _spd(rng, d), _spd(rng, d)
  assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed_form_fid(mu1, s1, mu2, s2),
                                                              rel=1e-9)
  # sample from two Gaussians: the statistics' FID converges to the population value
  a = rng.multivariate_normal(mu1, s1, size=40_000)
  b = rng.multivariate_normal(mu2, s2, size=40_000)
  fid = frechet_distance(*feature_statistics(a), *feature_statistics(b))
  assert fid == pytest.approx(closed_form_fid(mu1, s1, mu2, s2), rel=0.02)


def test_singular_product_gets_the_diagonal_offset():
  # A product with no finite square root (a nilpotent Jordan block at 0, which rounding can
  # produce from near-singular covariances) makes sqrtm return inf; the reference then adds
  # 1e-6 to both diagonals and takes the root of the shifted product.
  sigma1, sigma2 = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2)
  mu = np.zeros(2)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fid = frechet_distance(mu, sigma1, mu, sigma2)
  eps = 1e-6  # sqrtm of [[a, b], [0, a]] has trace 2 sqrt(a), a = eps (1 + eps)
  assert any("singular product" in str(w.message) for w in caught)
  assert fid == pytest.approx(2.0 - 4 * np.sqrt(eps * (1 + eps)), abs=1e-9)
  healthy = np.diag([1.0, 1e-12])  # ill-conditioned but finite: no offset, as the reference
  assert frechet_distance(mu, healthy, mu, healthy) == pytest.approx(0.0, abs=1e-9)


def test_mismatched_statistics_are_refused():
  with pytest.raises(FIDError, match="do not match"):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_of_uniform_and_one_hot_predictions():
  assert inception_score(np.zeros((100, 1008)))[0] == pytest.approx(1.0, abs=1e-12)
  classes = 20
  one_hot = 1e4 * np.eye(classes)[np.arange(10 * classes) % classes]  # each split sees every class
  mean, std = inception_score(one_hot, num_splits=10)
  assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_inception_score_splits_like_adm():
  logits = np.random.default_rng(2).standard_normal((50, 7)) * 3
  scores = []
  for part in np.split(logits, 10):  # ADM: consecutive chunks (of 5,000 for 50k samples)
    p = np.exp(part) / np.exp(part).sum(1, keepdims=True)
    scores.append(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), 1))))
  assert inception_score(logits, 10)[0] == pytest.approx(np.mean(scores), rel=1e-12)
  with pytest.raises(ValueError, match="splits"):
    inception_score(logits[:5], 10)


def test_class_logits_drop_the_bias():
  pool3, w = np.ones((2, 3)), np.arange(12, dtype=np.float32).reshape(3, 4)
  np.testing.assert_allclose(class_logits(pool3, w), [[12, 15, 18, 21]] * 2)


# ---------------------------------------------------------------- precision / recall

def brute_force_pr(ref, sam, k=3):
  """ADM's definitions on full distance matrices (exact for small-integer features)."""
  def sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  r_ref = np.sort(sq(ref, ref), axis=1)[:, k]
  r_sam = np.sort(sq(sam, sam), axis=1)[:, k]
  d = sq(ref, sam)
  precision = np.mean(np.any(d <= r_ref[:, None], axis=0))
  recall = np.mean(np.any(d <= r_sam[None, :], axis=1))
  return r_ref, precision, recall


@pytest.mark.parametrize("distances", ["adm", "float32"])
def test_precision_recall_equal_brute_force_with_blocking(distances):
  rng = np.random.default_rng(3)
  ref = rng.integers(-3, 4, (37, 6)).astype(np.float32)  # integers: every path is exact,
  sam = rng.integers(-2, 5, (29, 6)).astype(np.float32)  # ties included
  r_ref, precision, recall = brute_force_pr(ref, sam)
  np.testing.assert_array_equal(manifold_radii(ref, block=8, distances=distances), r_ref)
  for block in (5, 10_000):  # several blocks with a padded last one; one block
    assert precision_recall(ref, sam, block=block, distances=distances) == (precision, recall)


def test_precision_recall_on_synthetic_manifolds():
  rng = np.random.default_rng(4)
  ref = rng.standard_normal((400, 8)).astype(np.float32)
  same = rng.standard_normal((400, 8)).astype(np.float32)
  p, r = precision_recall(ref, same)
  assert 0.6 < p <= 1 and 0.6 < r <= 1
  assert precision_recall(ref, same + 100) == (0.0, 0.0)  # disjoint supports
  collapsed = 0.05 * rng.standard_normal((400, 8)).astype(np.float32)  # one mode only
  p, r = precision_recall(ref, collapsed)
  assert p == 1.0 and r < 0.2


def test_adm_distances_round_like_float16():
  rng = np.random.default_rng(5)
  u = rng.standard_normal((6, 64)).astype(np.float32) * 2
  v = rng.standard_normal((5, 64)).astype(np.float32) * 2
  u16, v16 = u.astype(np.float16), v.astype(np.float16)
  nu = (u16 * u16).astype(np.float32).sum(1).astype(np.float16)
  nv = (v16 * v16).astype(np.float32).sum(1).astype(np.float16)
  uv = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
  expected = np.maximum(nu[:, None] - 2 * uv + nv[None, :], 0).astype(np.float32)
  ours = np.asarray(pairwise_distances(u, v, "adm"))
  spacing = np.spacing(expected.astype(np.float16)).astype(np.float32)
  assert np.all(np.abs(ours - expected) <= spacing)  # at most one float16 step (sum order)
  exact = ((u[:, None] - v[None]) ** 2).sum(-1)
  assert np.abs(ours - exact).max() > 1e-3  # the rounding is really there
  np.testing.assert_allclose(pairwise_distances(u, v, "float32"), exact, rtol=1e-5)
  overflow = np.full((2, 4), 300.0, np.float32)  # |u|^2 = 360,000 > float16 max
  np.testing.assert_allclose(pairwise_distances(overflow, overflow, "adm"), 0.0)


def test_precision_recall_input_errors():
  with pytest.raises(ValueError, match="same D"):
    precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
  with pytest.raises(ValueError, match="N > k"):
    manifold_radii(np.zeros((3, 4)))
