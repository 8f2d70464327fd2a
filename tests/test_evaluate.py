"""`python -m maskgil_jax.evaluate` end to end on tiny image sets, statistics files and input errors.

The Inception has the fixture's recipe weights (the real ones are not available here; parity
with pytorch-fid is tests/test_inception.py's job). The 2048 x 2048 matrix
square root of a real FID takes about a minute on two shared cores, so these tests swap
`frechet_distance` for a cheap stand-in of the same signature: they check which statistics reach
it, and tests/test_metrics.py checks the distance itself.
"""
import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskgil_jax import evaluate
from maskgil_jax.evaluation import evaluator
from maskgil_jax.evaluation.stats_io import (SetStatistics, StatsFileError, read_statistics,
                                             write_statistics)
from maskgil_jax.interop import torch_io
from test_inception import recipe_weights


def stand_in_distance(mu1, sigma1, mu2, sigma2):
  return float(np.sum((mu1 - mu2) ** 2) + np.abs(sigma1 - sigma2).sum())


@pytest.fixture(autouse=True)
def cheap_fid(monkeypatch):
  monkeypatch.setattr(evaluator, "frechet_distance", stand_in_distance)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, fixtures_dir):
  path = tmp_path_factory.mktemp("weights") / "inception.safetensors"
  torch_io.save_state_dict(recipe_weights(fixtures_dir / "fid_inception_keys.txt"), path)
  return path


def smooth_images(seed, n, size=32):
  """Blurry random images (upsampled 4x4 noise), so sets differ in their statistics; `size` is
  the side of a square or (height, width)."""
  h, w = (size, size) if np.isscalar(size) else size
  small = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BICUBIC))
                   for im in small])


SET_SIZE = 6  # images per set: one forward each with --batch 6


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
  root = tmp_path_factory.mktemp("sets")
  samples = root / "samples.npz"
  np.savez(samples, arr_0=smooth_images(1, SET_SIZE))
  ref = root / "ref"
  ref.mkdir()
  for i, im in enumerate(smooth_images(2, SET_SIZE)):
    Image.fromarray(im).save(ref / f"{i:03d}.png")
  return samples, ref


def run(*argv):
  assert evaluate.main([str(a) for a in argv]) == 0


COMMON = ("--batch", SET_SIZE, "--is-splits", 3)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, weights, image_sets):
  """Images in, metrics and both statistics files out: (JSON, printed text, stats paths)."""
  samples, ref = image_sets
  root = tmp_path_factory.mktemp("run")
  out, s_stats, r_stats = root / "r.json", root / "s.npz", root / "ref_stats.npz"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(evaluator, "frechet_distance", stand_in_distance)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      run("--samples", samples, "--ref", ref, "--inception", weights, "--out", out,
          "--save-samples-stats", s_stats, "--save-ref-stats", r_stats, *COMMON)
  return json.loads(out.read_text()), printed.getvalue(), s_stats, r_stats


def test_images_to_metrics(first_run):
  result, printed, _, _ = first_run
  metrics, settings = result["metrics"], result["settings"]
  assert set(metrics) == {"fid", "sfid", "inception_score", "inception_score_std", "precision",
                          "recall"}
  for name in ("FID", "sFID", "Inception Score", "Precision", "Recall"):
    assert f"{name}: " in printed
  assert printed.strip().splitlines()[-1].startswith("evaluate: FID")
  assert settings["preprocessing"] == "tf1" and settings["global_batch"] == SET_SIZE
  assert settings["samples"]["num_images"] == SET_SIZE
  assert settings["ref"]["image_shape"] == [32, 32, 3]
  assert settings["ref"]["statistics"] == "computed" and len(settings["inception_sha256"]) == 64
  assert metrics["fid"] > 0 and metrics["inception_score"] >= 1.0


def test_statistics_files_give_the_same_metrics(tmp_path, weights, first_run):
  result, _, s_stats, r_stats = first_run
  out = tmp_path / "r2.json"
  run("--samples", s_stats, "--ref", r_stats, "--inception", weights, "--out", out, *COMMON)
  again = json.loads(out.read_text())
  assert again["metrics"] == result["metrics"]
  assert again["settings"]["samples"]["statistics"] == "read from file"
  stats = read_statistics(s_stats)
  assert stats.pool3.shape == (SET_SIZE, 2048) and stats.meta["preprocessing"] == "tf1"


def test_stored_reference_statistics_win_as_in_adm(tmp_path, weights, image_sets, first_run):
  _, ref = image_sets
  result, _, s_stats, r_stats = first_run
  stats = read_statistics(r_stats)
  adm_ref = tmp_path / "VIRTUAL_ref.npz"  # ADM layout: images plus its own statistics
  images = np.stack([np.asarray(Image.open(p)) for p in sorted(ref.iterdir())])
  np.savez(adm_ref, arr_0=images, mu=stats.mu + 1.0, sigma=stats.sigma, mu_s=stats.mu_s,
           sigma_s=stats.sigma_s)
  out = tmp_path / "stored.json"
  run("--samples", s_stats, "--ref", adm_ref, "--inception", weights, "--out", out, *COMMON)
  a, b = result["metrics"], json.loads(out.read_text())
  assert b["settings"]["ref"]["statistics"] == "read from file"
  sam = read_statistics(s_stats)
  assert b["metrics"]["fid"] == pytest.approx(  # the stored, shifted mu is what was used
      stand_in_distance(sam.mu, sam.sigma, stats.mu + 1.0, stats.sigma), rel=1e-12)
  assert b["metrics"]["fid"] != pytest.approx(a["fid"])
  assert b["metrics"]["sfid"] == pytest.approx(a["sfid"])
  for k in ("precision", "recall", "inception_score"):  # features still come from the images
    assert b["metrics"][k] == a[k]
  out = tmp_path / "recomputed.json"
  run("--samples", s_stats, "--ref", adm_ref, "--inception", weights, "--out", out,
      "--recompute-stats", *COMMON)
  recomputed = json.loads(out.read_text())
  assert recomputed["settings"]["ref"]["statistics"] == "computed"
  assert recomputed["metrics"] == a  # our network's statistics of the same images


def test_statistics_only_run_without_a_reference(tmp_path, weights, image_sets):
  samples, _ = image_sets
  stats_path = tmp_path / "samples_stats.npz"
  run("--samples", samples, "--inception", weights, "--save-samples-stats", stats_path, *COMMON)
  stats = read_statistics(stats_path)
  assert stats.mu.shape == (2048,) and stats.sigma_s.shape == (2023, 2023)


def _fails(capsys, *argv):
  assert evaluate.main([str(a) for a in argv]) == 2
  return capsys.readouterr().err


def test_clear_errors_for_bad_inputs(tmp_path, weights, image_sets, capsys):
  samples, ref = image_sets
  err = _fails(capsys, "--samples", samples, "--ref", ref, "--inception", tmp_path / "no.pth")
  assert "no.pth" in err and "pytorch-fid" in err

  empty = tmp_path / "empty.npz"
  np.savez(empty, arr_0=np.zeros((0, 32, 32, 3), np.uint8))
  assert "empty" in _fails(capsys, "--samples", empty, "--ref", ref, "--inception", weights)
  (tmp_path / "no_images").mkdir()
  assert "empty" in _fails(capsys, "--samples", tmp_path / "no_images", "--ref", ref,
                           "--inception", weights)

  floats = tmp_path / "floats.npz"
  np.savez(floats, arr_0=np.zeros((4, 32, 32, 3), np.float32))
  assert "uint8 [N, H, W, 3]" in _fails(capsys, "--samples", floats, "--ref", ref,
                                        "--inception", weights)
  gray = tmp_path / "gray.npz"
  np.savez(gray, arr_0=np.zeros((4, 32, 32), np.uint8))
  assert "uint8 [N, H, W, 3]" in _fails(capsys, "--samples", gray, "--ref", ref,
                                        "--inception", weights)

  mixed = tmp_path / "mixed"
  mixed.mkdir()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(mixed / "a.png")
  Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(mixed / "b.png")
  err = _fails(capsys, "--samples", mixed, "--ref", ref, "--inception", weights, "--batch", 8)
  assert "b.png" in err and "differs" in err

  stats_file = tmp_path / "stats.npz"
  write_statistics(stats_file, SetStatistics(np.zeros(2048), np.eye(2048),
                                             meta={"preprocessing": "pytorch_fid"}))
  err = _fails(capsys, "--samples", samples, "--ref", stats_file, "--inception", weights)
  assert "stats.npz" in err and "pytorch_fid" in err

  neither = tmp_path / "neither.npz"
  np.savez(neither, labels=np.zeros(3))
  assert "neither images" in _fails(capsys, "--samples", neither, "--ref", ref,
                                    "--inception", weights)


def test_usage(capsys):
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--help"])
  assert e.value.code == 0
  assert "--samples SAMPLES --ref REF --inception WEIGHTS" in capsys.readouterr().out
  assert evaluate.main(["--samples", "s.npz", "--inception", "w.pth"]) == 2
  err = capsys.readouterr().err
  assert "--ref is required" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory, weights):
  """Samples of 24x32 (height x width) against a reference of the same aspect at 48x64, with
  the samples' statistics saved: (JSON, samples, reference, samples' statistics)."""
  root = tmp_path_factory.mktemp("wide")
  samples, ref = root / "wide.npz", root / "ref"
  np.savez(samples, arr_0=smooth_images(3, SET_SIZE, (24, 32)))
  ref.mkdir()
  for i, im in enumerate(smooth_images(4, SET_SIZE, (48, 64))):
    Image.fromarray(im).save(ref / f"{i:03d}.png")
  out, s_stats = root / "r.json", root / "s.npz"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(evaluator, "frechet_distance", stand_in_distance)
    run("--samples", samples, "--ref", ref, "--inception", weights, "--out", out,
        "--save-samples-stats", s_stats, *COMMON)
  return json.loads(out.read_text()), samples, ref, s_stats


def test_non_square_sets_of_one_aspect_ratio_give_every_metric(wide_run):
  """Any H x W goes through (the Inception stretches it to 299x299, as ADM's graph does), and
  a reference of another size but the same aspect ratio is compared as it is."""
  result, _, _, s_stats = wide_run
  metrics, settings = result["metrics"], result["settings"]
  assert set(metrics) == {"fid", "sfid", "inception_score", "inception_score_std", "precision",
                          "recall"}
  assert all(np.isfinite(v) for v in metrics.values()) and metrics["inception_score"] >= 1.0
  assert settings["samples"]["image_shape"] == [24, 32, 3]
  assert settings["ref"]["image_shape"] == [48, 64, 3]
  stats = read_statistics(s_stats)  # what the FID is computed from: finite, shape recorded
  assert np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()
  assert np.isfinite(stats.sigma_s).all() and stats.meta["image_shape"] == [24, 32, 3]


def test_other_aspect_ratios_are_refused_unless_allowed_and_mixed_shapes_are_named(
    tmp_path, weights, image_sets, first_run, wide_run, capsys):
  _, square_ref = image_sets
  _, _, _, square_stats = first_run
  _, wide, _, wide_stats = wide_run
  # refused before any work: the weights file named here does not even exist
  err = _fails(capsys, "--samples", wide, "--ref", square_ref, "--inception", tmp_path / "no.pth")
  assert err.startswith(f"error: --samples {wide} are 24x32 (height x width, aspect 1.33) but "
                        f"--ref {square_ref} is 32x32 (aspect 1): the Inception stretches")
  assert "--allow-aspect-mismatch" in err and len(err.splitlines()) == 1
  # statistics files carry the shape of their images, so they are checked alike
  err = _fails(capsys, "--samples", wide_stats, "--ref", square_stats, "--inception", weights)
  assert "24x32" in err and "32x32" in err and "--allow-aspect-mismatch" in err
  out = tmp_path / "allowed.json"
  run("--samples", wide_stats, "--ref", square_stats, "--inception", weights, "--out", out,
      "--allow-aspect-mismatch", *COMMON)
  result = json.loads(out.read_text())
  assert np.isfinite(result["metrics"]["fid"]) and result["settings"]["allow_aspect_mismatch"]
  assert result["settings"]["samples"]["image_shape"] == [24, 32, 3]
  assert result["settings"]["ref"]["image_shape"] == [32, 32, 3]
  # one set, two shapes (the same pixels turned): the odd file is named
  mixed = tmp_path / "mixed"
  mixed.mkdir()
  Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(mixed / "a.png")
  Image.fromarray(np.zeros((32, 24, 3), np.uint8)).save(mixed / "b.png")
  err = _fails(capsys, "--samples", mixed, "--ref", wide, "--inception", weights)
  assert "b.png: size [32, 24, 3] differs from the set's [24, 32, 3] (a.png)" in err


def test_statistics_files_check_their_shapes(tmp_path):
  rng = np.random.default_rng(0)
  stats = SetStatistics(rng.random(2048), np.eye(2048), meta={"note": "x"})
  path = tmp_path / "s.npz"
  write_statistics(path, stats)
  back = read_statistics(path)
  np.testing.assert_array_equal(back.mu, stats.mu)
  assert back.mu_s is None and back.pool3 is None and back.meta == {"note": "x"}
  np.savez(tmp_path / "bad.npz", mu=np.zeros(2047), sigma=np.eye(2047))
  with pytest.raises(StatsFileError, match=r"bad.npz: mu must be \[2048\]"):
    read_statistics(tmp_path / "bad.npz")
  with pytest.raises(StatsFileError, match="end in .npz"):
    write_statistics(tmp_path / "s.npy", stats)


SHARDED_SCRIPT = r"""
import numpy as np, jax, jax.numpy as jnp
from flax import nnx
import maskgil_jax
from maskgil_jax.evaluation.features import compute_features, data_mesh
from maskgil_jax.models.inception import InceptionOutputs

class PixelStats(nnx.Module):  # stands in for the Inception: per-image features, cheap to compile
  def __init__(self):
    self.scale = nnx.Param(jnp.float32(2.0))
  def __call__(self, images, *, preprocessing):
    x = images.astype(jnp.float32).reshape(images.shape[0], -1) * self.scale[...]
    return InceptionOutputs(pool3=x[:, :5], spatial=x.sum(1, keepdims=True), logits=x[:, :1])

images = np.random.default_rng(0).integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)
mesh = data_mesh()
assert mesh.devices.size == 4, jax.devices()
feats = compute_features(PixelStats(), [images[:5], images[5:]], 11, batch_size=6, mesh=mesh)
flat = images.reshape(11, -1).astype(np.float32) * 2
np.testing.assert_array_equal(feats.pool3, flat[:, :5])
np.testing.assert_array_equal(feats.spatial[:, 0], flat.sum(1))
print("sharded ok", feats.pool3.shape)
"""


def test_features_are_sharded_over_devices_in_input_order():
  """Four CPU devices, batch 6 rounded up to 8, 11 images: padding trimmed, order kept."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(pathlib.Path(evaluate.__file__).parents[1]))
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sharded ok (11, 5)" in proc.stdout


def test_per_image_minmax_rescales_the_samples_only(tmp_path, weights, image_sets, capsys):
  """--per-image-minmax gives the statistics of samples rescaled beforehand; a statistics-only
  SAMPLES file is refused (there are no images to rescale)."""
  from maskgil_jax.evaluation.minmax import per_image_minmax
  samples, ref = image_sets
  pre = tmp_path / "pre.npz"
  np.savez(pre, arr_0=per_image_minmax(np.load(samples)["arr_0"]))
  flagged, plain, out = tmp_path / "flagged.npz", tmp_path / "plain.npz", tmp_path / "r.json"
  run("--samples", samples, "--ref", ref, "--inception", weights, "--per-image-minmax",
      "--save-samples-stats", flagged, "--out", out, *COMMON)
  run("--samples", pre, "--inception", weights, "--save-samples-stats", plain, *COMMON)
  a, b = read_statistics(flagged), read_statistics(plain)
  np.testing.assert_array_equal(a.mu, b.mu)
  assert not np.allclose(a.mu, read_statistics(
      _stats_of(tmp_path, samples, weights)).mu)  # the flag changed what was measured
  settings = json.loads(out.read_text())["settings"]
  assert settings["samples_per_image_minmax"] is True
  assert settings["ref"]["statistics"] == "computed"
  err = _fails(capsys, "--samples", flagged, "--ref", ref, "--inception", weights,
               "--per-image-minmax", *COMMON)
  assert "holds statistics only; --per-image-minmax" in err


def _stats_of(tmp_path, samples, weights):
  path = tmp_path / "unscaled.npz"
  run("--samples", samples, "--inception", weights, "--save-samples-stats", path, *COMMON)
  return path
