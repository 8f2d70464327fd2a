"""MAR decoding on the MaskGIL reference fixture: schedule, commit-once, CFG ramp, no recompiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import configlib
from maskgil_jax.decode import mar, schedules
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.loading import abstract_generator, load_generator

LABELS = jnp.array([3, 7, 0, 9])


@pytest.fixture(scope="module")
def model(fixtures_dir):
  c = configlib.finalize(configlib.load_config("tiny:maskgil_reference"))
  return load_generator(fixtures_dir / "maskgil_gpt_tiny.safetensors", c.model)


def commits_per_step(commit_step, steps):
  return np.stack([(np.asarray(commit_step) == t).sum(-1) for t in range(steps)], axis=-1)


def test_every_position_is_committed_exactly_once_on_schedule_without_recompiling(model):
  settings = DecodeSettings.create(cfg_scale=3.0, steps=8)
  state = mar.generate_jit(model, LABELS, jax.random.PRNGKey(0), settings)
  tokens, steps = np.asarray(state.tokens), np.asarray(state.commit_step)
  assert ((steps >= 0) & (steps < 8)).all()  # each position committed once, at one step
  assert ((tokens >= 0) & (tokens < 512)).all()  # codes only: MASK (512) is never sampled
  expected = schedules.tokens_per_step("arccos", 8, 16)
  np.testing.assert_array_equal(commits_per_step(steps, 8), np.tile(expected, (4, 1)))

  # other numeric settings and keys reuse the compiled program
  size = mar.generate_jit._cache_size()
  greedy = DecodeSettings.create(cfg_scale=1.0, steps=8, temperature=0.0, choice_temperature=0.0)
  a = mar.generate_jit(model, LABELS, jax.random.PRNGKey(1), greedy)
  b = mar.generate_jit(model, LABELS, jax.random.PRNGKey(2), greedy)
  assert mar.generate_jit._cache_size() == size
  np.testing.assert_array_equal(a.tokens, b.tokens)  # greedy: the key does not matter
  assert not np.array_equal(a.tokens, tokens)


def test_partly_filled_grids_keep_what_is_given_and_spread_the_rest(model):
  mask_id = model.layout.mask_id
  given = jax.random.randint(jax.random.PRNGKey(5), (4, 16), 0, 512)
  holes = np.zeros((4, 16), bool)
  for row, n in enumerate([16, 9, 4, 1]):  # a different number of masked tokens per sample
    holes[row, np.random.default_rng(row).choice(16, n, replace=False)] = True
  init = jnp.where(holes, mask_id, given)
  settings = DecodeSettings.create(steps=4, schedule="cosine", cfg_schedule="constant")
  state = jax.jit(mar.generate)(model, LABELS, jax.random.PRNGKey(0), settings, init)
  tokens, steps = np.asarray(state.tokens), np.asarray(state.commit_step)
  np.testing.assert_array_equal(tokens[~holes], np.asarray(given)[~holes])
  assert (steps[~holes] == -1).all() and ((steps[holes] >= 0) & (steps[holes] < 4)).all()
  assert (tokens != mask_id).all()
  for row, n in enumerate([16, 9, 4, 1]):
    counts = np.clip(schedules.tokens_per_step("cosine", 4, n), 0, None)
    expected = np.minimum(counts, n - np.concatenate([[0], np.cumsum(counts)[:-1]]).clip(0, n))
    np.testing.assert_array_equal(commits_per_step(steps[row], 4), expected)


def test_guidance_ramps_linearly_over_the_steps(model, fixtures_dir):
  io = np.load(fixtures_dir / "maskgil_gpt_tiny_io.npz")
  tokens = jnp.asarray(io["masked_code"].reshape(2, 16), jnp.int32)
  cond, uncond = io["logits_cond"][:, :16, :512], io["logits_uncond"][:, :16, :512]
  settings = DecodeSettings.create(cfg_scale=3.0, steps=8)
  logits = jax.jit(mar.guided_logits)(model, tokens, jnp.asarray(io["labels"], jnp.int32),
                                      settings, jnp.int32(4))
  w = 3.0 * 4 / 7
  np.testing.assert_allclose(logits, (1 + w) * cond - w * uncond, atol=1e-4)


def test_layouts_without_mask_are_refused():
  c = configlib.finalize(configlib.load_config("tiny:llamagen"))
  abstract = abstract_generator(c.model)
  with pytest.raises(ValueError, match="needs a MASK token"):
    mar.generate(abstract, LABELS, jax.random.PRNGKey(0), DecodeSettings.create())
