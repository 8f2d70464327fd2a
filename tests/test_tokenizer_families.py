"""The tokenizer study's other families (taming/MaskGIT VQGAN, Chameleon VQGAN, Open-MAGVIT2):
parity with their reference code on tiny random weights, and their Lightning checkpoints in and
out (loss and EMA keys dropped by rule, everything else checked)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from maskgil_jax import configlib, convert, export, loading
from maskgil_jax.cli import UsageError
from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop import tokenizer_names, torch_io
from maskgil_jax.interop.torch_io import CheckpointError

# fixture stem -> (weights file shipped, tokenizer preset, convert kind)
FAMILIES = {
    "taming_vqgan_tiny": ("taming_vqgan_tiny.pt", "tiny_taming", "taming-vqgan"),
    "chameleon_vqgan_tiny": ("chameleon_vqgan_tiny.safetensors", "tiny_chameleon",
                             "chameleon-vqgan"),
    "open_magvit2_tiny": ("open_magvit2_tiny.safetensors", "tiny_magvit2", "open-magvit2"),
}


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def generator_config(preset: str):
  c = configlib.load_config("tiny")
  c.tokenizer = configlib.tokenizer_config(preset)
  c.model.codebook_size = c.tokenizer.codebook_size
  c.data.image_size = 32
  return configlib.finalize(c)


@pytest.mark.parametrize("stem", sorted(FAMILIES))
def test_matches_the_reference_code(fixtures_dir, stem):
  weights, preset, _ = FAMILIES[stem]
  model = loading.load_tokenizer(fixtures_dir / weights, configlib.tokenizer_config(preset))
  io = np.load(fixtures_dir / f"{stem}_io.npz")
  x = jnp.asarray(io["images"].astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(x, nhwc(io["x"]), atol=1e-6)
  np.testing.assert_allclose(model.latents(x), nhwc(io["z"]), atol=1e-4, rtol=0)
  np.testing.assert_array_equal(model.encode(x), io["indices"])
  quant, aux = model.quantized(x)
  np.testing.assert_allclose(quant, nhwc(io["quant"]), atol=1e-4, rtol=0)
  np.testing.assert_array_equal(aux["indices"], io["indices"])
  np.testing.assert_allclose(model.decode(jnp.asarray(nhwc(io["quant"]))), nhwc(io["recon"]),
                             atol=1e-4, rtol=0)
  np.testing.assert_allclose(model.decode_code(jnp.asarray(io["indices"])),
                             nhwc(io["recon_from_indices"]), atol=1e-4, rtol=0)
  assert model.downsample_factor == 4


def test_lightning_loss_keys_are_dropped_and_a_missing_weight_is_named(fixtures_dir, tmp_path):
  raw = torch_io.load_state_dict(fixtures_dir / "taming_vqgan_tiny.pt")  # {"state_dict": ...}
  assert {"loss.logvar", "loss.discriminator.main.0.weight"} <= set(raw)
  kept, dropped = tokenizer_names.split_non_network(raw)
  assert dropped == ["loss.discriminator.main.0.weight", "loss.logvar"]
  assert len(kept) == 183
  broken = dict(raw)
  del broken["decoder.up.2.attn.1.q.weight"]
  broken["decoder.extra.weight"] = np.zeros(3, np.float32)
  path = tmp_path / "broken.pt"
  torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in broken.items()}},
             path)
  with pytest.raises(CheckpointError) as e:
    loading.load_tokenizer(path, configlib.tokenizer_config("tiny_taming"))
  assert "missing decoder.up.2.attn.1.q.weight [64, 64, 1, 1]" in str(e.value)
  assert "unexpected decoder.extra.weight" in str(e.value)
  assert "loss." not in str(e.value)


def test_a_file_of_another_family_is_named(fixtures_dir):
  with pytest.raises(CheckpointError, match="holds a magvit2 tokenizer.*'taming'"):
    loading.load_tokenizer(fixtures_dir / "open_magvit2_tiny.safetensors",
                               configlib.tokenizer_config("tiny_taming"))
  with pytest.raises(ConfigError, match="config.tokenizer.kind"):
    state_dict, meta = torch_io.load_weights(fixtures_dir / "open_magvit2_tiny.safetensors")
    convert.import_weights("open-magvit2", state_dict, meta, generator_config("tiny_taming"),
                           "f")


def test_the_ema_copy_is_read_when_present_as_open_magvit2_does(fixtures_dir, tmp_path, capsys):
  sd = torch_io.load_state_dict(fixtures_dir / "open_magvit2_tiny.safetensors")
  lightning = {k: torch.from_numpy(v) for k, v in sd.items()}
  lightning.update({"model_ema." + k.replace(".", ""): torch.from_numpy(v * 0 + 0.5)
                    for k, v in sd.items()})
  lightning["model_ema.num_updates"] = torch.tensor(7)
  lightning["loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(2)
  path = tmp_path / "magvit2.ckpt"
  torch.save({"state_dict": lightning, "global_step": 3}, path)
  config = configlib.tokenizer_config("tiny_magvit2")
  capsys.readouterr()
  default = loading.load_tokenizer(path, config)
  assert "magvit2.ckpt: loaded the EMA weights" in capsys.readouterr().err
  raw = loading.load_tokenizer(path, config, ema=False)
  assert "loaded the raw weights (the file also holds an EMA copy" in capsys.readouterr().err
  np.testing.assert_array_equal(default.decoder.conv_out.bias[...], np.full(3, 0.5, np.float32))
  np.testing.assert_array_equal(raw.decoder.conv_out.bias[...], sd["decoder.conv_out.bias"])
  # convert follows the same default, and --no-ema takes the raw weights
  gen = generator_config("tiny_magvit2")
  for flag, expected in ((None, 0.5), (False, sd["decoder.conv_out.bias"])):
    out = tmp_path / f"conv_{flag}"
    convert.convert("open-magvit2", path, gen, out, ema=flag)
    got = loading.load_tokenizer(out, config)
    np.testing.assert_array_equal(got.decoder.conv_out.bias[...],
                                  np.broadcast_to(expected, (3,)).astype(np.float32))
  # a file without an EMA copy loads its weights, and says so; insisting on EMA is refused
  plain = fixtures_dir / "open_magvit2_tiny.safetensors"
  loading.load_tokenizer(plain, config)
  assert "loaded the raw weights (the file has no EMA copy)" in capsys.readouterr().err
  with pytest.raises(CheckpointError, match="has no EMA weights"):
    loading.load_tokenizer(plain, config, ema=True)


def test_convert_ema_flag_on_the_command_line(fixtures_dir, tmp_path):
  args = convert.parser().parse(["--kind", "open-magvit2", "--src", "x.ckpt", "--config",
                                 "configs/tiny.py", "--out", str(tmp_path / "o"), "--no-ema"])
  assert args.ema is False
  args = convert.parser().parse(["--kind", "open-magvit2", "--src", "x.ckpt", "--config",
                                 "configs/tiny.py", "--out", str(tmp_path / "o")])
  assert args.ema is None


@pytest.mark.parametrize("stem", sorted(FAMILIES))
def test_convert_and_export_back_to_the_reference_layout(fixtures_dir, tmp_path, stem):
  weights, preset, kind = FAMILIES[stem]
  config = generator_config(preset)
  convert.convert(kind, fixtures_dir / weights, config, tmp_path / "ckpt")
  layout = "open-magvit2" if kind == "open-magvit2" else "taming"
  out = tmp_path / "back.ckpt"  # the name the releases use (docs/tokenizer.md)
  info = export.export(tmp_path / "ckpt", layout, out)
  assert info["kind"] == "tokenizer"
  written = torch.load(out, weights_only=True)["state_dict"]  # what their loaders read
  back, dropped = tokenizer_names.split_non_network(written)
  reference, _ = tokenizer_names.split_non_network(
      torch_io.load_state_dict(fixtures_dir / weights))
  assert sorted(back) == sorted(reference) and info["tensors"] == len(reference)
  if weights.endswith(".pt"):  # a torch file keeps the reference's registration order
    assert list(back) == list(reference)
  for k, v in reference.items():
    np.testing.assert_array_equal(back[k].numpy(), v)
  if layout == "open-magvit2":
    # LitEma's copy after the weights, so its use_ema loaders find the same weights
    ema = [tokenizer_names.EMA_PREFIX + k.replace(".", "") for k in back]
    assert dropped == sorted(ema) and list(written)[len(back):] == ema
    for k in back:
      np.testing.assert_array_equal(written[tokenizer_names.EMA_PREFIX + k.replace(".", "")],
                                    back[k])
  else:
    assert dropped == []
  # and read back by our own loader
  again = loading.load_tokenizer(out, configlib.tokenizer_config(preset))
  first = next(iter(reference))
  np.testing.assert_array_equal(
      tokenizer_names.export_tokenizer_state_dict(again)[first], reference[first])
  with pytest.raises(ConfigError, match="no counterpart in the llamagen layout"):
    export.export(tmp_path / "ckpt", "llamagen", tmp_path / "x.pt")
  with pytest.raises(UsageError, match="a .ckpt is a Lightning checkpoint"):
    export.export(tmp_path / "ckpt", "native", tmp_path / "x.ckpt")


def test_chameleon_input_whitens_transparency_and_centre_crops():
  from PIL import Image
  from maskgil_jax.data.preprocess import chameleon_input
  pixels = np.zeros((40, 80, 4), np.uint8)
  pixels[:, :, 0] = 200
  pixels[:, 40:, 3] = 255  # right half opaque red, left half transparent
  out = chameleon_input(Image.fromarray(pixels, "RGBA"), size=20)
  assert out.shape == (20, 20, 3) and out.dtype == np.uint8
  # 80x40 -> 40x20, centre cut at x 10..30: the edge sits at column 10 (Lanczos rings near it)
  np.testing.assert_allclose(out[:, :6], 255, atol=3)  # transparent -> white
  np.testing.assert_allclose(out[:, 14:], np.broadcast_to([200, 0, 0], (20, 6, 3)), atol=3)
