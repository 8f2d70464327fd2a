"""The side-by-side benchmark's workloads: what each one runs, with which config, on every side.

Pure configuration (no JAX array, no torch tensor): the three sides (`jax_side.py`, ours;
`torch_side.py`, the PyTorch twin; `reference_side.py`, LlamaGen's own code) build their
models from these configs in their own processes, so all of them do the same work.
"""
from __future__ import annotations

import numpy as np

WORKLOADS = {
    "train": "MAR train step, batch 8 x 257, AdamW + clip",
    "mar": "MaskGIL sample, 4 images, 8 steps, guidance",
    "ar1": "LlamaGen AR, 256 tokens, 1 class, guidance",
    "ar4": "LlamaGen AR, 256 tokens, 4 classes, guidance",
    "vq": "VQ-16 encode + decode, 4 images 256 px",
}
# Workloads LlamaGen's reference code runs (it has no MaskGIL trainer or sampler).
REFERENCE_WORKLOADS = ("ar1", "ar4", "vq")

TRAIN_BATCH = 8
MAR_IMAGES, MAR_STEPS, MAR_CFG = 4, 8, 3.0
AR_CFG = 1.0  # our w; LlamaGen's cfg_scale is 1 + w
VQ_IMAGES = 4


def generator_config(size: str, layout: str, batch_size: int = TRAIN_BATCH):
  """fp32 generator config on one device: the MaskGIL recipe for MAR, LlamaGen's for AR."""
  from maskgil_jax import configlib
  from maskgil_jax.configlib import recipes
  c = recipes.maskgil(size) if layout == "maskgil_reference" else recipes.llamagen(size)
  c.model = configlib.model_config(size, layout).copy_and_resolve_references()
  c.model.dtype = "float32"
  if size == "tiny":  # a smoke run: 4 x 4 tokens (LlamaGen's VQ-16 at 64 px)
    c.data.image_size = 64
  # the twin and the reference in eval have no dropout: neither side drops (same work)
  c.model.token_dropout = c.model.resid_dropout = c.model.ffn_dropout = 0.0
  c.data.name = "codes"
  c.batch_size = batch_size
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  return configlib.finalize(c)


def vq_config(size: str):
  """(tokenizer config, image side): VQ-16 at 256 px; for the tiny size (a smoke run),
  LlamaGen's VQ network with one downsampling and 512 codes at 16 px (the reference code's
  encoder and decoder take no channel width, so the width stays 128)."""
  from maskgil_jax import configlib
  c = configlib.base_config("B", "maskgil", tokenizer="vq16")
  if size == "tiny":
    c.tokenizer.ch_mult = (1, 2)
    c.tokenizer.codebook_size = c.model.codebook_size = 512
    c.tokenizer.resolution = 16
  c = configlib.finalize(c)
  return c.tokenizer, int(c.tokenizer.resolution)


def workload_config(name: str, size: str):
  """The config a workload's generator is built from (`vq`: the tokenizer's, with the side)."""
  if name == "vq":
    return vq_config(size)
  return generator_config(size, "maskgil_reference" if name in ("train", "mar") else "llamagen")


def ar_classes(name: str) -> int:
  return {"ar1": 1, "ar4": 4}[name]


def train_batch(config):
  """The train workload's batch (numpy, seeded): codes [B, h, w] int32 and labels [B]."""
  rng = np.random.default_rng(0)
  g = config.model.grid_size
  codes = rng.integers(0, config.model.codebook_size, (config.batch_size, g, g), np.int32)
  labels = rng.integers(0, config.model.num_classes, (config.batch_size,), np.int32)
  return codes, labels


def vq_images(side: int) -> np.ndarray:
  """The VQ workload's images [N, side, side, 3] in [-1, 1] (numpy, seeded)."""
  rng = np.random.default_rng(0)
  return rng.uniform(-1.0, 1.0, (VQ_IMAGES, side, side, 3)).astype(np.float32)
