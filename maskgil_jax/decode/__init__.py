"""Decoders over the one transformer: MAR confidence masking, AR with a KV cache, and hybrid.

  schedules.py  mask schedules (shared with MAR training)
  sampling.py   DecodeSettings, classifier-free guidance, temperature / top-k / top-p sampling
  mar.py        MAR loop        ar.py   AR prefill + scan        hybrid.py   AR then MAR
  generate.py   any decoder by name, the trainer's `sample_grid`
  images.py     tokens to uint8 images on the device, image grids as PNG
"""
from maskgil_jax.decode.generate import METHODS, generate_tokens, sample_grid
from maskgil_jax.decode.images import captioned_grid, image_grid, tokens_to_images, write_png
from maskgil_jax.decode.sampling import DecodeSettings

__all__ = ["DecodeSettings", "METHODS", "captioned_grid", "generate_tokens", "image_grid", "sample_grid",
           "tokens_to_images", "write_png"]
