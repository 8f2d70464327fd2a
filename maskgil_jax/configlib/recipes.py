"""Training recipes of the class-conditional ImageNet 256 generators (docs/reference.md section 5).

`maskgil(size)` is the MaskGIL recipe (MAR objective on the paper's block: 2D RoPE, QK-norm,
post-norm; images tokenized on the fly by a frozen VQ-16), `llamagen(size)` the LlamaGen AR
baseline (pre-extracted ten-crop codes). The experiment files in `configs/` are one call each,
so every number below is written once.
"""
from __future__ import annotations

import math

import ml_collections

from maskgil_jax.configlib.base import base_config
from maskgil_jax.configlib.finalize import ConfigError

IMAGENET_TRAIN_IMAGES = 1_281_167
EPOCHS = 300  # both papers train the generators for 300 epochs

# Parameter sharding per size: B and L fit replicated (pure data parallel); XL and XXL use
# FSDP over every device, as LlamaGen's XXL run does.
FSDP_SIZES = ("XL", "XXL")


def steps_for_epochs(epochs: int, batch_size: int, examples: int = IMAGENET_TRAIN_IMAGES) -> int:
  return math.ceil(epochs * examples / batch_size)


def _imagenet_generator(size: str, layout: str, batch_size: int,
                        tokenizer: str = "vq16") -> ml_collections.ConfigDict:
  """What both recipes share: ImageNet 256 through a tokenizer preset (VQ-16 in both papers;
  its codebook size sets the generator's vocabulary), bf16 compute on fp32 weights, clip 1.0,
  label drop 0.1 for classifier-free guidance, 300 epochs, the mesh for the size."""
  c = base_config(size, layout, tokenizer=tokenizer)
  c.batch_size = batch_size
  c.total_steps = steps_for_epochs(EPOCHS, batch_size)
  c.data.name = "imagenet2012"
  c.data.image_size = 256
  c.data.random_flip = True
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.objective.label_drop = 0.1
  c.optim.schedule = "constant"
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.0
  if size in FSDP_SIZES:
    c.mesh.data, c.mesh.fsdp = 1, -1
  c.ckpt.every_steps = 5000
  c.ckpt.keep = 3
  c.log.every_steps = 100
  c.log.sample_every_steps = 20000
  return c


def maskgil(size: str, tokenizer: str = "vq16") -> ml_collections.ConfigDict:
  """MaskGIL: AdamW lr 1e-4 constant, betas (0.9, 0.96), weight decay 1e-5 on every weight,
  batch 256, arccos mask ratio, label smoothing 0.1 over all 256 positions, no token dropout;
  images resized, centre-cropped and flipped, tokenized on the fly (set tokenizer.ckpt).

  Two departures from the reference code, with their reasons (docs/training.md):
  - token dropout: the reference configures 0.1 but its training code never applies it, so
    the models it reports were trained without; we set 0 to train what it trained;
  - crop: the reference resizes the short side to 256 and crops 256 at random; our image
    pipeline has the ADM/LlamaGen centre crop only (for ImageNet the random crop moves along
    the long side alone), so its crops are centred.
  """
  c = _imagenet_generator(size, "maskgil", batch_size=256, tokenizer=tokenizer)
  c.model.token_dropout = 0.0  # configured but never applied by the reference (see above)
  c.objective.name = "mar"
  c.objective.mask_schedule = "arccos"
  c.objective.label_smoothing = 0.1
  c.objective.loss_on = "all"
  c.optim.lr = 1e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.96
  c.optim.weight_decay = 1e-5
  c.optim.decay_matrices_only = False
  return c


# Ablations of the paper's block (docs/training.md "Block variants"): name -> config.model fields.
# '' is the paper's block itself (QK-norm, post-norm).
BLOCK_VARIANTS = {
    "": {},
    # no per-head RMSNorm of q and k: removes attention.q_norm / attention.k_norm of every layer
    "no_qknorm": dict(qk_norm=False),
    # LlamaGen's pre-norm: the same two norms per layer, moved onto the residual branch inputs
    "prenorm": dict(norm_placement="pre"),
}


def block_variant(c: ml_collections.ConfigDict, name: str = "") -> ml_collections.ConfigDict:
  """`c` (a generator config) with the block variant `name` of `BLOCK_VARIANTS` applied to its
  model, in place; returns `c`. Any size: the experiment files only pass their argument."""
  if name not in BLOCK_VARIANTS:
    raise ConfigError(f"block variant {name!r} unknown; one of "
                      f"{sorted(k for k in BLOCK_VARIANTS if k)} (or none for the paper's block)")
  c.model.update(BLOCK_VARIANTS[name])
  return c


def llamagen(size: str, tokenizer: str = "vq16") -> ml_collections.ConfigDict:
  """LlamaGen AR: AdamW lr 1e-4 (2e-4 for XL and XXL), betas (0.9, 0.95), weight decay 0.05 on
  matrices only, batch 256 (512 for XXL), plain cross-entropy on ten-crop + flip codes
  extracted once (`python -m maskgil_jax.extract_codes`; set data.path)."""
  c = _imagenet_generator(size, "llamagen", batch_size=512 if size == "XXL" else 256,
                          tokenizer=tokenizer)
  c.data.name = "codes"
  c.data.ten_crop = True
  c.objective.name = "ar"
  c.objective.label_smoothing = 0.0
  c.optim.lr = 2e-4 if size in ("XL", "XXL") else 1e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.05
  c.optim.decay_matrices_only = True
  # LlamaGen's recommended guidance s = 2.0 (B, L) / 1.75 (XL, XXL) is w = s - 1 here
  c.decode.cfg_scale = 0.75 if size in ("XL", "XXL") else 1.0
  c.decode.cfg_schedule = "constant"
  return c


def llamagen_t2i(size: str) -> ml_collections.ConfigDict:
  """LlamaGen's text-to-image GPT (docs/reference.md section 8): the LlamaGen AR model with a
  caption prefix of 120 FLAN-T5-XL features (2,048 wide) instead of the class token, stage 1
  at 256 px; lr 1e-4 (its `train_t2i.py`), caption drop 0.1. Guidance as its sampler:
  s = 7.5 (w = 6.5 here), top-k 1,000, temperature 1. Caption data comes with part 2; the
  config is for sampling and converting the released weights today."""
  c = llamagen(size)
  c.model.condition = "caption"
  c.model.caption_dim = 2048
  c.model.cls_token_num = c.text.max_length = 120
  c.optim.lr = 1e-4
  c.decode.cfg_scale = 6.5
  c.decode.top_k = 1000
  c.decode.temperature = 1.0
  c.log.sample_every_steps = 0  # the trainer's sample grids are class-conditional
  return c


# Aspect buckets of the text-to-image recipe: about the square's token count at each stage
# (16 px per token), landscape and portrait in pairs.
T2I_BUCKETS = {
    "256": ((256, 256), (224, 288), (288, 224), (208, 320), (320, 208)),
    "512": ((512, 512), (448, 576), (576, 448), (416, 640), (640, 416)),
}


def maskgil_t2i(size: str, stage: str = "256",
                tokenizer: str = "vq16") -> ml_collections.ConfigDict:
  """A text-conditional MaskGIL after the paper's (its choices and their sources:
  configs/maskgil_t2i_xl.py): the MaskGIL block and class recipe (MAR objective, AdamW
  lr 1e-4, betas (0.9, 0.96), weight decay 1e-5, arccos masks, label smoothing 0.1) with
  LlamaGen's caption prefix (120 FLAN-T5-XL slots, 2,048 wide; caption drop 0.1 for
  guidance), trained on image-caption data in aspect buckets around 256 px; stage '512'
  continues at 512 px buckets from a stage-1 checkpoint (`ckpt.init_from`), as LlamaGen's
  second text-to-image stage does. No random flip: a caption may say left or right (LlamaGen's
  `train_t2i.py` does not flip either); `--config.data.random_flip=True` asks for it."""
  if stage not in T2I_BUCKETS:
    raise ValueError(f"stage {stage!r}: one of {sorted(T2I_BUCKETS)}")
  c = maskgil(size, tokenizer)
  c.data.random_flip = False
  c.model.condition = "caption"
  c.model.caption_dim = 2048
  c.model.cls_token_num = c.text.max_length = 120
  c.data.name = "caption_jsonl"  # data.path: the manifest; or a TFDS set with caption_key
  c.data.image_size = int(stage)  # the square bucket; the model's own grid
  c.data.buckets = T2I_BUCKETS[stage]
  c.objective.label_drop = 0.1  # caption drop to the null caption
  c.total_steps = 400_000
  c.decode.cfg_scale = 6.5  # LlamaGen's sampler default s = 7.5, w = s - 1
  c.decode.cfg_schedule = "linear"
  c.log.sample_every_steps = 0  # the trainer's sample grids are class-conditional
  return c
