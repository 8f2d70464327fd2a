"""Training objectives: masking, label drop, the positions scored, and the reference CE values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.models.layouts import Layout
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.training import objectives


def tiny(layout="maskgil"):
  return configlib.finalize(configlib.load_config(f"tiny:{layout}"))


class RecordingModel:
  """Stands in for the transformer: fixed logits, and it keeps the inputs it was given."""

  def __init__(self, layout, vocab=16):
    self.layout, self.vocab = layout, vocab

  def mar_logits(self, tokens, labels, key=None):
    self.tokens, self.labels = tokens, labels
    return jax.random.normal(jax.random.PRNGKey(0), tokens.shape + (self.vocab,))


def run_mar(cfg, data, seed):
  """(loss, metrics, tokens and labels the model saw, its logits) of one mar_loss call."""
  model = RecordingModel(Layout.from_config(tiny().model))
  loss, metrics = objectives.mar_loss(model, data, jax.random.PRNGKey(seed), cfg)
  return loss, metrics, model.tokens, model.labels, model.mar_logits(model.tokens, model.labels)


def batch(b=4096, vocab=16, seed=0):
  """Codes for the recording model: one batch size for all its calls, so eager ops compile once."""
  codes = jax.random.randint(jax.random.PRNGKey(seed), (b, 4, 4), 0, vocab)
  return {"codes": codes, "label": jnp.arange(b) % 10}


def test_cross_entropy_matches_the_torch_losses(fixtures_dir):
  mg = np.load(fixtures_dir / "maskgil_gpt_tiny_io.npz")
  ce = objectives.cross_entropy(jnp.asarray(mg["logits_cond"][:, :16]),
                                jnp.asarray(mg["code"].reshape(2, 16)), 0.1)
  assert float(jnp.mean(ce)) == pytest.approx(float(mg["loss_ls01"]), abs=1e-5)
  lg = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  ce = objectives.cross_entropy(jnp.asarray(lg["logits_tf"]), jnp.asarray(lg["idx"]))
  assert float(jnp.mean(ce)) == pytest.approx(float(lg["loss_tf"]), abs=1e-5)


@pytest.mark.parametrize("loss_on", ["all", "masked"])
def test_mar_loss_masks_with_the_mask_token_and_scores_the_chosen_positions(loss_on):
  cfg = tiny().objective
  cfg.loss_on, cfg.label_drop = loss_on, 0.0
  data = batch()
  loss, metrics, tokens, labels, logits = run_mar(cfg, data, 1)
  codes = np.asarray(data["codes"]).reshape(-1, 16)
  masked = np.asarray(tokens) == tiny().model.codebook_size  # the MASK id
  np.testing.assert_array_equal(np.where(masked, codes, tokens), codes)
  np.testing.assert_array_equal(labels, data["label"])
  assert 0 < masked.sum() < masked.size
  per_token = np.asarray(objectives.cross_entropy(logits, jnp.asarray(codes), 0.1))
  expected = per_token[masked].mean() if loss_on == "masked" else per_token.mean()
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)
  hits = np.argmax(np.asarray(logits), -1) == codes
  assert float(metrics["accuracy"]) == pytest.approx(hits[masked].mean(), rel=1e-5)
  assert float(metrics["mask_ratio"]) == pytest.approx(masked.mean(), rel=1e-6)


@pytest.mark.parametrize("schedule, mean", [("arccos", 2 / math.pi), ("linear", 0.5)])
def test_mask_ratio_follows_the_schedule_and_labels_drop_to_null(schedule, mean):
  cfg = tiny().objective
  cfg.mask_schedule, cfg.label_drop = schedule, 0.5
  _, metrics, _, labels, _ = run_mar(cfg, batch(), 2)
  assert float(metrics["mask_ratio"]) == pytest.approx(mean, abs=0.01)
  null = tiny().model.num_classes
  assert float(np.mean(np.asarray(labels) == null)) == pytest.approx(0.5, abs=0.03)
  cfg.label_drop = 1.0
  assert (np.asarray(run_mar(cfg, batch(), 3)[3]) == null).all()


@pytest.mark.parametrize("layout, loss_fn", [("maskgil", objectives.mar_loss),
                                             ("llamagen", objectives.ar_loss)])
def test_losses_train_the_real_model_under_jit(layout, loss_fn):
  c = tiny(layout)
  model = Transformer(c.model, rngs=nnx.Rngs(0))
  grad_fn = jax.jit(jax.value_and_grad(lambda m, b, k: loss_fn(m, b, k, c.objective), has_aux=True))
  (loss, metrics), grads = grad_fn(model, batch(4), jax.random.PRNGKey(0))
  # the output layer starts at zero, so every class is equally likely: CE = log(V) exactly
  assert float(loss) == pytest.approx(math.log(512), rel=1e-5)
  assert set(metrics) >= {"loss", "accuracy"}
  g = grads.output.weight[...]
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_bad_objective_settings_are_named():
  cfg = tiny().objective
  cfg.loss_on = "unmasked"
  with pytest.raises(ValueError, match="config.objective.loss_on"):
    objectives.mar_loss(RecordingModel(Layout.from_config(tiny().model)), batch(), None, cfg)
  with pytest.raises(ValueError, match="needs a MASK token"):
    objectives.mar_loss(RecordingModel(Layout.from_config(tiny("llamagen").model)), batch(),
                        None, tiny().objective)
