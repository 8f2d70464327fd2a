"""Tokenizer presets: LlamaGen VQ-16 and the codebook-study variants."""
from __future__ import annotations

import ml_collections

TOKENIZER_PRESETS = {
    # LlamaGen VQ-16: 256px -> 16x16 codes, 16384 x 8 L2-normalised codebook.
    "vq16": dict(kind="vq", ch=128, ch_mult=(1, 1, 2, 2, 4), z_channels=256,
                 codebook_size=16384, codebook_dim=8),
    # tiny model for tests: 32px -> 16x16 (one downsampling), 64 x 4 codebook.
    "tiny": dict(kind="vq", ch=64, ch_mult=(1, 2), z_channels=64, codebook_size=64,
                 codebook_dim=4),
}


def tokenizer_config(name: str = "vq16") -> ml_collections.ConfigDict:
  if name not in TOKENIZER_PRESETS:
    raise ValueError(f"tokenizer preset {name!r} unknown; known: {sorted(TOKENIZER_PRESETS)}")
  t = ml_collections.ConfigDict()
  t.preset = name
  t.kind = "vq"  # 'vq' (L2-normalised nearest neighbour) or 'lfq' (lookup-free)
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
  t.entropy_loss = 0.0
  t.search_chunk = 4096  # codebook rows per nearest-neighbour chunk
  t.ckpt = ""  # weights to load: a LlamaGen .pt / .safetensors or one of our checkpoints
  t.update(TOKENIZER_PRESETS[name])
  return t
