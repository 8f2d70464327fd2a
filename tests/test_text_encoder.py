"""The T5 text encoder reproduces Hugging Face's T5EncoderModel and T5 tokenizer (fixture made
with transformers and sentencepiece), from every weight layout a T5 folder may use."""
import json
import logging
import shutil

import numpy as np
import pytest

from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop import torch_io
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.text.encoder import encode_prompts, left_pad, load_text_encoder


@pytest.fixture(scope="module")
def io(fixtures_dir):
  return np.load(fixtures_dir / "t5_encoder_tiny_io.npz")


@pytest.fixture(scope="module")
def encoder(fixtures_dir):
  return load_text_encoder(fixtures_dir / "t5_encoder_tiny")


def test_tokens_masks_and_hidden_states_match(encoder, io):
  prompts = list(io["prompts"])
  ids, mask = encoder.tokenizer(prompts, 120)
  np.testing.assert_array_equal(ids, io["input_ids"])
  np.testing.assert_array_equal(mask, io["attention_mask"])
  features, valid = encode_prompts(encoder, prompts)
  np.testing.assert_allclose(features, io["last_hidden_state"], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(valid, io["attention_mask"].astype(bool))


def test_left_padding_is_llamagens(fixtures_dir):
  g = np.load(fixtures_dir / "llamagen_gpt_t2i_tiny_io.npz")
  features, mask = left_pad(g["raw_caption_embs"], g["raw_emb_masks"].astype(bool))
  np.testing.assert_array_equal(features, g["caption_embs"])
  np.testing.assert_array_equal(mask, g["emb_masks"].astype(bool))


def test_long_prompt_is_cut_with_a_warning(encoder, caplog):
  with caplog.at_level(logging.WARNING):
    ids, mask = encoder.tokenizer(["two dresses, one blue and one green"], 5)
  assert ids[0, -1] == 1 and mask.sum() == 5
  assert "tokens with </s>; only the first 5" in caplog.text


def _copy_config(src, dst):
  dst.mkdir()
  for name in ("config.json", "spiece.model"):
    shutil.copy(src / name, dst / name)


def test_sharded_and_bin_folders_give_the_same_encoder(fixtures_dir, tmp_path, io, encoder):
  src = fixtures_dir / "t5_encoder_tiny"
  sd = torch_io.read_safetensors(src / "model.safetensors")[0]
  keys = sorted(sd)
  sharded = tmp_path / "sharded"
  _copy_config(src, sharded)
  weight_map = {}
  for k, part in enumerate((keys[:10], keys[10:])):
    name = f"model-0000{k + 1}-of-00002.safetensors"
    torch_io.save_state_dict({key: sd[key] for key in part}, sharded / name)
    weight_map.update({key: name for key in part})
  (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  binary = tmp_path / "bin"
  _copy_config(src, binary)
  # a full T5 file: decoder keys beside the encoder's are ignored
  torch_io.save_state_dict({**sd, "decoder.final_layer_norm.weight": sd["shared.weight"][0]},
                           binary / "pytorch_model.bin", wrap=None)
  prompts = list(io["prompts"][:2])
  want = encode_prompts(encoder, prompts)[0]
  for folder in (sharded, binary):
    got = encode_prompts(load_text_encoder(folder), prompts)[0]
    np.testing.assert_array_equal(got, want)


def test_bad_folders_name_the_missing_file(fixtures_dir, tmp_path):
  src = fixtures_dir / "t5_encoder_tiny"
  no_spiece = tmp_path / "no_spiece"
  no_spiece.mkdir()
  shutil.copy(src / "config.json", no_spiece)
  with pytest.raises(CheckpointError, match="no spiece.model"):
    load_text_encoder(no_spiece)
  no_weights = tmp_path / "no_weights"
  _copy_config(src, no_weights)
  with pytest.raises(CheckpointError, match="no weights: expected one of model.safetensors"):
    load_text_encoder(no_weights)
  with pytest.raises(ConfigError, match="caption_dim: 2048, but .* gives 32-wide"):
    load_text_encoder(src, caption_dim=2048)
