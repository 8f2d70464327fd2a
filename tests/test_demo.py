"""The README's main job, shortened: both stages through the trainer, the grid and the figures."""
import json

import numpy as np
import pytest
from PIL import Image

from maskgil_jax import checkpoints, demo

pytestmark = pytest.mark.slow


def test_short_demo_run_writes_grid_and_figures_and_resumes(tmp_path, capsys):
  args = ["--workdir", str(tmp_path), "--tokenizer-steps", "2", "--generator-steps", "2",
          "--per-class", "2"]
  assert demo.main(args) == 0
  assert checkpoints.latest_step(tmp_path / "tokenizer") == 2
  assert checkpoints.latest_step(tmp_path / "generator") == 2
  grid = np.asarray(Image.open(tmp_path / "samples.png"))
  assert grid.shape == (10 * 32, 2 * 32, 3)  # one row per class, --per-class columns
  results = json.loads((tmp_path / "results.json").read_text())
  for name in ("maskgil_mar_8_steps", "ar", "best_hybrid", "random_codes",
               "tokenizer_reconstructions"):
    assert 0.0 <= results[name]["classifier_accuracy"] <= 1.0
    assert np.isfinite(results[name]["frechet_distance"])
  # the joint model decodes all three ways; the best hybrid lies strictly between the ends
  assert results["settings"]["objective"]["name"] == "joint"
  assert results["ar"]["ar_tokens"] == 64 and results["maskgil_mar_8_steps"]["ar_tokens"] == 0
  assert 0 < results["best_hybrid"]["ar_tokens"] < 64
  assert set(results["hybrid_study"]) == {"ar0_mar8", "ar4_mar8", "ar8_mar8", "ar64"}
  assert (tmp_path / "study" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
  assert results["settings"]["generator_steps"] == 2
  out = capsys.readouterr().out
  assert "maskgil_mar_8_steps" in out and "best_hybrid" in out and out.strip().splitlines()[-1].startswith("demo:")

  # a rerun finds both stages finished and only samples again
  assert demo.main(args) == 0
  assert checkpoints.latest_step(tmp_path / "generator") == 2


def test_unwritable_workdir_and_bad_numbers_are_refused(tmp_path, capsys):
  (tmp_path / "blocker").write_text("a file, not a folder")
  assert demo.main(["--workdir", str(tmp_path / "blocker" / "demo")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --workdir") and len(err.splitlines()) == 1
  assert demo.main(["--workdir", str(tmp_path), "--per-class", "0"]) == 2
  assert "--per-class must be >= 1" in capsys.readouterr().err
  assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]  # nothing written
