"""`evaluation.tokenizer_compare`: two tiny tokenizers on the shipped demo images, every
number and file the `vq compare` command reports."""
import json

import numpy as np
from PIL import Image

from maskgil_jax.evaluation import tokenizer_compare as tc


def test_compare_two_tiny_tokenizers_on_demo_images(fixtures_dir, tmp_path):
  tokenizers = [tc.Named("taming", str(fixtures_dir / "taming_vqgan_tiny.pt"), "tiny_taming"),
                tc.Named("magvit2", str(fixtures_dir / "open_magvit2_tiny.safetensors"),
                         "tiny_magvit2")]
  summary = tc.compare(tokenizers, tc.DEMO, tmp_path / "out", limit=12, batch_size=4,
                       figure_count=3)
  stored = json.loads((tmp_path / "out" / "compare.json").read_text())
  assert stored == json.loads(json.dumps(summary))
  assert stored["num_images"] == 12 and stored["image_size"] == [32, 32]
  for name, size in (("taming", 64), ("magvit2", 1024)):
    r = stored["tokenizers"][name]
    assert r["codebook_size"] == size and r["tokens_per_image"] == 64 and r["grid"] == [8, 8]
    assert 0 < r["codes_used"] <= min(size, 12 * 64)
    assert r["codebook_usage"] == r["codes_used"] / size
    assert 1.0 <= r["perplexity"] <= r["codes_used"]
    assert np.isfinite(r["psnr"]) and -1.0 <= r["ssim"] <= 1.0
    assert r["encode_images_per_s"] > 0 and r["decode_images_per_s"] > 0
    assert r["lpips"] is None and r["rfid"] is None  # no VGG / Inception files given
  table = (tmp_path / "out" / "compare.md").read_text()
  assert "| taming |" in table and "| magvit2 |" in table
  fig = Image.open(tmp_path / "out" / "compare.png")
  assert fig.size == (3 * (64 + 2), 14 + 3 * (64 + 2))  # original + 2 columns, 3 rows, x2


def test_metrics_on_known_images():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_allclose(tc.ssim(a, a), 1.0, atol=1e-6)
  noise = rng.integers(-1, 2, a.shape)
  small, big = (np.clip(a.astype(int) + k * noise, 0, 255).astype(np.uint8) for k in (10, 60))
  assert np.all(tc.ssim(a, big) < tc.ssim(a, small)) and np.all(tc.ssim(a, small) < 1)
  # flat images: only the luminance term, (2 x y + C1) / (x^2 + y^2 + C1)
  x, y, c1 = 100.0, 150.0, (0.01 * 255) ** 2
  flat = lambda v: np.full((1, 16, 16, 3), v, np.uint8)
  np.testing.assert_allclose(tc.ssim(flat(x), flat(y)), (2 * x * y + c1) / (x * x + y * y + c1),
                             rtol=1e-5)
  stats = tc.code_statistics(np.array([[0, 0, 1, 1], [2, 2, 3, 3]]), 8)
  assert stats["codes_used"] == 4 and stats["codebook_usage"] == 0.5
  np.testing.assert_allclose(stats["perplexity"], 4.0)  # four codes used equally often


def test_vq_compare_command(fixtures_dir, tmp_path, capsys):
  from maskgil_jax import vq
  spec = (f"taming={fixtures_dir / 'taming_vqgan_tiny.pt'}:tiny_taming,"
          f"magvit2={fixtures_dir / 'open_magvit2_tiny.safetensors'}:tiny_magvit2")
  argv = ["compare", "--tokenizers", spec, "--images", "demo", "--limit", "4", "--batch-size",
          "4", "--figure-count", "2", "--out", str(tmp_path / "cmp")]
  assert vq.main(argv) == 0
  out = capsys.readouterr().out
  assert "| taming |" in out and out.strip().splitlines()[-1].startswith("compared 2 tokenizers")
  assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == [
      "compare.json", "compare.md", "compare.png"]
  assert vq.main(argv) == 2  # the folder is there now: --overwrite is needed
  assert "--overwrite" in capsys.readouterr().err


def test_lpips_and_rfid_when_their_weights_are_given(fixtures_dir, tmp_path):
  """LPIPS (VGG16 + heads files) and rFID (FID Inception file) are measured when their weights
  are given: finite and positive for a random tokenizer's reconstructions, while the same LPIPS
  of the images against themselves is 0."""
  from test_inception import recipe_weights
  from test_vq_losses import lpips_files
  from maskgil_jax.interop import torch_io
  from maskgil_jax.interop.vq_names import load_lpips
  lpips_paths, _, _ = lpips_files(tmp_path, widths=(64, 128, 256, 512, 512))  # VGG16's own
  inception = tmp_path / "inception.safetensors"
  torch_io.save_state_dict(recipe_weights(fixtures_dir / "fid_inception_keys.txt"), inception)
  tokenizers = [tc.Named("taming", str(fixtures_dir / "taming_vqgan_tiny.pt"), "tiny_taming")]
  summary = tc.compare(tokenizers, tc.DEMO, tmp_path / "out", limit=8, batch_size=4,
                       figure_count=2, lpips_weights=",".join(lpips_paths),
                       inception=str(inception))
  r = summary["tokenizers"]["taming"]
  assert np.isfinite(r["lpips"]) and r["lpips"] > 0
  assert np.isfinite(r["rfid"]) and r["rfid"] >= 0
  pixels = tc.load_images(tc.DEMO, limit=8)
  lpips = load_lpips(",".join(lpips_paths))
  np.testing.assert_allclose(tc._lpips(lpips, pixels, pixels, 4), 0.0, atol=1e-6)
