"""`python -m maskgil_jax.vq reconstruct`: outputs on the fixture, and clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskgil_jax import loading
from maskgil_jax.configlib import ConfigError, tokenizer_config
from maskgil_jax.data.preprocess import to_model_range
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models import vq
from maskgil_jax.evaluation.reconstruction import to_pixels
from maskgil_jax.vq import reconstruct_command
from conftest import REPO

TINY = tokenizer_config("tiny")


@pytest.fixture(scope="module")
def pixels(fixtures_dir):
  """The fixture's images as uint8 NHWC."""
  images = np.load(fixtures_dir / "llamagen_vq_tiny_io.npz")["images"]
  return to_pixels(images.transpose(0, 2, 3, 1))


def test_npz_in_codes_and_pixels_out(fixtures_dir, pixels, tmp_path):
  np.savez(tmp_path / "in.npz", images=pixels, labels=np.arange(2))
  s = reconstruct_command(str(fixtures_dir / "llamagen_vq_tiny.pt"), str(tmp_path / "in.npz"),
                          str(tmp_path / "out.npz"), TINY, batch_size=2, progress=False)
  out = np.load(tmp_path / "out.npz")
  model = loading.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.pt", TINY)
  codes, recon = vq.reconstruct(model, to_model_range(pixels))
  np.testing.assert_array_equal(out["indices"], codes)
  np.testing.assert_array_equal(out["reconstructions"], to_pixels(np.asarray(recon)))
  assert out["indices"].dtype == np.int32 and out["reconstructions"].dtype == np.uint8
  assert out["reconstructions"].shape == (2, 32, 32, 3)
  mse = np.mean((pixels.astype(float) - out["reconstructions"]) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(out["psnr"], 10 * np.log10(255 ** 2 / mse), rtol=1e-5)
  settings = json.loads(str(out["settings"]))
  assert settings["codes_used"] == 16 and settings["codebook_size"] == 64
  assert settings["tokenizer"]["ch"] == 64 and s["psnr_mean"] == pytest.approx(out["psnr"].mean())


def test_folder_in_with_resizing(fixtures_dir, pixels, tmp_path):
  (tmp_path / "imgs" / "sub").mkdir(parents=True)
  Image.fromarray(pixels[0]).resize((64, 48)).save(tmp_path / "imgs" / "b.png")
  Image.fromarray(pixels[1]).save(tmp_path / "imgs" / "sub" / "a.png")
  (tmp_path / "imgs" / "notes.txt").write_text("not an image")
  with pytest.raises(ConfigError, match="differ in size .*--image-size"):
    reconstruct_command(str(fixtures_dir / "llamagen_vq_tiny.pt"), str(tmp_path / "imgs"),
                        str(tmp_path / "out.npz"), TINY, progress=False)
  reconstruct_command(str(fixtures_dir / "llamagen_vq_tiny.pt"), str(tmp_path / "imgs"),
                      str(tmp_path / "out.npz"), TINY, image_size=32, batch_size=4, progress=False)
  out = np.load(tmp_path / "out.npz")
  assert list(out["files"]) == ["b.png", "sub/a.png"]
  assert out["indices"].shape == (2, 16, 16)


def test_bad_inputs_are_named_and_nothing_is_written(fixtures_dir, pixels, tmp_path):
  ckpt = str(fixtures_dir / "llamagen_vq_tiny.pt")
  out = tmp_path / "out.npz"
  np.savez(tmp_path / "floats.npz", images=pixels.astype(np.float32))
  np.savez(tmp_path / "odd.npz", images=pixels[:, :31, :31])
  np.savez(tmp_path / "good.npz", images=pixels)
  (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:200])
  cases = [
      (ckpt, "floats.npz", ConfigError, "float32 .* expected uint8 NHWC"),
      (ckpt, "odd.npz", ConfigError, "31x31 is not a multiple of the tokenizer's downsampling"),
      (ckpt, "cut.npz", ConfigError, "not a readable .npz"),
      (ckpt, "absent", FileNotFoundError, "does not exist"),
      (str(fixtures_dir / "llamagen_gpt_tiny.pt"), "good.npz", CheckpointError,
       "not a VQ tokenizer"),
  ]
  for ck, images, error, message in cases:
    with pytest.raises(error, match=message):
      reconstruct_command(ck, str(tmp_path / images), str(out), TINY, progress=False)
  assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_command_line_error_is_one_line(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "maskgil_jax.vq", "reconstruct", "--ckpt", str(tmp_path / "x.pt"),
       "--images", str(tmp_path), "--out", str(tmp_path / "o.npz"), "--tokenizer", "tiny"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith("error: --images: no image files")


def test_compare_names_an_unknown_preset_and_keeps_colons_of_paths(tmp_path):
  """`PATH:NAME` with a NAME that is no preset is refused as such (it used to be read as part
  of the path, then reported missing); a path's own colons are kept."""
  from maskgil_jax import cli, configlib
  from maskgil_jax import vq as vq_tool
  with pytest.raises(cli.UsageError) as e:
    vq_tool.parse_tokenizers("a=runs/vq:vq17")
  assert "unknown preset 'vq17'" in str(e.value)
  assert str(sorted(configlib.TOKENIZER_PRESETS)) in str(e.value)
  odd = tmp_path / "weights:v2"  # an existing file whose name has a colon
  odd.write_bytes(b"")
  (a, b, c) = vq_tool.parse_tokenizers(f"a={odd},b=gs://bucket/vq.pt,c=runs/vq:vq16")
  assert (a.path, a.tokenizer) == (str(odd), "vq16")
  assert (b.path, b.tokenizer) == ("gs://bucket/vq.pt", "vq16")
  assert (c.path, c.tokenizer) == ("runs/vq", "vq16")
