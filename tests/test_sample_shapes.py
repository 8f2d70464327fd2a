"""The sample command at any image shape, from prompts: prompts stored, grid with prompts, and
the set read back by `evaluate` at its shape."""
import numpy as np
from PIL import Image

from maskgil_jax import sample
from maskgil_jax.evaluation import evaluator

from test_sample_cmd import tokenizer_file  # noqa: F401 (a fixture)


def test_prompts_at_a_non_square_shape(fixtures_dir, tokenizer_file, tmp_path, capsys):
  common = ["--config", "tiny:llamagen_t2i", "--ckpt",
            fixtures_dir / "llamagen_gpt_t2i_tiny.safetensors", "--decode", "ar",
            "--text-encoder", fixtures_dir / "t5_encoder_tiny", "--tokenizer", tokenizer_file,
            "--prompt", "a red bag", "--prompt", "two shoes on a table"]
  out = tmp_path / "out"
  argv = common + ["--height", "6", "--width", "10", "--out", out]
  assert sample.main([str(a) for a in argv]) == 0
  printed = capsys.readouterr()
  assert "6x10 px (height x width) is far from the sizes this model was trained on (8x8)" in (
      printed.out + printed.err)
  with np.load(out / "samples.npz") as f:
    assert f["arr_0"].shape == (2, 6, 10, 3) and f["tokens"].shape == (2, 3, 5)
    assert f["prompts"].tolist() == ["a red bag", "two shoes on a table"]
    images = f["arr_0"]
  # evaluate takes the file as images (not statistics) of that shape, next to the extra members
  read = evaluator.open_input(str(out / "samples.npz"), "samples")
  assert read.stats is None and read.images.image_shape == (6, 10, 3)
  np.testing.assert_array_equal(np.concatenate(list(read.images.batches(1))), images)
  grid = np.asarray(Image.open(out / "grid.png"))
  assert grid.shape[0] > 96 and grid.shape[1] >= 2 * 96  # enlarged pictures, text under them
  # a size off the tokenizer's downsampling is refused before anything is written
  argv = common + ["--height", "7", "--out", tmp_path / "bad"]
  assert sample.main([str(a) for a in argv]) == 2
  assert "--height 7: must be a positive multiple of the tokenizer's downsampling 2" in (
      capsys.readouterr().err)
  assert not (tmp_path / "bad").exists()
