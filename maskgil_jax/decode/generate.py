"""From class labels to tokens with any of the three decoders, each one jitted call.

`generate_tokens` picks MAR, AR or hybrid by name (static, so each is its own compiled program,
reused for every batch of the same shape and structure); `sample_grid` is the trainer's
periodic look at what the model draws.
"""
from __future__ import annotations

import functools

import jax

from maskgil_jax.decode import ar, hybrid, mar
from maskgil_jax.decode.images import tokens_to_images
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


def method_for(config) -> str:
  """The decoder a training config's model is meant for: AR for the `ar` objective, else MAR."""
  return "ar" if config.objective.name == "ar" else "mar"


def sample_grid(model, tokenizer, labels, key, config):
  """uint8 images [N, H, W, 3] for labels [N], decoded as `config.decode` says with the
  decoder that fits `config.objective` (the trainer's periodic samples)."""
  settings = DecodeSettings.from_config(config.decode)
  tokens = generate_tokens(model, labels, key, settings, method_for(config))
  return tokens_to_images(tokenizer, tokens)
