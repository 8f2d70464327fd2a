"""Hybrid decoding: AR writes the first tokens, MAR completes the grid, in one program."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import configlib
from maskgil_jax.decode import hybrid, schedules
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.loading import abstract_generator, load_generator
from maskgil_jax.models import layouts


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


def test_tail_schedule_takes_the_ar_tokens_off_the_full_grid_schedule(fixtures_dir):
  # 16 tokens, 4 arccos steps: the full grid commits [1, 4, 5, 6]; 6 AR tokens cover steps 0
  # and 1 and one of step 2's tokens, so the MAR half runs steps 2 and 3 committing 4 and 6
  full = np.asarray(schedules.tokens_per_step("arccos", 4, 16))
  counts, first = hybrid.tail_counts("arccos", 4, 16, 6)
  assert first == 2 and counts.sum() == 10 and (counts[2:] == full[2:] - [1, 0]).all()
  assert hybrid.tail_counts("arccos", 4, 16, 0)[1] == 0
  ar_model = load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", tiny("llamagen"))
  mar_model = load_generator(fixtures_dir / "maskgil_gpt_tiny.pt", tiny("maskgil_reference"))
  settings = DecodeSettings.create(cfg_scale=3.0, steps=4, ar_tokens=6, hybrid_schedule="tail")
  state = hybrid.generate_jit(ar_model, mar_model, jnp.array([1, 2]), jax.random.PRNGKey(0),
                              settings)
  steps = np.asarray(state.commit_step)
  assert (steps[:, :6] == -1).all()
  for t in range(4):
    np.testing.assert_array_equal((steps[:, 6:] == t).sum(-1), counts[t])
  assert hybrid.mar_steps_run(settings, 16) == 2
  assert hybrid.mar_steps_run(settings.replace(hybrid_schedule="spread"), 16) == 4
  # the tail of 8 arccos steps over 256 tokens when AR wrote 128: the last 3 steps
  counts, first = hybrid.tail_counts("arccos", 8, 256, 128)
  assert counts.tolist() == [0, 0, 0, 0, 0, 30, 48, 50] and first == 5


def reference_cases(fixtures_dir):
  return json.loads((fixtures_dir / "maskgil_hybrid_schedule.json").read_text())["cases"]


def test_head_schedule_commits_what_maskgils_sampler_commits(fixtures_dir):
  cases = reference_cases(fixtures_dir)
  assert any(c["given"] == 128 and c["counts"] == [1, 18, 26, 32, 38, 13] for c in cases)
  for c in cases:
    np.testing.assert_array_equal(schedules.tokens_per_step(c["schedule"], c["steps"], 256),
                                  c["full_schedule"])
    counts, run = hybrid.head_counts(c["schedule"], c["steps"], 256, c["given"])
    assert run == c["passes"] and counts[:run].tolist() == c["counts"], c
    assert not counts[run:].any()
    settings = DecodeSettings.create(steps=c["steps"], schedule=c["schedule"],
                                     ar_tokens=c["given"], hybrid_schedule="head")
    assert hybrid.mar_steps_run(settings, 256) == c["passes"]


W_GRID = 70  # the stand-in's code j stands for guidance w = j / 70


class GuidanceProbe:
  """A stand-in MAR model whose greedy token at every position is the code j / 70 nearest the
  guidance weight w of the step: code j's guided logit is w^2 - (w - j/70)^2 (cond logit
  -(j/70)^2, uncond -(j/70)^2 - 2 j/70), whatever the tokens and labels."""

  def __init__(self, grid):
    self.layout = layouts.Layout("maskgil", 256, 10, 1, grid, "2d", 16, 10000.0)
    self.condition = "class"

  def mar_logits(self, tokens, labels):
    wj = jnp.arange(self.layout.codebook_size, dtype=jnp.float32) / W_GRID
    cond, uncond = -wj ** 2, -wj ** 2 - 2 * wj
    rows = jnp.where((labels == self.layout.null_label)[:, None], uncond, cond)
    logits = jnp.broadcast_to(rows[:, None, :], tokens.shape + (self.layout.codebook_size,))
    return jnp.concatenate([logits, jnp.full(tokens.shape + (1,), -1e9)], axis=-1)


def test_head_schedule_runs_maskgils_passes_with_its_guidance_ramp(fixtures_dir):
  """The MAR half on a grid with `given` tokens, as MaskGIL's sample(init_code=...) runs it:
  same commits per pass, same number of passes, same guidance weight per pass."""
  for c in reference_cases(fixtures_dir):
    if c["batch"] != 1:
      continue
    probe = GuidanceProbe((16, 16))
    settings = DecodeSettings.create(cfg_scale=c["w"], temperature=0.0, steps=c["steps"],
                                     schedule=c["schedule"], ar_tokens=c["given"],
                                     hybrid_schedule="head")
    grid = jnp.full((2, 256), probe.layout.mask_id, jnp.int32).at[:, :c["given"]].set(7)
    state = hybrid.complete(probe, jnp.array([3, 5]), jax.random.PRNGKey(0), settings, grid)
    tokens, steps = np.asarray(state.tokens), np.asarray(state.commit_step)
    assert (tokens[:, :c["given"]] == 7).all() and (steps[:, :c["given"]] == -1).all()
    assert steps.max() == c["passes"] - 1
    for t, (n, w) in enumerate(zip(c["counts"], c["guidance"])):
      np.testing.assert_array_equal((steps == t).sum(-1), n)
      np.testing.assert_array_equal(tokens[steps == t], round(w * W_GRID))


def test_the_old_schedule_name_is_refused_with_what_it_became():
  with pytest.raises(configlib.ConfigError, match=r"hybrid_schedule: 'truncated'.*renamed 'tail'.*'head'"):
    DecodeSettings.create(hybrid_schedule="truncated")


def test_head_schedule_in_the_jitted_hybrid(fixtures_dir):
  # 16 tokens, 4 arccos steps [1, 4, 5, 6]; 6 AR tokens leave 10: 1, 4, 5 in 3 passes
  ar_model = load_generator(fixtures_dir / "llamagen_gpt_tiny.pt", tiny("llamagen"))
  mar_model = load_generator(fixtures_dir / "maskgil_gpt_tiny.pt", tiny("maskgil_reference"))
  settings = DecodeSettings.create(cfg_scale=3.0, steps=4, ar_tokens=6, hybrid_schedule="head")
  counts, run = hybrid.head_counts("arccos", 4, 16, 6)
  assert counts.tolist() == [1, 4, 5, 0] and run == 3
  state = hybrid.generate_jit(ar_model, mar_model, jnp.array([1, 2]), jax.random.PRNGKey(0),
                              settings)
  steps = np.asarray(state.commit_step)
  assert (steps[:, :6] == -1).all() and steps.max() == 2
  for t in range(4):
    np.testing.assert_array_equal((steps == t).sum(-1), counts[t])
  assert hybrid.mar_steps_run(settings, 16) == 3
