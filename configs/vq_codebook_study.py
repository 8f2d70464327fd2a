"""The codebook study: the VQ-16 network and recipe (configs/vq16.py) with another quantizer.

`get_config(variant)`, variant one of:
  1024, 8192, 16384, 262144   L2-normalised VQ with that many 8-dim codes (16384 = VQ-16);
                              262,144 codes are searched in chunks of tokenizer.search_chunk
  lfq                         lookup-free, 18 binary latents = 262,144 codes, entropy loss 0.1

  python -m maskgil_jax.train --config configs/vq_codebook_study.py:8192 --workdir WORKDIR \
      --config.tokenizer.loss.lpips_weights=vgg16-397923af.pth,vgg.pth

Afterwards the generator of that study point uses `model.codebook_size` set here.
"""
import importlib.util
import pathlib

VARIANTS = {"1024": "vq16_c1024", "8192": "vq16_c8192", "16384": "vq16",
            "262144": "vq16_c262144", "lfq": "lfq18"}


def _vq16_recipe():
  path = pathlib.Path(__file__).with_name("vq16.py")
  spec = importlib.util.spec_from_file_location("_maskgil_config_vq16", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant: str = "16384"):
  if variant not in VARIANTS:
    raise ValueError(f"codebook study variant {variant!r} unknown; one of {sorted(VARIANTS)}")
  return _vq16_recipe().get_config(VARIANTS[variant])
