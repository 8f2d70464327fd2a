"""The optimizer (schedules, matrices-only decay, clipping) and the step's building blocks
(gradient accumulation, the non-finite guard, EMA)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.training import optim, steps


def optim_cfg(**kw):
  o = configlib.base_config("tiny").optim
  o.update(kw)
  return o


def test_schedules():
  constant = optim.learning_rate(optim_cfg(lr=1e-4), 100)
  assert float(constant(0)) == pytest.approx(1e-4) and float(constant(99)) == pytest.approx(1e-4)
  warm = optim.learning_rate(optim_cfg(lr=1e-3, warmup_steps=10), 100)
  assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(5e-4)
  assert float(warm(50)) == pytest.approx(1e-3)
  cosine = optim.learning_rate(optim_cfg(lr=1e-3, schedule="warmup_cosine", warmup_steps=10,
                                         min_lr_ratio=0.1), 110)
  assert float(cosine(10)) == pytest.approx(1e-3)
  assert float(cosine(60)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-4)  # half way down
  assert float(cosine(110)) == pytest.approx(1e-4)


def test_bad_values_name_the_field():
  with pytest.raises(ConfigError, match="config.optim.warmup_steps"):
    optim.check_optim(optim_cfg(warmup_steps=-1), 8)
  with pytest.raises(ConfigError, match="config.optim.ema_decay"):
    optim.check_optim(optim_cfg(ema_decay=1.0), 8)
  with pytest.raises(ConfigError, match="config.optim.b1"):
    optim.check_optim(optim_cfg(b2=1.5), 8)


class Stacked(nnx.Module):
  """Two layers' worth of one matrix and one norm weight, stacked as the transformer does."""

  def __init__(self):
    self.w = nnx.Param(jnp.ones((2, 3, 4)), out_sharding=("layers", "embed", "mlp"))
    self.norm = nnx.Param(jnp.ones((2, 3)), out_sharding=("layers", "norm"))


def test_decay_only_matrices_even_when_stacked():
  m = configlib.finalize(configlib.load_config("tiny")).model
  mask = optim.matrix_mask(nnx.state(nnx.eval_shape(lambda: Transformer(m, rngs=nnx.Rngs(0))),
                                     nnx.Param))
  assert mask["layers"]["attention"]["wqkv"]["weight"]  # [layers, embed, qkv]
  assert mask["tok_embeddings"]["weight"]  # embeddings decay, as LlamaGen's p.dim() >= 2
  assert not mask["layers"]["attention_norm"]["weight"]  # [layers, dim]: a stacked vector
  assert not mask["norm"]["weight"]
  # one step with zero gradients: only weight decay moves parameters
  tx = optim.make_optimizer(optim_cfg(lr=0.1, weight_decay=0.5, decay_matrices_only=True,
                                      grad_clip=0.0), 10)
  params = nnx.state(Stacked(), nnx.Param)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["w"][...], 0.95, rtol=1e-6)
  np.testing.assert_array_equal(new["norm"][...], 1.0)


def test_gradients_are_clipped_to_the_global_norm():
  # b1 = b2 = 0 and eps >> |g| make Adam's step -lr * g / eps: the clipped gradient itself
  tx = optim.make_optimizer(optim_cfg(lr=1e6, b1=0.0, b2=0.0, eps=1e6, weight_decay=0.0,
                                      grad_clip=1.0), 10)
  params = {"w": jnp.zeros(4)}
  g = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # global norm 50
  updates, _ = tx.update(g, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.6, -0.8, 0.0, 0.0], rtol=1e-5)


def test_accumulation_averages_micro_batch_gradients():
  x = jnp.arange(24.0).reshape(8, 3)
  w = jnp.array([0.5, -1.0, 2.0])

  def grad_fn(w, batch, key):
    loss = lambda w: jnp.mean((batch["x"] @ w) ** 2)
    return jax.grad(loss)(w), {"loss": loss(w)}

  full_g, full_m = grad_fn(w, {"x": x}, None)
  acc_g, acc_m = steps.accumulate(grad_fn, w, {"x": x}, jax.random.key(0), 4)
  np.testing.assert_allclose(acc_g, full_g, rtol=1e-5)
  np.testing.assert_allclose(acc_m["loss"], full_m["loss"], rtol=1e-5)
  micro = steps.split_microbatches({"x": x}, 4)["x"]
  np.testing.assert_array_equal(micro[1], x[1::4])  # rows 1, 5: one from each half of the batch


def test_non_finite_step_changes_nothing():
  tx = optax.adam(0.1)
  params = {"w": jnp.ones(3)}
  opt_state = tx.init(params)
  grads = {"w": jnp.array([1.0, jnp.nan, 0.0])}
  new, new_opt, norm, ok = steps.apply_gradients(params, grads, opt_state, tx, jnp.array(True))
  assert not bool(ok) and not np.isfinite(float(norm))
  np.testing.assert_array_equal(new["w"], params["w"])
  for a, b in zip(jax.tree.leaves(new_opt), jax.tree.leaves(opt_state)):
    np.testing.assert_array_equal(a, b)
  good = {"w": jnp.ones(3)}
  new, _, _, ok = steps.apply_gradients(params, good, opt_state, tx, jnp.array(False))
  assert not bool(ok)  # a non-finite loss alone also skips the update
  np.testing.assert_array_equal(new["w"], params["w"])
