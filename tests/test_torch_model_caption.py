"""The PyTorch twin's caption prefix matches the JAX caption model on a native export."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from maskgil_jax import export
from maskgil_jax.decode import ar, mar, sampling
from maskgil_jax.interop import torch_model as tm
from maskgil_jax.models.conditions import Caption
from test_export_support import random_transformer, save_run, tiny_config

ATOL = 1e-4


@pytest.fixture(scope="module")
def native(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("native_t2i")
  config = tiny_config("tiny:maskgil_t2i", {"model.cls_token_num": 6, "text.max_length": 6})
  gpt = random_transformer(config, seed=3)
  export.export(save_run(tmp / "gpt", gpt, config), "native", tmp / "gpt.safetensors")
  rng = np.random.default_rng(0)
  mask = np.zeros((3, 6), bool)
  mask[0, 2:], mask[1, 5:], mask[2, :] = True, True, True  # left padded, 4 / 1 / 6 tokens
  features = rng.normal(size=(3, 6, 32)).astype(np.float32) * mask[..., None]
  return dict(config=config, gpt=gpt, twin=tm.load_transformer(tmp / "gpt.safetensors"),
              features=features, mask=mask)


def conds(native, null=(False, True, False)):
  f, m = native["features"], native["mask"]
  return (Caption.create(f, m, np.array(null)),
          tm.Caption(torch.tensor(f), torch.tensor(m), torch.tensor(null)))


def test_caption_logits_match_in_both_modes(native):
  jax_cap, twin_cap = conds(native)
  assert native["twin"].config.condition == "caption"
  tokens = np.random.default_rng(1).integers(0, 513, (3, 16))
  for mode in ("bidirectional", "causal"):
    expected = jax.jit(lambda m, t, c: m(t, c, mode=mode))(native["gpt"], jnp.asarray(tokens),
                                                           jax_cap)
    with torch.no_grad():
      actual = native["twin"](torch.tensor(tokens), twin_cap, mode)
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)
    assert np.abs(np.asarray(expected)).max() > 0.1


def greedy(**kw):
  return sampling.DecodeSettings.create(temperature=0.0, choice_temperature=0.0, **kw)


def test_greedy_decoders_match_jax_with_guidance(native):
  jax_cap, twin_cap = conds(native, null=(False, False, False))
  tokens = tm.greedy_mar(native["twin"], twin_cap, steps=4, cfg_scale=2.0)
  expected = mar.generate_jit(native["gpt"], jax_cap, jax.random.key(0),
                              greedy(cfg_scale=2.0, steps=4)).tokens
  np.testing.assert_array_equal(tokens, expected)
  tokens = tm.greedy_ar(native["twin"], twin_cap, cfg_scale=1.5)
  expected = ar.generate_jit(native["gpt"], jax_cap, jax.random.key(0),
                             greedy(cfg_scale=1.5)).tokens
  np.testing.assert_array_equal(tokens, expected)
