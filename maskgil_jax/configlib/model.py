"""Transformer presets: the GPT sizes (LlamaGen's, and the code's GPT_1B) and the token layouts."""
from __future__ import annotations

import ml_collections

# name: (n_layer, n_head, dim). head_dim is 64 for every released size.
MODEL_SIZES = {
    "B": (12, 12, 768),
    "L": (24, 16, 1024),
    "XL": (36, 20, 1280),
    "XXL": (48, 24, 1536),  # 1.4B, the paper's largest class model (configs/maskgil_1b.py)
    # The public MaskGIL/LlamaGen code's GPT_1B, a different model: 22 layers, width 2048 (32
    # heads of 64), listed there among the text-conditional sizes; 1.2B parameters. Not the
    # class-conditional XXL that configs/maskgil_1b.py trains (docs/reference.md).
    "GPT_1B": (22, 32, 2048),
    "tiny": (2, 4, 64),  # tests
    "demo": (4, 4, 128),  # the CPU demo (configs/demo.py)
}

# Block options each layout implies unless a config overrides them.
LAYOUTS = {
    # LlamaGen c2i: class token first, 2D RoPE with a zero row for the class token, pre-norm.
    "llamagen": dict(rope="2d", qk_norm=False, norm_placement="pre"),
    # synbol/MaskGIL public code: one table, class token last, 1D RoPE with zero row 0.
    "maskgil_reference": dict(rope="1d", qk_norm=False, norm_placement="pre"),
    # the paper's MaskGIL: 2D RoPE, QK-norm, post-norm, class prefix, MASK token.
    "maskgil": dict(rope="2d", qk_norm=True, norm_placement="post"),
}


def model_config(size: str = "B", layout: str = "maskgil") -> ml_collections.ConfigDict:
  if size not in MODEL_SIZES:
    raise ValueError(f"model size {size!r} unknown; known: {sorted(MODEL_SIZES)}")
  if layout not in LAYOUTS:
    raise ValueError(f"model layout {layout!r} unknown; known: {sorted(LAYOUTS)}")
  n_layer, n_head, dim = MODEL_SIZES[size]
  m = ml_collections.ConfigDict()
  m.size = size
  m.layout = layout
  m.n_layer = n_layer
  m.n_head = n_head
  m.n_kv_head = n_head  # grouped KV heads when smaller
  m.dim = dim
  m.multiple_of = 256  # SwiGLU hidden rounded up to this
  m.ffn_dim_multiplier = ml_collections.FieldReference(None, field_type=float)
  m.norm_eps = 1e-5
  m.rope_base = 10000.0
  m.codebook_size = 16384
  m.num_classes = 1000
  m.cls_token_num = 1  # condition slots: 1 class token, or the caption length (120, LlamaGen)
  m.condition = "class"  # 'class' (labels) or 'caption' (text-encoder features)
  m.caption_dim = 2048  # width of the caption features (FLAN-T5-XL); used by 'caption' only
  m.grid_size = 16  # image tokens per side (image_size / tokenizer downsampling)
  # LFQ codes as sub-tokens, Open-MAGVIT2's asymmetric factorization (models/factorized.py):
  # () = one flat table and head of codebook_size rows; (b0, b1) with 2^(b0 + b1) =
  # codebook_size = two tables and heads of 2^b0 and 2^b1 rows and `factorized_n_layer`
  # intra-position blocks (Open-MAGVIT2: (6, 12) for 2^18 codes, 2 blocks)
  m.token_factorization = ()
  m.factorized_n_layer = 2
  m.update(LAYOUTS[layout])
  m.token_dropout = 0.1
  m.resid_dropout = 0.1
  m.ffn_dropout = 0.1
  m.attn_dropout = 0.0
  m.init_std = 0.02
  m.dtype = "float32"  # compute dtype; accelerator configs use bfloat16
  m.param_dtype = "float32"
  m.scan_layers = True
  # cheapest recomputation that fits device memory, chosen by the trainer when it compiles
  # the step (training/remat_choice.py); or a policy of models/remat.py
  m.remat_policy = "auto"
  # attention kernel of full-sequence passes (configlib/attention.py, docs/performance.md):
  # 'auto' = cuDNN flash attention on NVIDIA GPUs, Pallas splash attention on TPUs, each where
  # dtype and shapes allow, XLA otherwise; 'xla', 'cudnn' or 'pallas' forces one (refused where
  # it cannot run). Cached decoding always runs XLA.
  m.attention_kernel = "auto"
  return m


def head_dim(m) -> int:
  return m.dim // m.n_head


def ffn_hidden_dim(m) -> int:
  """LlamaGen's SwiGLU width: round_up(int(2 * 4 * dim / 3) * multiplier, multiple_of)."""
  hidden = int(2 * 4 * m.dim / 3)
  if m.ffn_dim_multiplier is not None:
    hidden = int(m.ffn_dim_multiplier * hidden)
  return m.multiple_of * ((hidden + m.multiple_of - 1) // m.multiple_of)


def vocab_rows(m) -> tuple[int, int]:
  """(token-table rows, output classes) of a layout."""
  if m.layout == "maskgil_reference":
    return m.codebook_size + 1 + m.num_classes + 1, m.codebook_size + 1
  if m.layout == "maskgil":
    return m.codebook_size + 1, m.codebook_size  # codes + MASK in, codes out
  return m.codebook_size, m.codebook_size
