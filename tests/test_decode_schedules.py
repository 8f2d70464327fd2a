"""Mask schedules: the reference token counts per step, and the training mask ratio."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax.decode import schedules


@pytest.mark.parametrize("name, expected", [
    ("arccos", [1, 18, 26, 32, 38, 43, 48, 50]),   # docs/reference.md section 6
    ("cosine", [1, 12, 22, 32, 41, 47, 51, 50]),   # docs/reference.md section 6
    ("linear", [1, 9, 18, 27, 37, 46, 55, 63]),    # round(64 * j/7), zero raised, last the rest
])
def test_reference_counts_for_eight_steps_over_256_tokens(name, expected):
  counts = schedules.tokens_per_step(name, 8, 256)
  np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("name", schedules.SCHEDULES)
def test_counts_per_sample_sum_to_each_count_and_match_the_scalar_rule(name):
  n = jnp.array([256, 200, 128, 17])
  counts = jax.jit(schedules.tokens_per_step, static_argnums=(0, 1))(name, 8, n)
  np.testing.assert_array_equal(counts.sum(-1), n)
  for row, count in zip(counts, n):
    np.testing.assert_array_equal(row, schedules.tokens_per_step(name, 8, int(count)))
  assert (counts[:, :-1] >= 1).all()


def test_one_step_commits_everything_and_few_tokens_overshoot_only_at_the_end():
  np.testing.assert_array_equal(schedules.tokens_per_step("arccos", 1, 16), [16])
  few = schedules.tokens_per_step("arccos", 8, 3)
  assert (few[:-1] == 1).all() and few.sum() == 3  # the last entry is negative: decoders clip


def test_training_ratio_ends_and_means():
  assert float(schedules.mask_ratio("arccos", 0.0)) == pytest.approx(1.0)
  assert float(schedules.mask_ratio("arccos", 1.0)) == pytest.approx(0.0)
  u = (jnp.arange(100000) + 0.5) / 100000
  # E[arccos(u) / (pi/2)] = 2/pi; E[cos(u pi/2)] = 2/pi; E[1 - u] = 1/2; E[1 - u^2] = 2/3
  means = {"arccos": 2 / np.pi, "cosine": 2 / np.pi, "linear": 0.5, "square": 2 / 3}
  for name, mean in means.items():
    assert float(jnp.mean(schedules.mask_ratio(name, u))) == pytest.approx(mean, abs=1e-4)


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="'cubic' unknown"):
    schedules.tokens_per_step("cubic", 8, 256)
  with pytest.raises(ValueError, match="at least one step"):
    schedules.tokens_per_step("arccos", 0, 256)
