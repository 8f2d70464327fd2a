"""The paper block's ablations as named configs: `maskgil.py:B,no_qknorm` and `B,prenorm`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import recipes
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.training import objectives, optim, steps
from maskgil_jax.training import state as state_lib


def param_shapes(model_cfg) -> dict:
  """{'path.to.param': shape} of the transformer `model_cfg` describes (shapes only)."""
  abstract = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0)))
  flat = nnx.state(abstract, nnx.Param).flat_state()
  return {".".join(str(k) for k in path): tuple(v.value.shape) for path, v in flat}


@pytest.fixture(scope="module")
def b_trees():
  out = {}
  for variant in ("", "no_qknorm", "prenorm"):
    spec = "configs/maskgil.py:B" + (f",{variant}" if variant else "")
    c = configlib.finalize(configlib.load_config(spec))
    out[variant] = (c, param_shapes(c.model))
  return out


def test_variants_build_and_change_what_they_say(b_trees):
  paper_cfg, paper = b_trees[""]
  assert (paper_cfg.model.qk_norm, paper_cfg.model.norm_placement) == (True, "post")
  no_qk_cfg, no_qk = b_trees["no_qknorm"]
  assert (no_qk_cfg.model.qk_norm, no_qk_cfg.model.norm_placement) == (False, "post")
  removed = set(paper) - set(no_qk)
  assert removed == {"layers.attention.q_norm.weight", "layers.attention.k_norm.weight"}
  assert not set(no_qk) - set(paper)
  assert paper["layers.attention.q_norm.weight"] == (12, 64)  # per head_dim, every layer
  pre_cfg, pre = b_trees["prenorm"]
  assert (pre_cfg.model.qk_norm, pre_cfg.model.norm_placement) == (True, "pre")
  assert pre == paper  # the same norms, moved: same names and shapes
  # everything else of the recipe is untouched
  for variant in ("no_qknorm", "prenorm"):
    a, b = b_trees[variant][0].to_dict(), paper_cfg.to_dict()
    a.pop("model"), b.pop("model")
    assert a == b


def test_unknown_variant_is_named():
  with pytest.raises(configlib.ConfigError, match="block variant 'postnorm' unknown"):
    configlib.load_config("configs/maskgil.py:B,postnorm")


@pytest.mark.parametrize("variant", ["", "no_qknorm", "prenorm"])
def test_tiny_train_step_runs(variant):
  c = recipes.block_variant(configlib.load_config("tiny"), variant)
  c.batch_size = 4
  c = configlib.finalize(c)
  tx = optim.make_optimizer(c.optim, c.total_steps)
  step = jax.jit(steps.make_generator_step(
      lambda m, b, k: objectives.mar_loss(m, b, k, c.objective), tx,
      optim.learning_rate(c.optim, c.total_steps)))
  state = state_lib.init_train_state(Transformer(c.model, rngs=nnx.Rngs(0)), tx)
  batch = {"codes": (jnp.arange(64) % 32).reshape(4, 4, 4).astype(jnp.int32),
           "label": jnp.arange(4)}
  state, metrics = step(state, batch, jax.random.key(0))
  state, metrics = step(state, batch, jax.random.key(1))
  assert int(state.step) == 2 and np.isfinite(float(metrics["loss"]))
  assert not bool(metrics["nonfinite"])


def test_prenorm_and_postnorm_compute_differently_on_the_same_weights():
  """Same keys and shapes, another function: why a checkpoint must keep its own config."""
  post = configlib.finalize(configlib.load_config("tiny"))
  pre = configlib.finalize(recipes.block_variant(configlib.load_config("tiny"), "prenorm"))
  model = Transformer(post.model, rngs=nnx.Rngs(0))
  model.output.weight[...] = jax.random.normal(jax.random.key(0), model.output.weight.shape)
  other = Transformer(pre.model, rngs=nnx.Rngs(1))
  nnx.update(other, nnx.state(model, nnx.Param))
  tokens, labels = jnp.zeros((1, 16), jnp.int32), jnp.zeros((1,), jnp.int32)
  a = model.mar_logits(tokens, labels)
  b = other.mar_logits(tokens, labels)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


@pytest.mark.parametrize("trained, loaded", [("", "no_qknorm"), ("no_qknorm", ""),
                                             ("", "prenorm"), ("prenorm", "")])
def test_a_checkpoint_of_one_variant_does_not_load_as_another(tmp_path, trained, loaded):
  from maskgil_jax import checkpoints
  from maskgil_jax.pipeline import load_generator

  def cfg(variant):
    return configlib.finalize(recipes.block_variant(configlib.load_config("tiny"), variant))

  checkpoints.save_params(tmp_path, Transformer(cfg(trained).model, rngs=nnx.Rngs(0)),
                          cfg(trained))
  assert load_generator(tmp_path, cfg(trained).model) is not None
  field = "qk_norm" if "no_qknorm" in (trained, loaded) else "norm_placement"
  with pytest.raises(configlib.ConfigError, match=f"config.model.{field}: .* trained with"):
    load_generator(tmp_path, cfg(loaded).model)
