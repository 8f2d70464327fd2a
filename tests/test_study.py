"""The hybrid study on a tiny model: every point measured once, written, resumed, plotted."""
import json

import numpy as np
import pytest
from flax import nnx

from maskgil_jax import cli, configlib, study
from maskgil_jax.decode import DecodeSettings
from maskgil_jax.evaluation import hybrid_study
from maskgil_jax.models import vq
from maskgil_jax.models.transformer import Transformer


class CountingJudge:
  """Scores images by their mean pixel (a stand-in for the demo judge) and counts its calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, images, labels, name):
    assert images.dtype == np.uint8 and images.shape[0] == labels.shape[0]
    self.calls.append(name)
    return {"demo_frechet": float(images.mean()), "demo_accuracy": float(images.std() / 255)}


@pytest.fixture(scope="module")
def tiny():
  config = configlib.finalize(configlib.load_config("tiny:maskgil"))
  model = Transformer(config.model, rngs=nnx.Rngs(0))
  tokenizer = vq.VQModel(config.tokenizer, rngs=nnx.Rngs(0))
  return config, model, tokenizer


def test_points_cover_both_ends_and_are_checked():
  points = hybrid_study.study_points([16, 0, 8], [2, 4], 16)
  assert points == [(0, 2), (0, 4), (8, 2), (8, 4), (16, None)]
  assert [hybrid_study.method_of(a, 16) for a, _ in points] == ["mar", "mar", "hybrid", "hybrid", "ar"]
  with pytest.raises(cli.UsageError, match=r"--ar-tokens \[17\]"):
    hybrid_study.study_points([17], [2], 16)


def test_study_writes_results_and_plot_and_resumes(tiny, tmp_path):
  config, model, tokenizer = tiny
  labels = np.repeat(np.arange(2, dtype=np.int32), 3)
  judge = CountingJudge()
  run = lambda points, results: hybrid_study.run_hybrid_study(
      model, tokenizer, config, tmp_path, points, labels, seed=0, batch_size=4, judge=judge,
      results=results, progress=False)
  record = {"ckpt": ["x", 1]}
  first = hybrid_study.study_points([0, 8, 16], [2], 16)
  results = run(first, study.open_results(tmp_path, record, overwrite=False))
  held = json.loads((tmp_path / hybrid_study.RESULTS).read_text())
  assert sorted(held["points"]) == ["ar0_mar2", "ar16", "ar8_mar2"]
  passes = {n: p["forward_passes"] for n, p in held["points"].items()}
  assert passes == {"ar0_mar2": 2, "ar8_mar2": 10, "ar16": 16}
  assert all(p["seconds_per_image"] > 0 and p["samples"] == 6 for p in held["points"].values())
  assert held["best"] == min(held["points"], key=lambda n: held["points"][n]["demo_frechet"])
  assert (tmp_path / hybrid_study.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert judge.calls == ["ar0_mar2", "ar8_mar2", "ar16"]

  # a rerun with one more point measures only that one; another study's settings are refused
  reopened = study.open_results(tmp_path, record, overwrite=False)
  assert reopened == results
  run(hybrid_study.study_points([0, 4, 8, 16], [2], 16), reopened)
  assert judge.calls[3:] == ["ar4_mar2"]
  with pytest.raises(cli.OutputExistsError, match=r"other settings \(\['ckpt'\]\)"):
    study.open_results(tmp_path, {"ckpt": ["y", 1]}, overwrite=False)


def test_hybrid_points_write_their_ar_tokens_with_the_ar_settings(tiny):
  config, model, _ = tiny
  base = DecodeSettings.from_config(config.decode).replace(hybrid_schedule="tail")
  ar_only = hybrid_study.point_settings(base, 16, None, 16)
  assert float(ar_only.cfg_scale) == config.decode.ar_cfg_scale and ar_only.ar_tokens == 16
  hybrid = hybrid_study.point_settings(base, 8, 4, 16)
  # the tail schedule skips the steps the 8 AR tokens cover
  assert hybrid_study.forward_passes(hybrid, 8, 16) < 8 + 4
  tokens, per_image = hybrid_study.decode_tokens(model, np.arange(3, dtype=np.int32), 0, hybrid,
                                          "hybrid", batch=2)
  assert tokens.shape == (3, 16) and per_image > 0
  again, _ = hybrid_study.decode_tokens(model, np.arange(3, dtype=np.int32), 0, hybrid, "hybrid",
                                 batch=2)
  np.testing.assert_array_equal(tokens, again)  # the same seed draws the same tokens
