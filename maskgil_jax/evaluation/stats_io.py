"""Statistics files: ADM's reference batches and our own, one `.npz` layout for both.

ADM's reference batches (e.g. `VIRTUAL_imagenet256_labeled.npz`) hold `arr_0` (the images) and
the statistics its TensorFlow Inception computed from them: `mu` [2048], `sigma` [2048, 2048]
(pool3) and `mu_s` [2023], `sigma_s` [2023, 2023] (sFID). Our statistics files use the same keys,
so either kind reads the same way, and add
- `pool3` [N, 2048] float32, the features precision/recall and the Inception Score need
  (optional: 400 MB for 50k images);
- `meta`, a JSON string: how the features were made (preprocessing, weights file, image count).
Files are written to a temporary name and renamed, so an interrupted write leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from maskgil_jax.errors import UserError
from maskgil_jax.evaluation.features import Features
from maskgil_jax.evaluation.fid import feature_statistics
from maskgil_jax.evaluation.image_sets import npz_members, write_npz
from maskgil_jax.models.inception import POOL3_DIM, SPATIAL_DIM


class StatsFileError(UserError):
  """A statistics file that is missing, unreadable or holds arrays of the wrong shape."""


@dataclasses.dataclass
class SetStatistics:
  """Gaussian fits of one image set; `mu_s`/`sigma_s` and `pool3` may be absent."""
  mu: np.ndarray
  sigma: np.ndarray
  mu_s: np.ndarray | None = None
  sigma_s: np.ndarray | None = None
  pool3: np.ndarray | None = None
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    _check("mu", self.mu, (POOL3_DIM,))
    _check("sigma", self.sigma, (POOL3_DIM, POOL3_DIM))
    if (self.mu_s is None) != (self.sigma_s is None):
      raise StatsFileError("mu_s and sigma_s come together")
    if self.mu_s is not None:
      _check("mu_s", self.mu_s, (SPATIAL_DIM,))
      _check("sigma_s", self.sigma_s, (SPATIAL_DIM, SPATIAL_DIM))
    if self.pool3 is not None and (self.pool3.ndim != 2 or self.pool3.shape[1] != POOL3_DIM):
      raise StatsFileError(f"pool3 must be [N, {POOL3_DIM}], got {list(self.pool3.shape)}")


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
  if tuple(array.shape) != shape:
    raise StatsFileError(f"{name} must be {list(shape)}, got {list(array.shape)}")


def statistics_from_features(features: Features, meta: dict | None = None) -> SetStatistics:
  mu, sigma = feature_statistics(features.pool3)
  mu_s, sigma_s = feature_statistics(features.spatial)
  return SetStatistics(mu, sigma, mu_s, sigma_s, features.pool3,
                       dict(meta or {}, num_images=int(features.pool3.shape[0])))


def has_statistics(path: str | os.PathLike) -> bool:
  """Whether an `.npz` holds `mu` and `sigma` (ADM reference batch or our statistics file)."""
  return {"mu", "sigma"} <= set(npz_members(path))


def read_statistics(path: str | os.PathLike) -> SetStatistics:
  path = pathlib.Path(path)
  if not path.is_file():
    raise StatsFileError(f"{path}: no such statistics file")
  try:
    with np.load(path, allow_pickle=False) as f:
      names = set(f.files)
      if not {"mu", "sigma"} <= names:
        raise StatsFileError(f"no mu/sigma statistics (entries: {sorted(names)})")
      get = lambda k: f[k] if k in names else None  # noqa: E731
      meta = json.loads(str(f["meta"])) if "meta" in names else {"source": "ADM reference batch"}
      return SetStatistics(get("mu"), get("sigma"), get("mu_s"), get("sigma_s"), get("pool3"),
                           meta)
  except StatsFileError as e:
    raise StatsFileError(f"{path}: {e}") from e
  except (ValueError, OSError) as e:
    raise StatsFileError(f"{path}: not a readable statistics .npz ({e})") from e


def write_statistics(path: str | os.PathLike, stats: SetStatistics) -> None:
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    raise StatsFileError(f"{path}: statistics files end in .npz")
  arrays = {k: getattr(stats, k) for k in ("mu", "sigma", "mu_s", "sigma_s", "pool3")
            if getattr(stats, k) is not None}
  arrays["meta"] = np.array(json.dumps(stats.meta, sort_keys=True))
  write_npz(path, arrays)
