"""AR decoding reproduces LlamaGen's `generate` on the llamagen_gpt_tiny fixture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import configlib
from maskgil_jax.decode import ar
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.loading import load_generator


@pytest.fixture(scope="module")
def model(fixtures_dir):
  c = configlib.finalize(configlib.load_config("tiny:llamagen"))
  return load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", c.model)


@pytest.fixture(scope="module")
def io(fixtures_dir):
  return np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")


# LlamaGen's cfg_scale s is 1 + w: its 1.0 (no guidance) is w = 0, its 4.0 is w = 3.
@pytest.mark.parametrize("w, tokens_key", [(0.0, "gen_greedy_cfg1"), (3.0, "gen_greedy_cfg4")])
def test_greedy_decode_reproduces_llamagen_generate(model, io, w, tokens_key):
  labels = jnp.asarray(io["cond_idx"], jnp.int32)
  # the fixture's call: temperature 1 and top_k 1 (only the argmax survives)
  fixture_call = DecodeSettings.create(cfg_scale=w, temperature=1.0, top_k=1)
  result = ar.generate_jit(model, labels, jax.random.PRNGKey(0), fixture_call, return_logits=True)
  np.testing.assert_array_equal(result.tokens, io[tokens_key])

  # the cached logits are the full causal forward of the generated sequence (LlamaGen's own)
  if w == 0.0:
    full = io["logits_gen_cfg1_cond"]
  else:
    cond, uncond = io["logits_gen_cfg4_cond"], io["logits_gen_cfg4_uncond"]
    full = uncond + 4.0 * (cond - uncond)
  np.testing.assert_allclose(result.logits, full, atol=2e-4, rtol=0)

  # greedy by temperature 0, or by a tiny top-p, is the same program and the same tokens
  size = ar.generate_jit._cache_size()
  for settings in (DecodeSettings.create(cfg_scale=w, temperature=0.0),
                   DecodeSettings.create(cfg_scale=w, temperature=1.0, top_p=1e-6)):
    again = ar.generate_jit(model, labels, jax.random.PRNGKey(7), settings, return_logits=True)
    np.testing.assert_array_equal(again.tokens, io[tokens_key])
  assert ar.generate_jit._cache_size() == size


def test_sampled_decode_depends_on_the_key_only(model):
  labels = jnp.array([1, 2])
  settings = DecodeSettings.create(cfg_scale=3.0, temperature=1.0)
  # the same shapes and structure as the w = 3 fixture call above: no new compilation
  run = lambda seed: ar.generate_jit(model, labels, jax.random.PRNGKey(seed), settings,
                                     return_logits=True).tokens
  a, b = run(0), run(1)
  assert a.shape == (2, 16) and not np.array_equal(a, b)
  np.testing.assert_array_equal(a, run(0))
  with pytest.raises(ValueError, match="1..16 tokens"):
    ar.generate(model, labels, jax.random.PRNGKey(0), settings, num_tokens=17)


def test_token_loop_reads_weights_in_place(model):
  """No layer weight is sliced out of the stack inside the decoder's compiled program per
  token: the blocks are sliced once before the loop (XLA:CPU copies a sliced weight)."""
  settings = DecodeSettings.create(cfg_scale=1.0)
  hlo = jax.jit(ar.generate).lower(model, jnp.array([1, 2]), jax.random.key(0),
                                   settings).compile().as_text()
  wqkv = model.layers.attention.wqkv.weight[...]  # [layers, dim, qkv]
  per_layer = f"f32[1,{wqkv.shape[1]},{wqkv.shape[2]}]"
  sliced = [line for line in hlo.splitlines()
            if "dynamic-slice(" in line and line.split("=")[1].strip().startswith(per_layer)]
  assert not sliced, sliced[:2]
  assert "while" in hlo  # the token loop is there
