"""Hybrid decoding: AR writes the first tokens, MAR completes the grid, in one program."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import configlib
from maskgil_jax.decode import hybrid, schedules
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.loading import abstract_generator, load_generator


def tiny(layout):
  return configlib.finalize(configlib.load_config(f"tiny:{layout}")).model


def test_two_models_llamagen_writes_the_first_half_and_maskgil_completes(fixtures_dir):
  ar_model = load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", tiny("llamagen"))
  mar_model = load_generator(fixtures_dir / "maskgil_gpt_tiny.pt", tiny("maskgil_reference"))
  io = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  # the AR half has its own guidance and temperature: greedy there, sampled in the MAR half
  settings = DecodeSettings.create(cfg_scale=3.0, temperature=1.0, steps=4, ar_tokens=8,
                                   ar_cfg_scale=3.0, ar_temperature=0.0)
  state = hybrid.generate_jit(ar_model, mar_model, jnp.asarray(io["cond_idx"], jnp.int32),
                              jax.random.PRNGKey(0), settings)
  tokens, steps = np.asarray(state.tokens), np.asarray(state.commit_step)
  # greedy AR with w = 3 is LlamaGen's generate at cfg 4.0, cut after 8 tokens
  np.testing.assert_array_equal(tokens[:, :8], io["gen_greedy_cfg4"][:, :8])
  assert (steps[:, :8] == -1).all()
  expected = schedules.tokens_per_step("arccos", 4, 8)
  for t in range(4):
    np.testing.assert_array_equal((steps[:, 8:] == t).sum(-1), expected[t])
  assert ((tokens >= 0) & (tokens < 512)).all()


def test_mismatched_pairs_and_too_many_ar_tokens_are_refused():
  lg, mg = abstract_generator(tiny("llamagen")), abstract_generator(tiny("maskgil_reference"))
  other = tiny("maskgil")
  other.grid_size = 8
  with pytest.raises(ValueError, match=r"grid \(4, 4\) but the MAR model has \(8, 8\)"):
    hybrid.check_pair(lg, abstract_generator(other))
  with pytest.raises(ValueError, match="cannot decode AR"):
    hybrid.check_pair(mg, mg)
  with pytest.raises(ValueError, match="cannot decode MAR"):
    hybrid.check_pair(lg, lg)
  with pytest.raises(ValueError, match="config.decode.ar_tokens: 17"):
    hybrid.generate(lg, mg, jnp.array([1]), jax.random.PRNGKey(0),
                    DecodeSettings.create(ar_tokens=17))


def test_truncated_schedule_takes_the_ar_tokens_off_the_full_grid_schedule(fixtures_dir):
  # 16 tokens, 4 arccos steps: the full grid commits [1, 4, 5, 6]; 6 AR tokens cover steps 0
  # and 1 and one of step 2's tokens, so the MAR half runs steps 2 and 3 committing 4 and 6
  full = np.asarray(schedules.tokens_per_step("arccos", 4, 16))
  counts, first = hybrid.truncated_counts("arccos", 4, 16, 6)
  assert first == 2 and counts.sum() == 10 and (counts[2:] == full[2:] - [1, 0]).all()
  assert hybrid.truncated_counts("arccos", 4, 16, 0)[1] == 0
  ar_model = load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", tiny("llamagen"))
  mar_model = load_generator(fixtures_dir / "maskgil_gpt_tiny.pt", tiny("maskgil_reference"))
  settings = DecodeSettings.create(cfg_scale=3.0, steps=4, ar_tokens=6,
                                   hybrid_schedule="truncated")
  state = hybrid.generate_jit(ar_model, mar_model, jnp.array([1, 2]), jax.random.PRNGKey(0),
                              settings)
  steps = np.asarray(state.commit_step)
  assert (steps[:, :6] == -1).all()
  for t in range(4):
    np.testing.assert_array_equal((steps[:, 6:] == t).sum(-1), counts[t])
  assert hybrid.mar_steps_run(settings, 16) == 2
  assert hybrid.mar_steps_run(settings.replace(hybrid_schedule="spread"), 16) == 4
