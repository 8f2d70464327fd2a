"""Tokenizer presets: LlamaGen VQ-16, the codebook-study variants, the LFQ tokenizer, and the
released tokenizers of the paper's tokenizer study (taming/MaskGIT VQGAN, Chameleon VQGAN,
Open-MAGVIT2; docs/reference.md section 10, docs/tokenizer.md for where the weights are).

The `tokenizer` section describes the network (read by `maskgil_jax.models.vq.VQModel`) and,
under `tokenizer.loss`, the training objective (read by `maskgil_jax.training.tokenizer_losses`;
defaults are LlamaGen's `vq_train.py`, docs/reference.md section 5).
"""
from __future__ import annotations

import dataclasses

import ml_collections

TOKENIZER_PRESETS = {
    # LlamaGen VQ-16: 256px -> 16x16 codes, 16384 x 8 L2-normalised codebook.
    "vq16": dict(kind="vq", ch=128, ch_mult=(1, 1, 2, 2, 4), z_channels=256,
                 codebook_size=16384, codebook_dim=8),
    # tiny model for tests: 32px -> 16x16 (one downsampling), 64 x 4 codebook.
    "tiny": dict(kind="vq", ch=64, ch_mult=(1, 2), z_channels=64, codebook_size=64,
                 codebook_dim=4),
    # codebook study: the VQ-16 network with 1,024 / 8,192 / 262,144 codes of dimension 8.
    "vq16_c1024": dict(kind="vq", codebook_size=1024),
    "vq16_c8192": dict(kind="vq", codebook_size=8192),
    "vq16_c262144": dict(kind="vq", codebook_size=262144),
    # lookup-free (Open-MAGVIT2 style): 18 binary latents = 2^18 codes, entropy loss 0.1.
    "lfq18": dict(kind="lfq", codebook_size=2 ** 18, codebook_dim=18, l2_norm=False,
                  entropy_loss=0.1),
    # tiny lookup-free model for tests: 6 bits = 64 codes.
    "tiny_lfq": dict(kind="lfq", ch=64, ch_mult=(1, 2), z_channels=64, codebook_size=64,
                     codebook_dim=6, l2_norm=False, entropy_loss=0.1),
    # taming VQGAN f16, 1,024 x 256 codes, attention at 16x16 (MaskGIT-pytorch's ImageNet
    # tokenizer, the public MaskGIL code's): taming's num_res_blocks=2 is 2 encoder / 3 decoder
    "maskgit_vqgan": dict(kind="taming", ch=128, ch_mult=(1, 1, 2, 2, 4), enc_res_blocks=2,
                          dec_res_blocks=3, z_channels=256, codebook_size=1024,
                          codebook_dim=256, l2_norm=False, resolution=256,
                          attn_resolutions=(16,)),
    # Chameleon's VQGAN: f16, 8,192 x 256 codes, no attention outside the middle, 512 px
    "chameleon_vqgan": dict(kind="taming", ch=128, ch_mult=(1, 1, 2, 2, 4), enc_res_blocks=2,
                            dec_res_blocks=3, z_channels=256, codebook_size=8192,
                            codebook_dim=256, l2_norm=False, resolution=512,
                            attn_resolutions=()),
    # Open-MAGVIT2 ImageNet 256 (f16): 18 lookup-free bits = 262,144 codes, 4 res blocks
    "open_magvit2": dict(kind="magvit2", ch=128, ch_mult=(1, 1, 2, 2, 4), enc_res_blocks=4,
                         dec_res_blocks=4, z_channels=18, codebook_size=2 ** 18,
                         codebook_dim=18, l2_norm=False, entropy_loss=0.1),
    # the tiny reference fixtures of the three families (tests, `vq compare` smoke runs)
    "tiny_taming": dict(kind="taming", ch=32, ch_mult=(1, 1, 2), enc_res_blocks=1,
                        dec_res_blocks=2, z_channels=16, codebook_size=64, codebook_dim=8,
                        l2_norm=False, resolution=32, attn_resolutions=(8,)),
    "tiny_chameleon": dict(kind="taming", ch=32, ch_mult=(1, 2, 2), enc_res_blocks=1,
                           dec_res_blocks=2, z_channels=16, codebook_size=128, codebook_dim=8,
                           l2_norm=False, resolution=32, attn_resolutions=()),
    "tiny_magvit2": dict(kind="magvit2", ch=32, ch_mult=(1, 2, 2), enc_res_blocks=1,
                         dec_res_blocks=1, z_channels=10, codebook_size=1024, codebook_dim=10,
                         l2_norm=False, entropy_loss=0.1),
}


@dataclasses.dataclass(frozen=True)
class Release:
  """A released tokenizer and every name it goes by, in one row."""
  study: str  # configs/tokenizer_study.py:GENERATOR,<study>
  preset: str  # the config.tokenizer preset of its network (TOKENIZER_PRESETS)
  kind: str  # config.tokenizer.kind of that network
  keys: str  # the key family of its files (interop/tokenizer_names: llamagen, taming, magvit2)
  convert: str  # `python -m maskgil_jax.convert --kind`
  export: str  # `python -m maskgil_jax.export --layout`


# the one table of tokenizer family names (configs, convert, export and the study read it)
RELEASES = (
    Release("vq16", "vq16", "vq", "llamagen", "vq16", "llamagen"),
    Release("maskgit", "maskgit_vqgan", "taming", "taming", "taming-vqgan", "taming"),
    Release("chameleon", "chameleon_vqgan", "taming", "taming", "chameleon-vqgan", "taming"),
    Release("magvit2", "open_magvit2", "magvit2", "magvit2", "open-magvit2", "open-magvit2"),
)


def tokenizer_loss_config() -> ml_collections.ConfigDict:
  """Weights of the tokenizer objective (LlamaGen defaults)."""
  l = ml_collections.ConfigDict()
  l.reconstruction = "l2"  # 'l2' or 'l1'
  l.reconstruction_weight = 1.0
  l.perceptual_weight = 1.0  # LPIPS; skipped with a warning when lpips_weights is empty
  l.lpips_weights = ""  # comma-separated .pt/.safetensors files holding VGG16 + LPIPS heads
  l.codebook_weight = 1.0  # multiplies the quantizer's vq_loss
  l.disc_weight = 0.5
  l.disc_start = 20000  # generator and discriminator adversarial terms are 0 before this step
  l.disc_adaptive_weight = False  # scale the generator term by |grad nll| / |grad gan|
  l.disc_channels = 64
  l.disc_layers = 3
  return l


def tokenizer_config(name: str = "vq16") -> ml_collections.ConfigDict:
  if name not in TOKENIZER_PRESETS:
    raise ValueError(f"tokenizer preset {name!r} unknown; known: {sorted(TOKENIZER_PRESETS)}")
  t = ml_collections.ConfigDict()
  t.preset = name
  t.kind = "vq"  # 'vq' | 'lfq' (LlamaGen network) | 'taming' (VQGAN) | 'magvit2' (Open-MAGVIT2)
  t.ch = 128
  t.ch_mult = (1, 1, 2, 2, 4)
  t.enc_res_blocks = 2
  t.dec_res_blocks = 3
  t.z_channels = 256
  t.dropout = 0.0
  t.codebook_size = 16384
  t.codebook_dim = 8
  t.l2_norm = True
  t.commit_beta = 0.25
  t.entropy_loss = 0.0  # weight of (sample entropy - codebook entropy)
  t.entropy_temperature = 0.01
  t.entropy_sample_weight = 1.0
  t.entropy_batch_weight = 1.0
  t.search_chunk = 4096  # codebook rows per nearest-neighbour / entropy chunk
  t.dtype = "float32"  # compute dtype of the convolutions; quantisation is always float32
  t.param_dtype = "float32"
  t.resolution = 256  # taming: attention goes to levels whose side resolution / 2**level is
  t.attn_resolutions = ()  # listed here (the middle always has attention)
  t.remat = False  # recompute each res/attn block in the backward pass (saves activations)
  t.ckpt = ""  # weights to load: a LlamaGen .pt / .safetensors or one of our checkpoints
  t.loss = tokenizer_loss_config()
  t.update(TOKENIZER_PRESETS[name])
  return t
