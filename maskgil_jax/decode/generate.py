"""From class labels to tokens and images with any of the three decoders, each one jitted call.

`generate_tokens` picks MAR, AR or hybrid by name (static, so each is its own compiled program,
reused for every batch of the same shape and structure); `tokens_to_images` runs the tokenizer's
decoder and converts to uint8 on the device (a quarter of the bytes to copy back);
`sample_grid` is the trainer's periodic look at what the model draws.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from maskgil_jax.decode import ar, hybrid, mar
from maskgil_jax.decode.sampling import DecodeSettings

METHODS = ("mar", "ar", "hybrid")


@functools.partial(jax.jit, static_argnames=("method",))
def generate_tokens(model, labels, key, settings: DecodeSettings, method: str, ar_model=None):
  """int32 tokens [B, L] for labels [B] (`key`: one key, or one per sample). `ar_model` is
  the AR half of a two-model hybrid (default: `model` does both)."""
  if method == "mar":
    return mar.generate(model, labels, key, settings).tokens
  if method == "ar":
    return ar.generate(model, labels, key, settings).tokens
  if method == "hybrid":
    return hybrid.generate(model if ar_model is None else ar_model, model, labels, key,
                           settings).tokens
  raise ValueError(f"decode method {method!r}; one of {METHODS}")


def to_uint8(images):
  """[-1, 1] float images -> uint8: round((x + 1) * 127.5), clipped (the tokenizer's inverse)."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@jax.jit
def tokens_to_images(tokenizer, tokens):
  """uint8 images [B, H, W, 3] of tokens [B, L] (raster order of a square grid)."""
  side = int(round(tokens.shape[1] ** 0.5))
  return to_uint8(tokenizer.decode_code(tokens.reshape(tokens.shape[0], side, side)))


def method_for(config) -> str:
  """The decoder a training config's model is meant for: AR for the `ar` objective, else MAR."""
  return "ar" if config.objective.name == "ar" else "mar"


def sample_grid(model, tokenizer, labels, key, config):
  """uint8 images [N, H, W, 3] for labels [N], decoded as `config.decode` says with the
  decoder that fits `config.objective` (the trainer's periodic samples)."""
  settings = DecodeSettings.from_config(config.decode)
  tokens = generate_tokens(model, labels, key, settings, method_for(config))
  return tokens_to_images(tokenizer, tokens)
