"""Decoders over the one transformer: MAR confidence masking, AR with a KV cache, and hybrid.

  schedules.py  mask schedules (shared with MAR training)
  sampling.py   DecodeSettings, classifier-free guidance, temperature / top-k / top-p sampling
  mar.py        MAR loop        ar.py   AR prefill + scan        hybrid.py   AR then MAR
  generate.py   any decoder by name, tokens to images, the trainer's `sample_grid`
"""
from maskgil_jax.decode.generate import METHODS, generate_tokens, sample_grid, tokens_to_images
from maskgil_jax.decode.sampling import DecodeSettings

__all__ = ["DecodeSettings", "METHODS", "generate_tokens", "sample_grid", "tokens_to_images"]
