"""The joint objective: one maskgil model trained as MAR and AR at once, and its AR decoding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode import ar
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.training import objectives, optim, state as state_lib, steps

STEPS = 30


def joint_config(**objective):
  c = configlib.load_config("tiny:maskgil")
  c.objective.name = "joint"
  c.batch_size = 8
  c.total_steps = STEPS
  c.optim.lr = 3e-3
  for k, v in objective.items():
    c.objective[k] = v
  return configlib.finalize(c)


@pytest.fixture(scope="module")
def trained():
  """A tiny joint model trained STEPS steps on one fixed batch; (model, config, per-step
  metrics, the batch)."""
  config = joint_config()
  tx = optim.make_optimizer(config.optim, config.total_steps)
  step = jax.jit(steps.make_generator_step(
      lambda m, b, k: objectives.joint_loss(m, b, k, config.objective), tx,
      optim.learning_rate(config.optim, config.total_steps)))
  state = state_lib.init_train_state(Transformer(config.model, rngs=nnx.Rngs(0)), tx)
  # codes with structure (each row a shifted ramp), so both losses can fall in a few steps
  base = (jnp.arange(8)[:, None] * 3 + jnp.arange(16)[None]) % 32
  batch = {"codes": base.reshape(8, 4, 4).astype(jnp.int32), "label": jnp.arange(8) % 10}
  history = []
  for _ in range(STEPS):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append(jax.device_get(metrics))
  return state.params, config, history, batch


def test_rows_split_into_both_modes_evenly_and_once():
  ar_idx, mar_idx = objectives.ar_rows(8, 0.25)
  assert sorted(np.concatenate([ar_idx, mar_idx]).tolist()) == list(range(8))
  assert ar_idx.tolist() == [3, 7]  # spread over the batch, not the first rows
  assert len(objectives.ar_rows(10, 0.5)[0]) == 5
  with pytest.raises(ValueError, match="at least one row of each mode"):
    objectives.ar_rows(4, 0.1)


def test_joint_config_is_checked():
  with pytest.raises(ConfigError, match="objective.ar_fraction"):
    joint_config(ar_fraction=1.0)
  with pytest.raises(ConfigError, match="objective.ar_fraction.*micro-batch of 8"):
    joint_config(ar_fraction=0.01)
  c = configlib.load_config("tiny:llamagen")
  c.objective.name = "joint"
  with pytest.raises(ConfigError, match="objective.name.*layout maskgil"):
    configlib.finalize(c)


def test_both_losses_are_finite_and_fall(trained):
  _, _, history, _ = trained
  for name in ("mar_loss", "ar_loss", "loss"):
    values = np.array([h[name] for h in history])
    assert np.all(np.isfinite(values)), name
    assert values[-3:].mean() < 0.7 * values[:3].mean(), (name, values)
  first = history[0]
  # the loss is the per-example mean of the two modes (half the rows each)
  assert first["loss"] == pytest.approx(0.5 * (first["mar_loss"] + first["ar_loss"]), rel=1e-5)
  assert not any(bool(h["nonfinite"]) for h in history)


def test_ar_decoding_of_a_joint_model_is_its_teacher_forced_forward(trained):
  model, config, _, batch = trained
  labels = batch["label"][:3]
  greedy = DecodeSettings.create(cfg_scale=0.0, temperature=0.0)
  result = ar.generate_jit(model, labels, jax.random.key(0), greedy, return_logits=True)
  forced = model.ar_logits(result.tokens, labels)[..., :config.model.codebook_size]
  np.testing.assert_allclose(result.logits, forced, atol=2e-4, rtol=0)
  np.testing.assert_array_equal(result.tokens, jnp.argmax(forced, axis=-1))


def test_step_flops_count_each_mode_on_its_rows():
  from maskgil_jax.training import flops
  joint = joint_config()
  mar, ar = joint.copy_and_resolve_references(), joint.copy_and_resolve_references()
  mar.objective.name, ar.objective.name = "mar", "ar"
  half = 0.5 * (flops.generator_step_flops(mar) + flops.generator_step_flops(ar))
  assert flops.generator_step_flops(joint) == pytest.approx(half)
  assert flops.generator_step_flops(ar) < flops.generator_step_flops(mar)
