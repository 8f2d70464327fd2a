"""The tokenizer's train step runs the PatchGAN only from `disc_start` on."""
import jax
import numpy as np
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.models.vq import VQModel
from maskgil_jax.training import optim, state as state_lib, steps, tokenizer_losses


def test_discriminator_is_skipped_before_disc_start_and_trained_after():
  c = configlib.load_config("tiny")
  loss = c.tokenizer.loss
  loss.perceptual_weight, loss.disc_start, loss.disc_channels, loss.disc_layers = 0.0, 1, 8, 1
  c.tokenizer.ch, c.tokenizer.ch_mult, c.tokenizer.z_channels = 32, (1, 2), 32
  tx = optim.make_optimizer(c.optim, 10)
  step = jax.jit(steps.make_tokenizer_step(
      tx, tx, optim.learning_rate(c.optim, 10), tokenizer_losses.LossWeights.from_config(loss)))
  state = state_lib.init_train_state(
      VQModel(c.tokenizer, rngs=nnx.Rngs(0)), tx, disc_tx=tx,
      disc=tokenizer_losses.build_discriminator(loss, nnx.Rngs(1)))
  batch = {"image": jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)}
  leaves = lambda s: [np.asarray(x) for x in jax.tree.leaves(nnx.state(s.disc_params, nnx.Param))]

  before = leaves(state)
  state, m0 = step(state, batch, jax.random.key(1))  # step 0 < disc_start: PatchGAN idle
  assert all(np.array_equal(a, b) for a, b in zip(before, leaves(state)))
  assert float(m0["disc_weight"]) == 0.0 and float(m0["disc_grad_norm"]) == 0.0
  state, m1 = step(state, batch, jax.random.key(2))  # step 1: both networks train
  assert any(not np.array_equal(a, b) for a, b in zip(before, leaves(state)))
  assert float(m1["disc_weight"]) == 0.5 and float(m1["disc_grad_norm"]) > 0
  assert float(m1["gen_adv_loss"]) != 0.0 and np.isfinite(float(m1["loss"]))
