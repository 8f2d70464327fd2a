"""The full config tree every experiment file starts from.

Sections: model, tokenizer, data, objective, optim, mesh, decode, text, ckpt, log, plus `task`,
`seed`, `total_steps`, `batch_size`. One function per section so each stays short; the values
are LlamaGen / MaskGIL defaults (docs/reference.md section 5).
"""
from __future__ import annotations

import ml_collections

from maskgil_jax.configlib.model import model_config
from maskgil_jax.configlib.tokenizer import tokenizer_config


def data_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.name = "demo"  # 'imagenet2012' (TFDS), 'folder', 'codes', 'demo'; captions:
  #   'caption_folder', 'caption_jsonl', 'demo_captions', or TFDS with caption_key
  d.path = ""  # folder of class sub-folders, of code shards, of captioned images; a manifest
  d.caption_key = ""  # TFDS caption feature, e.g. 'captions/text' (coco_captions)
  d.text_features = ""  # pre-extracted T5 features (extract_text); '' = encode on the fly
  # aspect buckets: (height, width) pixel sizes, multiples of the tokenizer's downsampling;
  # empty = one square bucket of image_size
  d.buckets = ()
  d.tfds_data_dir = ""
  d.split = "train"
  d.image_size = 256
  d.fit = "center_crop"  # 'center_crop' (ADM/LlamaGen resize + centre crop) or 'pad' (small images)
  d.random_flip = True
  d.ten_crop = False  # LlamaGen ten-crop views of a crop_range-times larger centre crop
  d.crop_range = 1.1
  d.read_threads = 16  # grain reader threads per process (0 for in-memory data)
  d.num_workers = 0  # grain worker processes per host (0: read in the training process)
  d.prefetch = 2  # batches buffered ahead of the trainer
  return d


def objective_config() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "mar"  # 'mar' (masked tokens, bidirectional), 'ar' (next token, causal) or
  # 'joint' (both, one model: a share of every batch's examples is AR, the rest MAR)
  o.ar_fraction = 0.5  # joint: share of each batch's examples trained as AR
  o.mask_schedule = "arccos"  # arccos | cosine | linear | square
  o.label_drop = 0.1  # class label replaced by the null class, for CFG
  o.label_smoothing = 0.1
  o.loss_on = "all"  # 'all' positions (reference) or 'masked' only
  return o


def optim_config() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.lr = 1e-4
  o.schedule = "constant"  # 'constant' | 'warmup_cosine'
  o.warmup_steps = 0
  o.min_lr_ratio = 0.0
  o.b1 = 0.9
  o.b2 = 0.96
  o.eps = 1e-8
  o.weight_decay = 1e-5
  o.decay_matrices_only = False  # decay only weights with two or more (non-layer) axes
  o.grad_clip = 1.0  # global-norm clipping; 0 disables
  o.grad_accum = 1  # micro-batches per step (the batch is split, gradients are averaged)
  o.ema_decay = 0.0  # 0 disables the EMA of parameters
  return o


def mesh_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.data = -1  # -1 fills with the remaining devices
  m.fsdp = 1
  m.tensor = 1
  m.slices = 1  # multi-slice: the data axis spans slices (outermost)
  m.distributed = "auto"  # jax.distributed.initialize(): 'auto' (multi-process env), 'yes', 'no'
  m.local_devices = 0  # > 0: refuse to start unless each process drives this many devices
  m.heartbeat_timeout_s = 100  # a dead process makes the others stop after this long
  m.rules = ml_collections.ConfigDict()  # logical axis -> mesh axis overrides
  return m


def decode_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.steps = 8
  d.schedule = "arccos"
  d.cfg_scale = 3.0  # MaskGIL convention: (1 + w) * cond - w * uncond
  d.cfg_schedule = "linear"  # 'linear' ramp (reference) or 'constant'
  d.temperature = 1.0
  d.choice_temperature = 4.5
  d.top_k = 0
  d.top_p = 1.0
  d.ar_tokens = 128  # hybrid: tokens written by AR before MAR completes
  d.ar_cfg_scale = 1.0  # hybrid: the AR half's w (LlamaGen's recommended s = 2.0 is w = 1.0)
  d.ar_temperature = 1.0  # hybrid: the AR half's temperature
  d.hybrid_schedule = "spread"  # hybrid MAR half: 'spread', 'head' (reference) or 'tail'
  return d


def text_config() -> ml_collections.ConfigDict:
  """The text encoder of caption models (config.model.condition='caption')."""
  t = ml_collections.ConfigDict()
  t.encoder = ""  # a Hugging Face T5 folder (config.json, spiece.model, weights): FLAN-T5-XL
  t.max_length = 120  # T5 tokens per prompt, </s> included = the caption slots (LlamaGen: 120)
  t.dtype = "float32"  # the encoder's compute dtype
  return t


def ckpt_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.every_steps = 1000
  c.keep = 3
  c.init_from = ""  # an orbax checkpoint to initialise parameters from
  # accept a step without this process's data position, restarting the data stream from its
  # beginning (a deliberate choice, e.g. another process count); otherwise such a step counts
  # as damaged and the previous one is resumed
  c.restart_data = False
  return c


def log_config() -> ml_collections.ConfigDict:
  l = ml_collections.ConfigDict()
  l.every_steps = 50
  l.sample_every_steps = 0  # sample grids (PNG + TensorBoard); 0 disables
  l.sample_count = 16  # images per grid (classes spread evenly)
  l.peak_tflops = 0.0  # per-device peak for MFU; 0: look up the chip in training/flops.py
  return l


def base_config(size: str = "B", layout: str = "maskgil",
                tokenizer: str = "vq16") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "generator"  # 'generator' or 'tokenizer'
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 256
  c.model = model_config(size, layout)
  c.tokenizer = tokenizer_config(tokenizer)
  # the generator's vocabulary follows its tokenizer (the MASK id is codebook_size, and
  # finalize derives the grid from data.image_size and the tokenizer's downsampling)
  c.model.codebook_size = c.tokenizer.codebook_size
  c.data = data_config()
  c.objective = objective_config()
  c.optim = optim_config()
  c.mesh = mesh_config()
  c.decode = decode_config()
  c.text = text_config()
  c.ckpt = ckpt_config()
  c.log = log_config()
  return c
