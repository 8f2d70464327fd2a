"""The text demo, shortened: its text encoder folder, two aspect buckets, judged samples."""
import json

import numpy as np
import pytest

from maskgil_jax import checkpoints, demo
from maskgil_jax.data import demo_captions
from maskgil_jax.text.encoder import load_text_encoder

pytestmark = pytest.mark.slow


def test_short_text_demo_run(tmp_path, capsys):
  args = ["--task", "text", "--workdir", str(tmp_path), "--tokenizer-steps", "2",
          "--generator-steps", "2", "--per-class", "1"]
  assert demo.main(args) == 0
  assert checkpoints.latest_step(tmp_path / "generator") == 2
  # the text encoder is an ordinary Hugging Face T5 folder; held-out words are unknown to it
  text = load_text_encoder(tmp_path / "text_encoder", max_length=12, caption_dim=64)
  ids, _ = text.tokenizer(["a product shot of a sneaker", "a photo of a sneaker"], 12)
  assert (ids[0] == 2).sum() >= 1 and (ids[1] == 2).sum() == 0  # <unk> is id 2
  results = json.loads((tmp_path / "results.json").read_text())
  for name in ("maskgil_text_square_32x32", "maskgil_text_portrait_32x24"):
    assert 0.0 <= results[name]["classifier_accuracy"] <= 1.0
    assert np.isfinite(results[name]["frechet_distance"])
  assert not set(results["settings"]["held_out_templates"]) & set(
      demo_captions.TRAIN_TEMPLATES)
  assert (tmp_path / "samples.png").is_file()
  out = capsys.readouterr()
  assert "compiled the train step for the 32x24 bucket" in out.out + out.err
