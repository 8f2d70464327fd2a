"""The tokenizer objective: LPIPS loading and values, PatchGAN, GAN terms, a few training steps."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from maskgil_jax.configlib import tokenizer_config
from maskgil_jax.interop.names import named_arrays
from maskgil_jax.interop.torch_io import CheckpointError, save_state_dict
from maskgil_jax.interop.vq_names import load_lpips
from maskgil_jax.models import vq
from maskgil_jax.models.discriminator import PatchGANDiscriminator
from maskgil_jax.models.lpips import VGG16_SLICES
from maskgil_jax.training import tokenizer_losses as tl
from test_vq_model import rngs

WIDTHS = (8, 8, 16, 16, 16)  # VGG16's layout with narrow layers, so CPU tests stay fast


def lpips_files(tmp_path, seed=0, widths=WIDTHS):
  """A torchvision-layout VGG file (with a classifier to ignore) and an LPIPS heads file."""
  rng = np.random.default_rng(seed)
  vgg, heads, in_ch = {}, {}, 3
  for indices, width in zip(VGG16_SLICES, widths):
    for i in indices:
      vgg[f"features.{i}.weight"] = rng.normal(0, np.sqrt(2 / (9 * in_ch)), (width, in_ch, 3, 3))
      vgg[f"features.{i}.bias"] = rng.normal(0, 0.1, (width,))
      in_ch = width
  vgg["classifier.0.weight"] = rng.normal(size=(4, 4))
  for k, width in enumerate(widths):
    heads[f"lin{k}.model.1.weight"] = np.abs(rng.normal(0, 0.1, (1, width, 1, 1)))
  vgg = {k: v.astype(np.float32) for k, v in vgg.items()}
  heads = {k: v.astype(np.float32) for k, v in heads.items()}
  save_state_dict(vgg, tmp_path / "vgg16.pth", wrap=None)
  save_state_dict(heads, tmp_path / "vgg.safetensors")
  return [str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.safetensors")], vgg, heads


def torch_lpips(vgg, heads, x, y):
  """LPIPS written with torch.nn.functional from LlamaGen's description (NCHW)."""
  import torch
  import torch.nn.functional as F
  t = lambda a: torch.from_numpy(np.array(a))
  shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
  scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

  def features(im):
    h, out = (t(im).permute(0, 3, 1, 2) - shift) / scale, []
    for s, indices in enumerate(VGG16_SLICES):
      if s:
        h = F.max_pool2d(h, 2, 2)
      for i in indices:
        w, b = t(vgg[f"features.{i}.weight"]), t(vgg[f"features.{i}.bias"])
        h = F.relu(F.conv2d(h, w, b, padding=1))
      out.append(h / (torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True)) + 1e-10))
    return out

  total = 0
  for k, (a, b) in enumerate(zip(features(x), features(y))):
    total = total + F.conv2d((a - b) ** 2, t(heads[f"lin{k}.model.1.weight"])).mean([2, 3])
  return total.reshape(-1).numpy()


def test_lpips_loads_split_files_and_matches_torch(tmp_path):
  paths, vgg, heads = lpips_files(tmp_path)
  lpips = load_lpips(",".join(paths), widths=WIDTHS)
  np.testing.assert_array_equal(lpips.net.slice3["12"].weight[...],
                                vgg["features.12.weight"].transpose(2, 3, 1, 0))
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  y = x + 0.1 * jax.random.normal(jax.random.key(1), x.shape)
  ours = jax.jit(lambda m, a, b: m(a, b))(lpips, x, y)
  np.testing.assert_allclose(ours, torch_lpips(vgg, heads, x, y), rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(jax.jit(lambda m, a: m(a, a))(lpips, x)).max()) == 0


def test_lpips_file_problems_are_named(tmp_path):
  paths, _, _ = lpips_files(tmp_path)
  with pytest.raises(CheckpointError, match="missing lin4.model.1.weight"):
    load_lpips(paths[:1], widths=WIDTHS)
  with pytest.raises(CheckpointError, match="is in both"):
    load_lpips([paths[1], paths[1]], widths=WIDTHS)


def test_lpips_is_skipped_with_a_warning(caplog):
  loss = tokenizer_config("tiny").loss
  with caplog.at_level(logging.WARNING):
    assert tl.build_lpips(loss) is None
  assert "LPIPS perceptual loss is skipped" in caplog.text
  assert float(tl.perceptual_loss(None, jnp.ones((1, 4, 4, 3)), jnp.zeros((1, 4, 4, 3)))) == 0


def test_patchgan_matches_the_reference_size():
  d = nnx.eval_shape(lambda: PatchGANDiscriminator(rngs=nnx.Rngs(0)))
  assert vq.count_params(d) == 2_765_633  # LlamaGen's NLayerDiscriminator(3, 64, 3)
  out = jax.eval_shape(lambda d, x: d(x), d, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert out.shape == (2, 30, 30, 1)
  convs = ["main.0.weight", "main.0.bias", "main.2.weight", "main.5.weight", "main.8.weight",
           "main.11.weight", "main.11.bias"]
  norms = [f"main.{i}.{p}" for i in (3, 6, 9) for p in ("weight", "bias")]
  assert sorted(named_arrays(d)) == sorted(convs + norms)  # the PyTorch Sequential's keys


def test_gan_terms():
  real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.5])
  assert float(tl.hinge_d_loss(real, fake)) == pytest.approx(0.5 * (0.25 + 0.75))
  assert float(tl.hinge_g_loss(fake)) == pytest.approx(0.75)
  assert float(tl.adopt_weight(0.5, 19999, 20000)) == 0.0
  assert float(tl.adopt_weight(0.5, 20000, 20000)) == 0.5
  assert float(tl.adaptive_weight(jnp.array([3.0, 4.0]), jnp.array([0.0, 1.0]))) == pytest.approx(
      5 / (1 + 1e-4))
  with pytest.raises(ValueError, match="reconstruction"):
    tl.LossWeights.from_config(dict(tokenizer_config("tiny").loss, reconstruction="l3"))


GENERATOR_TERMS = ("loss", "rec_loss", "perceptual_loss", "gen_adv_loss", "vq_loss", "commit_loss",
                   "entropy_loss")


def test_a_few_steps_lower_every_loss(tmp_path):
  """From one start, a few Adam steps on each generator term alone (and on the total) lower it;
  a few discriminator steps lower the discriminator loss. One compile per step function."""
  t = tokenizer_config("tiny")
  t.update(dict(ch=32, z_channels=32, enc_res_blocks=1, dec_res_blocks=1, codebook_size=16,
                entropy_loss=0.1))
  t.loss.update(dict(disc_start=0, disc_adaptive_weight=True, disc_channels=8, disc_layers=2))
  weights = tl.LossWeights.from_config(t.loss)
  start = vq.VQModel(t, rngs=rngs(0))
  disc = tl.build_discriminator(t.loss, rngs(1))
  lpips = load_lpips(lpips_files(tmp_path)[0], widths=WIDTHS)
  images = jax.random.uniform(jax.random.key(2), (4, 16, 16, 3), minval=-1, maxval=1)
  opt = optax.adam(1e-3)

  def apply(module, grads, state):
    params = nnx.state(module, nnx.Param)
    updates, state = opt.update(nnx.state(grads, nnx.Param), state, params)
    nnx.update(module, optax.apply_updates(params, updates))  # module is this step's copy
    return module, state

  @jax.jit
  def generator_step(model, state, select):
    def objective(m):
      _, out = tl.generator_loss(m, images, step=0, discriminator=disc, lpips=lpips,
                                 weights=weights)
      return jnp.dot(select, jnp.stack([out["metrics"][k] for k in GENERATOR_TERMS])), out
    (_, out), grads = jax.value_and_grad(objective, has_aux=True)(model)
    model, state = apply(model, grads, state)
    return vq.record_usage(model, out["codebook_used"]), state, out

  @jax.jit
  def discriminator_step(disc, state, recon):
    (_, metrics), grads = jax.value_and_grad(tl.discriminator_loss, has_aux=True)(
        disc, images, recon, step=0, weights=weights)
    disc, state = apply(disc, grads, state)
    return disc, state, metrics

  for i, term in enumerate(GENERATOR_TERMS):
    model, state = start, opt.init(nnx.state(start, nnx.Param))
    history = []
    for _ in range(4):
      model, state, out = generator_step(model, state, jax.nn.one_hot(i, len(GENERATOR_TERMS)))
      history.append({k: float(v) for k, v in out["metrics"].items()})
    assert all(np.isfinite(v) for h in history for v in h.values()), history
    assert history[-1][term] < history[0][term], (term, [h[term] for h in history])
  assert history[0]["disc_weight"] == 0.5 and history[0]["disc_adaptive_weight"] > 0
  assert float(jnp.abs(model.quantize.codebook_used[...]).max()) > 0  # usage was recorded

  state, losses = opt.init(nnx.state(disc, nnx.Param)), []
  for _ in range(4):
    disc, state, metrics = discriminator_step(disc, state, out["reconstructions"])
    losses.append(float(metrics["disc_loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
