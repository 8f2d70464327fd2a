"""Shared decoding pieces: settings checks, guidance by interleaved doubling, sampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode import sampling
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.models import conditions

PROBS = jnp.array([0.5, 0.3, 0.15, 0.05])


def kept(logits):
  return np.isfinite(np.asarray(logits))


def test_top_k_keeps_the_k_largest():
  logits = jnp.log(PROBS)[::-1]  # largest last
  np.testing.assert_array_equal(kept(sampling.filter_logits(logits, 2, 1.0)), [0, 0, 1, 1])
  np.testing.assert_array_equal(sampling.filter_logits(logits, 0, 1.0), logits)  # both off


@pytest.mark.parametrize("top_p, expect", [(0.4, [1, 0, 0, 0]), (0.7, [1, 1, 0, 0]),
                                           (0.85, [1, 1, 1, 0]), (0.99, [1, 1, 1, 1])])
def test_top_p_keeps_tokens_while_the_mass_before_them_is_within_p(top_p, expect):
  # LlamaGen: sorted cumulative mass [.5, .8, .95, 1.]; a token goes when the mass before it > p
  np.testing.assert_array_equal(kept(sampling.filter_logits(jnp.log(PROBS), 0, top_p)), expect)


def test_top_k_then_top_p_on_what_is_left():
  logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
  # top-2 renormalises to [4/7, 3/7]; top-p 0.5 then keeps only the first
  np.testing.assert_array_equal(kept(sampling.filter_logits(logits, 2, 0.5)), [1, 0, 0, 0])


def test_sampling_follows_temperature_and_greedy_is_argmax():
  rows = jnp.tile(jnp.log(PROBS), (20000, 1))
  sample = jax.jit(sampling.sample_tokens)  # one program: the settings are traced
  freq = lambda tokens: np.bincount(tokens, minlength=4) / len(tokens)
  key = jax.random.split(jax.random.PRNGKey(0), 20000)  # one key per row
  tokens, logp = sample(key, rows, DecodeSettings.create(temperature=0.0))
  assert (tokens == 0).all() and np.allclose(logp, np.log(0.5))
  tokens, _ = sample(key, rows, DecodeSettings.create(temperature=1.0))
  np.testing.assert_allclose(freq(tokens), PROBS, atol=0.015)
  tokens, _ = sample(key, rows, DecodeSettings.create(temperature=1e4))  # nearly uniform
  np.testing.assert_allclose(freq(tokens), 0.25, atol=0.015)
  tokens, _ = sample(key, rows, DecodeSettings.create(temperature=1.0, top_k=1))
  assert (tokens == 0).all()
  tokens, _ = sample(key, rows, DecodeSettings.create(temperature=1.0, top_p=0.7))
  np.testing.assert_allclose(freq(tokens), [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.015)
  assert sample._cache_size() == 1


def test_guidance_pairs_each_sample_with_its_null_row():
  labels = jnp.array([3, 7])
  np.testing.assert_array_equal(conditions.doubled(labels, 10), [3, 10, 7, 10])
  np.testing.assert_array_equal(sampling.doubled(jnp.array([[1], [2]])), [[1], [1], [2], [2]])
  cond, uncond = jnp.array([[1.0, 2.0], [0.0, 4.0]]), jnp.array([[0.5, 0.5], [1.0, 1.0]])
  rows = jnp.stack([cond, uncond], axis=1).reshape(4, 2)
  np.testing.assert_allclose(sampling.guide(rows, 3.0), 4.0 * cond - 3.0 * uncond)
  # LlamaGen's uncond + s (cond - uncond) with s = 1 + w is the same number
  np.testing.assert_allclose(sampling.guide(rows, 3.0), uncond + 4.0 * (cond - uncond))


def test_settings_from_config_and_their_checks():
  config = configlib.finalize(configlib.load_config("tiny"))
  s = DecodeSettings.from_config(config.decode)
  assert s.guided and s.steps == 8 and s.schedule == "arccos" and float(s.cfg_scale) == 3.0
  assert not DecodeSettings.create(cfg_scale=0.0).guided
  for bad, field in [(dict(steps=0), "steps"), (dict(schedule="cubic"), "schedule"),
                     (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                     (dict(top_k=-2), "top_k"), (dict(cfg_schedule="step"), "cfg_schedule")]:
    with pytest.raises(ConfigError, match=f"config.decode.{field}"):
      DecodeSettings.create(**bad)


@pytest.mark.parametrize("field", ["cfg_scale", "ar_cfg_scale", "temperature", "ar_temperature",
                                   "choice_temperature", "top_p"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan"),
                                   "3.0"])
def test_a_setting_that_is_not_a_finite_number_is_refused_by_name(field, value):
  """NaN or infinite guidance made every logit NaN and the decode all-zero tokens, silently."""
  with pytest.raises(ConfigError, match=rf"config\.decode\.{field}: must be a finite number"):
    DecodeSettings.create(**{field: value})


def test_finite_settings_still_pass():
  s = DecodeSettings.create(cfg_scale=np.float32(1.5), ar_cfg_scale=0, temperature=0.0,
                            ar_temperature=np.float64(2.0), top_p=1)
  assert float(s.cfg_scale) == 1.5 and not s.ar_guided and float(s.ar_temperature) == 2.0
