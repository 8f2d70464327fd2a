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


def _random_model(layout: str):
  from flax import nnx
  from maskgil_jax.models.transformer import Transformer
  config = configlib.finalize(configlib.load_config(f"tiny:{layout}"))
  model = Transformer(config.model, rngs=nnx.Rngs(3))
  w = model.output.weight  # the zero-initialised head would make every logit tie
  w.set_value(0.5 * jax.random.normal(jax.random.key(1), w.shape, w.dtype))
  return model


@pytest.mark.parametrize("layout, w", [("llamagen", 3.0), ("maskgil", 0.0),
                                       ("llamagen_t2i", 3.0)])
def test_chunked_cache_views_give_the_tokens_and_logits_of_the_whole_cache(layout, w):
  """The token loop over cache views of 5 slots (4 chunks of the tiny grid's 1 + 16 slots;
  after a caption's 120 slots, chunks of 5) decodes what the loop over the whole cache does:
  the same greedy tokens, logits equal up to the float rounding of the shorter sums."""
  from maskgil_jax.models.conditions import Caption
  model = _random_model(layout)
  if layout.endswith("_t2i"):
    rng = np.random.default_rng(0)
    valid = np.ones((2, 120), bool)
    valid[0, :100] = False  # left-padded caption: its padding hidden from every step
    labels = Caption.create(rng.normal(size=(2, 120, 32)).astype(np.float32), valid)
  else:
    labels = jnp.array([1, 7])
  settings = DecodeSettings.create(cfg_scale=w, temperature=0.0)
  whole = ar.generate_jit(model, labels, jax.random.key(0), settings, return_logits=True,
                          cache_chunk=10 ** 6)
  assert len(set(np.asarray(whole.tokens).ravel().tolist())) > 2  # not a constant run
  chunked = ar.generate_jit(model, labels, jax.random.key(0), settings, return_logits=True,
                            cache_chunk=5)
  np.testing.assert_array_equal(chunked.tokens, whole.tokens)
  np.testing.assert_allclose(chunked.logits, whole.logits, atol=1e-4, rtol=1e-5)
  if layout != "llamagen":
    return
  # sampled, a partial decode: the same draws
  sampled = DecodeSettings.create(cfg_scale=w, temperature=1.0)
  a = ar.generate_jit(model, labels, jax.random.key(4), sampled, num_tokens=11, cache_chunk=4)
  b = ar.generate_jit(model, labels, jax.random.key(4), sampled, num_tokens=11,
                      cache_chunk=10 ** 6)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_token_loop_reads_only_the_filled_chunk_of_the_cache(model):
  """The compiled decoder holds one step per chunk, each over a cache view of its length."""
  settings = DecodeSettings.create(cfg_scale=1.0)
  hlo = jax.jit(ar.generate, static_argnames="cache_chunk").lower(
      model, jnp.array([1, 2]), jax.random.key(0), settings, cache_chunk=8).compile().as_text()
  # the tiny grid: 1 + 16 slots, 15 steps -> views of 8 and 16 slots (no step feeds slot 17)
  b, h, d = 4, model.n_kv_head, model.head_dim
  for slots in (8, 16):
    assert f"f32[{model.n_layer},{b},{slots},{h},{d}]" in hlo, slots
