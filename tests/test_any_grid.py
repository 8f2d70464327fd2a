"""Token grids of any h x w: RoPE, MAR and AR decoding, the objectives and the tokenizer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.decode import ar, images, mar
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.models import vq
from maskgil_jax.models.layouts import Layout
from maskgil_jax.models.transformer import Transformer, at_grid
from maskgil_jax.training import objectives

GRID = (3, 5)  # rows, columns


def tiny_model(seed=0):
  c = configlib.finalize(configlib.load_config("tiny:maskgil"))
  model = Transformer(c.model, rngs=nnx.Rngs(seed))
  # the output head starts at zero (every code equally likely); give it weights to tell apart
  kernel = model.output.weight
  kernel.set_value(jax.random.normal(jax.random.key(seed + 1), kernel.shape) * 0.5)
  return c, model


def test_rope_of_a_non_square_grid_is_the_direct_formula():
  c = configlib.finalize(configlib.load_config("tiny:maskgil"))
  layout = Layout.from_config(c.model).at_grid(GRID)
  cos, sin = layout.rope_tables()
  hd, base, p = layout.head_dim, layout.rope_base, layout.cls_token_num
  assert cos.shape == (p + 15, hd // 2)
  quarter = hd // 4
  freq = base ** (-4.0 * np.arange(quarter) / hd)  # theta_k = base^(-4k / head_dim) per axis
  for r in range(GRID[0]):
    for col in range(GRID[1]):
      slot = p + r * GRID[1] + col
      want = np.concatenate([r * freq, col * freq])
      np.testing.assert_allclose(cos[slot], np.cos(want), atol=1e-6)
      np.testing.assert_allclose(sin[slot], np.sin(want), atol=1e-6)
  np.testing.assert_allclose(cos[0], np.cos(-np.concatenate([freq, freq])), atol=1e-6)
  # a square grid keeps the table it always had
  square = Layout.from_config(c.model)
  assert square.at_grid(square.grid) == square


def test_at_grid_shares_the_parameters_and_changes_only_the_layout():
  _, model = tiny_model()
  wide = at_grid(model, GRID)
  assert wide.layout.grid == GRID and model.layout.grid == (4, 4)
  assert wide.layout.num_image_tokens == 15
  assert wide.output.weight[...] is model.output.weight[...]
  assert at_grid(model, (4, 4)) is model


def test_non_square_ar_decoding_equals_the_full_causal_forward():
  _, model = tiny_model()
  wide = at_grid(model, GRID)
  labels = jnp.array([1, 7])
  greedy = DecodeSettings.create(cfg_scale=0.0, temperature=0.0)
  result = ar.generate_jit(wide, labels, jax.random.key(0), greedy, return_logits=True)
  assert result.tokens.shape == (2, 15)
  full = wide.ar_logits(result.tokens, labels)[..., :wide.layout.codebook_size]
  np.testing.assert_allclose(result.logits, full, atol=2e-4, rtol=0)
  np.testing.assert_array_equal(result.tokens, jnp.argmax(full, axis=-1))


def test_non_square_mar_decoding_commits_the_argmax_of_a_full_forward_at_every_step():
  _, model = tiny_model()
  wide = at_grid(model, GRID)
  labels = jnp.array([2, 5])
  steps = 4
  greedy = DecodeSettings.create(cfg_scale=0.0, temperature=0.0, choice_temperature=0.0,
                                 steps=steps)
  state = mar.generate_jit(wide, labels, jax.random.key(0), greedy)
  tokens, commit = np.asarray(state.tokens), np.asarray(state.commit_step)
  assert tokens.shape == (2, 15) and (commit >= 0).all() and (tokens < 512).all()
  mask_id = wide.layout.mask_id
  for t in range(steps):
    before = np.where(commit < t, tokens, mask_id)  # the grid as step t saw it
    logits = wide.mar_logits(jnp.asarray(before), labels)[..., :512]
    now = commit == t
    np.testing.assert_array_equal(tokens[now], np.asarray(jnp.argmax(logits, -1))[now])
    # greedy confidence: step t commits the most probable still-masked positions
    logp = np.asarray(jax.nn.log_softmax(logits, -1)).max(-1)
    for row in range(2):
      left = commit[row] >= t
      if now[row].any() and (left & ~now[row]).any():
        assert logp[row][now[row]].min() >= logp[row][left & ~now[row]].max() - 1e-5


def test_one_program_per_grid_shape():
  _, model = tiny_model()
  settings = DecodeSettings.create(cfg_scale=1.0, steps=3)
  labels = jnp.array([0, 1])
  run = lambda grid, seed: mar.generate_jit(at_grid(model, grid), labels, jax.random.key(seed),
                                            settings).tokens
  run(GRID, 0)
  size = mar.generate_jit._cache_size()
  a, b = run(GRID, 1), run(GRID, 2)  # same shape, other batch: no new compilation
  assert mar.generate_jit._cache_size() == size and not np.array_equal(a, b)
  assert run((5, 3), 0).shape == (2, 15)
  assert mar.generate_jit._cache_size() == size + 1


def test_objectives_run_over_the_batch_grid():
  c, model = tiny_model()
  codes = jax.random.randint(jax.random.key(3), (2,) + GRID, 0, 512)
  batch = {"codes": codes, "label": jnp.array([1, 2])}
  for loss_fn in (objectives.mar_loss, objectives.ar_loss):
    grads = jax.grad(lambda m: loss_fn(m, batch, jax.random.key(0), c.objective)[0])(model)
    assert grads.layout == model.layout  # the gradient has the parameters' own structure
    assert np.isfinite(float(loss_fn(model, batch, jax.random.key(0), c.objective)[0]))


def test_the_tokenizer_encodes_and_decodes_non_square_images():
  c = configlib.finalize(configlib.load_config("tiny:maskgil"))
  tok = vq.VQModel(c.tokenizer, rngs=nnx.Rngs(0))
  pixels = jax.random.uniform(jax.random.key(0), (2, 6, 10, 3), minval=-1, maxval=1)
  codes = vq.encode(tok, pixels)
  assert codes.shape == (2,) + GRID
  out = images.tokens_to_images(tok, codes.reshape(2, -1), GRID)
  assert out.shape == (2, 6, 10, 3) and out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, images.tokens_to_images(tok, codes))
  with pytest.raises(ValueError, match="do not fill a 4x4 grid"):
    images.tokens_to_images(tok, codes.reshape(2, -1), (4, 4))


def test_non_square_hybrid_keeps_the_ar_prefix_and_fills_the_rest():
  from maskgil_jax.decode import hybrid
  _, model = tiny_model()
  wide = at_grid(model, GRID)
  labels = jnp.array([4, 9])
  greedy = DecodeSettings.create(cfg_scale=0.0, temperature=0.0, choice_temperature=0.0,
                                 steps=3, ar_tokens=6, ar_cfg_scale=0.0, ar_temperature=0.0)
  state = hybrid.generate_jit(wide, wide, labels, jax.random.key(0), greedy)
  prefix = ar.generate_jit(wide, labels, jax.random.key(0), greedy, num_tokens=6).tokens
  assert state.tokens.shape == (2, 15) and (np.asarray(state.tokens) < 512).all()
  np.testing.assert_array_equal(state.tokens[:, :6], prefix)
  assert (np.asarray(state.commit_step)[:, :6] == -1).all()
