"""Sample quality as ADM's evaluator measures it: FID, sFID, Inception Score, precision and
recall of a sample set against a reference, each side an ADM `.npz` batch, a folder of images
or a statistics file (`evaluate`, called with keyword arguments by the `evaluate` command and
the hybrid study). The protocol, its options and the aspect-ratio rule are described in the
command's doc (`maskgil_jax/evaluate.py`) and docs/evaluation.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import jax

import maskgil_jax
from maskgil_jax.evaluation.features import compute_features, data_mesh, global_batch_size
from maskgil_jax.evaluation.fid import frechet_distance
from maskgil_jax.evaluation.image_sets import IMAGES_KEY, ImageSetError, npz_members, open_image_set
from maskgil_jax.evaluation.inception_score import class_logits, inception_score
from maskgil_jax.evaluation.precision_recall import DEFAULT_K, precision_recall
from maskgil_jax.evaluation.stats_io import (SetStatistics, StatsFileError, has_statistics,
                                             read_statistics, statistics_from_features,
                                             write_statistics)
from maskgil_jax.interop.inception_names import load_fid_inception


@dataclasses.dataclass
class Input:
  """One side of the comparison: its images (if any) and its statistics (once known)."""
  role: str
  path: pathlib.Path
  images: object = None  # NpzImages | FolderImages
  stats: SetStatistics | None = None
  stats_from_file: bool = False


def open_input(path: str, role: str, recompute_stats: bool = False,
               per_image_minmax: bool = False) -> Input:
  """Classify SAMPLES / REF without reading images: image set, statistics, or both."""
  item = Input(role, pathlib.Path(path))
  recompute_stats = recompute_stats or per_image_minmax  # stored statistics are of the originals
  if item.path.is_file() and item.path.suffix == ".npz":
    has_images = IMAGES_KEY in npz_members(item.path)
    if has_statistics(item.path) and not (recompute_stats and has_images):
      item.stats, item.stats_from_file = read_statistics(item.path), True
    if has_images:
      item.images = open_image_set(item.path, per_image_minmax)
    elif item.stats is None:
      raise ImageSetError(f"{item.path}: neither images ({IMAGES_KEY}) nor statistics (mu, sigma)")
    elif per_image_minmax:
      raise ImageSetError(f"{item.path}: holds statistics only; --per-image-minmax rescales "
                          "the sample images, so it needs the images")
  else:
    item.images = open_image_set(item.path, per_image_minmax)
  return item


ASPECT_TOLERANCE = 0.01  # relative width/height difference below which two sets share an aspect


def image_shape(item: Input | None) -> list[int] | None:
  """[H, W, 3] of an input's images, or as recorded in its statistics file; None if unknown."""
  if item is None:
    return None
  if item.images is not None:
    return [int(s) for s in item.images.image_shape]
  shape = item.stats.meta.get("image_shape") if item.stats is not None else None
  return [int(s) for s in shape] if shape else None


def check_aspect_ratios(samples: Input, ref: Input | None, allow: bool) -> None:
  """ImageSetError when samples and reference differ in aspect ratio (module doc)."""
  a, b = image_shape(samples), image_shape(ref)
  if allow or a is None or b is None:
    return
  ra, rb = a[1] / a[0], b[1] / b[0]
  if abs(ra / rb - 1) > ASPECT_TOLERANCE:
    raise ImageSetError(
        f"--samples {samples.path} are {a[0]}x{a[1]} (height x width, aspect {ra:.3g}) but "
        f"--ref {ref.path} is {b[0]}x{b[1]} (aspect {rb:.3g}): the Inception stretches each "
        "set to 299x299, so FID would also measure the different stretch; compare sets of one "
        "aspect ratio (any size), or pass --allow-aspect-mismatch to compare them anyway")


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def evaluate(*, samples: str, inception: str, ref: str | None = None, batch: int = 256,
             preprocessing: str = "tf1", distances: str = "adm", is_splits: int = 10,
             recompute_stats: bool = False, save_samples_stats: str | None = None,
             save_ref_stats: str | None = None, allow_aspect_mismatch: bool = False,
             per_image_minmax: bool = False) -> dict:
  """Every metric the inputs allow, the reason for each one left out, and the settings.

  `samples` / `ref`: an ADM .npz batch, an image folder or a statistics .npz; `inception`:
  the FID Inception weights; `batch`: global images per forward; `save_*_stats`: where to
  write each side's statistics (process 0); `per_image_minmax`: each sample image rescaled by
  its own min and max, as MaskGIL's FID_sample.py writes its samples (evaluation/minmax.py)."""
  samples = open_input(samples, "samples", recompute_stats, per_image_minmax)
  ref = open_input(ref, "ref", recompute_stats) if ref else None
  for item in (samples, ref):
    made_with = item and item.stats and item.stats.meta.get("preprocessing")
    if made_with and made_with != preprocessing:
      raise StatsFileError(f"{item.path}: statistics made with --preprocessing {made_with}, "
                           f"this run uses {preprocessing}; features must come alike")
  check_aspect_ratios(samples, ref, allow_aspect_mismatch)
  model = load_fid_inception(inception)
  mesh = data_mesh()
  meta = {"preprocessing": preprocessing, "inception": pathlib.Path(inception).name,
          "inception_sha256": _sha256(pathlib.Path(inception))}

  for item in [x for x in (samples, ref) if x is not None and x.images is not None]:
    feats = compute_features(model, item.images.batches(batch), item.images.num_images,
                             batch_size=batch, mesh=mesh, preprocessing=preprocessing,
                             desc=item.role)
    computed = statistics_from_features(feats, dict(meta, source=str(item.path),
                                                    image_shape=image_shape(item)))
    if item.stats is None:
      item.stats = computed
    else:  # ADM: stored statistics win; our features still serve precision/recall and IS
      item.stats.pool3 = computed.pool3

  metrics, notes = {}, {}
  pool3 = samples.stats.pool3
  if pool3 is not None and pool3.shape[0] >= is_splits:
    mean, std = inception_score(class_logits(pool3, model.fc.weight[...]), is_splits)
    metrics["inception_score"], metrics["inception_score_std"] = mean, std
  else:
    notes["inception_score"] = "needs at least --is-splits sample pool3 features"
  if ref is not None:
    s, r = samples.stats, ref.stats
    metrics["fid"] = frechet_distance(s.mu, s.sigma, r.mu, r.sigma)
    if s.mu_s is not None and r.mu_s is not None:
      metrics["sfid"] = frechet_distance(s.mu_s, s.sigma_s, r.mu_s, r.sigma_s)
    else:
      notes["sfid"] = "a statistics file without mu_s/sigma_s"
    if s.pool3 is not None and r.pool3 is not None:
      metrics["precision"], metrics["recall"] = precision_recall(
          r.pool3, s.pool3, k=DEFAULT_K, distances=distances)
    else:
      notes["precision_recall"] = "needs pool3 features of both sets"

  for item, out in ((samples, save_samples_stats), (ref, save_ref_stats)):
    if out and jax.process_index() == 0:
      write_statistics(out, item.stats)

  def describe(item):
    return None if item is None else {
        "path": str(item.path),
        "num_images": (item.images.num_images if item.images is not None
                       else item.stats.meta.get("num_images")),
        "statistics": "read from file" if item.stats_from_file else "computed",
        "image_shape": image_shape(item)}

  return {
      "metrics": metrics,
      "not_computed": notes,
      "settings": dict(
          meta, samples=describe(samples), ref=describe(ref), batch=batch,
          global_batch=global_batch_size(batch, mesh), devices=int(mesh.devices.size),
          processes=jax.process_count(), platform=jax.devices()[0].platform,
          distances=distances, precision_recall_k=DEFAULT_K, is_splits=is_splits,
          allow_aspect_mismatch=allow_aspect_mismatch, samples_per_image_minmax=per_image_minmax,
          is_logits="pool3 @ fc.weight (no bias), as ADM", fid_statistics="float64, np.cov",
          maskgil_jax=maskgil_jax.__version__, jax=jax.__version__),
  }


NAMES = {"inception_score": "Inception Score", "inception_score_std": "Inception Score std",
         "fid": "FID", "sfid": "sFID", "precision": "Precision", "recall": "Recall"}
