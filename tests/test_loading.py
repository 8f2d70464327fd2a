"""`loading.py`, where every model is loaded: a PyTorch GPT file with the KV-cache buffers that
LlamaGen registers while sampling is read by the sample path as `convert` reads it, configs
stored before a field existed load, and the abstract models are the loaded models' shapes."""
import jax
import numpy as np
import pytest

from maskgil_jax import configlib, convert, loading
from maskgil_jax.interop import torch_io
from maskgil_jax.interop.names import named_arrays


@pytest.fixture(scope="module")
def llamagen_config():
  return configlib.finalize(configlib.load_config("tiny:llamagen"))


def test_a_gpt_file_saved_after_sampling_loads_like_convert_reads_it(fixtures_dir, tmp_path,
                                                                   llamagen_config):
  state_dict = torch_io.load_state_dict(fixtures_dir / "llamagen_gpt_tiny.pt")
  cache = np.zeros((2, 4, 8, 4), np.float32)
  with_cache = {**state_dict, "layers.0.attention.kv_cache.k_cache": cache,
                "layers.0.attention.kv_cache.v_cache": cache, "freqs_cis": np.zeros((3, 2))}
  path = tmp_path / "sampled.safetensors"
  torch_io.save_state_dict(with_cache, path)
  m = llamagen_config.model
  loaded = loading.load_generator(path, m)
  plain = loading.load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", m)
  converted, _ = convert.import_weights("llamagen-c2i", with_cache, {}, llamagen_config,
                                        str(path))
  for name, value in named_arrays(plain).items():
    np.testing.assert_array_equal(named_arrays(loaded)[name], value)
    np.testing.assert_array_equal(named_arrays(converted)[name], value)


def test_an_unknown_key_is_still_refused(fixtures_dir, tmp_path, llamagen_config):
  state_dict = torch_io.load_state_dict(fixtures_dir / "llamagen_gpt_tiny.pt")
  path = tmp_path / "extra.safetensors"
  torch_io.save_state_dict({**state_dict, "layers.0.attention.extra": np.zeros(2)}, path)
  with pytest.raises(torch_io.CheckpointError, match="layers.0.attention.extra"):
    loading.load_generator(path, llamagen_config.model)


def test_abstract_models_have_the_loaded_shapes(fixtures_dir, llamagen_config):
  loaded = loading.load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", llamagen_config.model)
  abstract = loading.abstract_generator(llamagen_config.model)
  shapes = lambda tree: {k: np.shape(v) for k, v in named_arrays(tree).items()}
  assert shapes(abstract) == shapes(loaded)
  tok = loading.abstract_tokenizer(llamagen_config.tokenizer)
  assert all(isinstance(v, jax.ShapeDtypeStruct) for v in named_arrays(tok).values())


def test_a_config_stored_before_newer_fields_is_filled_from_the_presets():
  config = configlib.load_config("tiny:llamagen")
  for section, field in (("model", "attention_kernel"), ("model", "condition"),
                         ("decode", "hybrid_schedule"), ("decode", "ar_cfg_scale")):
    del config[section][field]
  filled = configlib.finalize(config)
  assert (filled.model.attention_kernel, filled.model.condition) == ("auto", "class")
  assert (filled.decode.hybrid_schedule, filled.decode.ar_cfg_scale) == ("spread", 1.0)
  assert "attention_kernel" not in config.model  # the caller's config is left as it was


def test_a_pytorch_file_needs_a_config(fixtures_dir):
  with pytest.raises(configlib.ConfigError, match="--config is required with a PyTorch"):
    loading.resolve_config(None, fixtures_dir / "llamagen_gpt_tiny.pt")
