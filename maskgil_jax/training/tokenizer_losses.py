"""The tokenizer's training objective (LlamaGen `VQLoss`), as pure functions for `jax.jit`.

Generator step (differentiate with respect to the VQModel):
  loss = rec_w * rec + lpips_w * LPIPS + adaptive * adopt(disc_w, step) * (-mean D(recon))
         + codebook_w * vq_loss + commit_loss + entropy_loss
Discriminator step (differentiate with respect to the discriminator):
  loss = adopt(disc_w, step) * 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(recon)))
`adopt(w, step)` is 0 before `disc_start` and `w` from then on; `step` may be traced. The
adaptive weight (off by default, as in LlamaGen) is |d nll / d W| / (|d gan / d W| + 1e-4),
clipped to [0, 1e4] and not differentiated, with W the decoder's last conv kernel.

Use:
  weights = LossWeights.from_config(config.tokenizer.loss)
  lpips = build_lpips(config.tokenizer.loss)               # None (with a warning) if no file
  disc = build_discriminator(config.tokenizer.loss, nnx.Rngs(1))
  (loss, out), grads = jax.value_and_grad(generator_loss, has_aux=True)(
      model, images, step=step, discriminator=disc, lpips=lpips, weights=weights)
  model = record_usage(new_model, out["codebook_used"])    # models.vq
  d_loss, d_metrics = discriminator_loss(disc, images, out["reconstructions"], step=step,
                                         weights=weights)
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax.interop.vq_names import load_lpips
from maskgil_jax.models.discriminator import PatchGANDiscriminator
from maskgil_jax.models.lpips import LPIPS

log = logging.getLogger(__name__)

RECONSTRUCTIONS = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """`config.tokenizer.loss` as a hashable value (closed over by jitted steps)."""
  reconstruction: str = "l2"
  reconstruction_weight: float = 1.0
  perceptual_weight: float = 1.0
  codebook_weight: float = 1.0
  disc_weight: float = 0.5
  disc_start: int = 20000
  disc_adaptive_weight: bool = False

  @classmethod
  def from_config(cls, loss) -> "LossWeights":
    w = cls(**{f.name: loss[f.name] for f in dataclasses.fields(cls)})
    if w.reconstruction not in RECONSTRUCTIONS:
      raise ValueError(f"config.tokenizer.loss.reconstruction: {w.reconstruction!r}; one of "
                       f"{RECONSTRUCTIONS}")
    return w


def reconstruction_loss(x, y, kind: str = "l2"):
  """Mean squared ('l2') or absolute ('l1') pixel error."""
  d = x.astype(jnp.float32) - y.astype(jnp.float32)
  return jnp.mean(jnp.square(d)) if kind == "l2" else jnp.mean(jnp.abs(d))


def perceptual_loss(lpips: LPIPS | None, x, y):
  """Mean LPIPS distance; 0 when no LPIPS network was loaded."""
  if lpips is None:
    return jnp.zeros((), jnp.float32)
  return jnp.mean(lpips(x, y))


def hinge_d_loss(logits_real, logits_fake):
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake):
  return -jnp.mean(logits_fake)


def adopt_weight(weight: float, step, start: int):
  """`weight` from step `start` on, 0 before (the discriminator's warm-up)."""
  return jnp.where(jnp.asarray(step) >= start, weight, 0.0).astype(jnp.float32)


def discriminator_active(step, weights: "LossWeights"):
  """Whether the adversarial terms count at `step` (traced): from `disc_start`, with weight."""
  return (jnp.asarray(step) >= weights.disc_start) & (weights.disc_weight > 0)


def adaptive_weight(nll_grad, gan_grad):
  """|nll_grad| / (|gan_grad| + 1e-4) clipped to [0, 1e4], as a constant."""
  w = jnp.linalg.norm(nll_grad) / (jnp.linalg.norm(gan_grad) + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(w, 0.0, 1e4))


def generator_loss(model, images, *, step, discriminator: PatchGANDiscriminator,
                   lpips: LPIPS | None, weights: LossWeights, rng=None):
  """(loss, out) for the tokenizer update; `out` holds `metrics` (float32 scalars),
  `reconstructions` and the new `codebook_used` window. `rng` enables dropout."""
  rng_enc, rng_dec = (None, None) if rng is None else jax.random.split(rng)
  quant, aux = model.quantized(images, rng_enc)
  features = model.decode_features(quant, rng_dec)
  last = model.decoder.conv_out
  recon = last(features).astype(jnp.float32)

  def nll_of(r):
    rec = reconstruction_loss(images, r, weights.reconstruction)
    p = perceptual_loss(lpips, images, r)
    return weights.reconstruction_weight * rec + weights.perceptual_weight * p, (rec, p)

  def gan_of(r):
    return hinge_g_loss(discriminator(r))

  def adversarial(r):
    """(generator hinge loss, adaptive weight): the discriminator's part of the update."""
    gan = gan_of(r)
    if not weights.disc_adaptive_weight:
      return gan, jnp.ones((), jnp.float32)
    fixed_recon, fixed_features = jax.lax.stop_gradient(r), jax.lax.stop_gradient(features)
    _, pull = jax.vjp(lambda w: last(fixed_features, w).astype(jnp.float32), last.weight[...])
    nll_grad = pull(jax.grad(lambda x: nll_of(x)[0])(fixed_recon))[0]
    gan_grad = pull(jax.grad(gan_of)(fixed_recon))[0]
    return gan, adaptive_weight(nll_grad, gan_grad)

  nll, (rec, p) = nll_of(recon)
  disc_factor = adopt_weight(weights.disc_weight, step, weights.disc_start)
  # before `disc_start` the adversarial term has weight 0: skip the discriminator's forward and
  # backward passes at run time (lax.cond) instead of computing them to multiply by zero
  zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
  gan, d_weight = jax.lax.cond(discriminator_active(step, weights), adversarial,
                               lambda r: (zero, one), recon)
  loss = (nll + d_weight * disc_factor * gan + weights.codebook_weight * aux["vq_loss"]
          + aux["commit_loss"] + aux["entropy_loss"])
  metrics = dict(loss=loss, rec_loss=rec, perceptual_loss=p, gen_adv_loss=gan,
                 disc_adaptive_weight=d_weight, disc_weight=disc_factor)
  for k in ("vq_loss", "commit_loss", "entropy_loss", "codebook_usage", "batch_usage",
            "perplexity"):
    metrics[k] = aux[k]
  return loss, dict(metrics=metrics, reconstructions=recon, codebook_used=aux["codebook_used"])


def discriminator_loss(discriminator: PatchGANDiscriminator, images, reconstructions, *, step,
                       weights: LossWeights):
  """(loss, metrics) for the discriminator update; neither image batch is differentiated."""
  logits_real = discriminator(jax.lax.stop_gradient(images))
  logits_fake = discriminator(jax.lax.stop_gradient(reconstructions))
  disc_factor = adopt_weight(weights.disc_weight, step, weights.disc_start)
  loss = disc_factor * hinge_d_loss(logits_real, logits_fake)
  return loss, dict(disc_loss=loss, logits_real=jnp.mean(logits_real),
                    logits_fake=jnp.mean(logits_fake))


def build_discriminator(loss, rngs: nnx.Rngs) -> PatchGANDiscriminator:
  """The PatchGAN that `config.tokenizer.loss` describes (N(0, 0.02) init)."""
  return PatchGANDiscriminator(rngs=rngs, channels=loss.disc_channels, n_layers=loss.disc_layers)


def build_lpips(loss) -> LPIPS | None:
  """LPIPS from `config.tokenizer.loss.lpips_weights`, or None with a warning when the field is
  empty or the perceptual weight is 0 (the loss is then skipped, never downloaded)."""
  if loss.perceptual_weight == 0:
    return None
  if not loss.lpips_weights:
    log.warning("config.tokenizer.loss.lpips_weights is empty: the LPIPS perceptual loss is "
                "skipped (weight %s ignored). Give VGG16 + LPIPS weight files to enable it.",
                loss.perceptual_weight)
    return None
  return load_lpips(loss.lpips_weights)
