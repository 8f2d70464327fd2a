"""The attention kernels by name (`config.model.attention_kernel`) and what each needs of the
config alone.

These are the requirements a config can be checked against before anything is built (dtype,
head dim, attention dropout), so `finalize` refuses an explicit choice that can never run; the
platform and sequence-length checks need the running devices and the call's shapes and happen
at trace time, in `models/attention_kernels.py`, which applies this same rule again with the
actual values.
"""
from __future__ import annotations

# 'auto': cuDNN flash attention on NVIDIA GPUs, Pallas splash attention on TPUs, each where the
# dtype and shapes allow, XLA otherwise (always on CPU); the others force one kernel.
KERNELS = ("auto", "xla", "cudnn", "pallas")

# jax 0.10's cuDNN attention (jax._src.cudnn.fused_attention_stablehlo.check_layout and
# check_is_flash_attention): fp16/bf16 inputs (fp8 has its own entry point), head dim a multiple
# of 8 and at most 256 on Hopper or newer, 128 before.
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 256


def static_refusal(kernel: str, dtype: str, head_dim: int, attn_dropout: bool,
                   max_head_dim: int = CUDNN_MAX_HEAD_DIM) -> str | None:
  """Why `kernel` cannot run a model of this compute dtype and head dim, or None.

  Attention dropout needs the attention probabilities themselves, which only the explicit XLA
  path (models/attention.py) forms; the fused kernels never materialise them.
  """
  if kernel in ("cudnn", "pallas") and attn_dropout:
    return "attention dropout needs the explicit XLA path (set model.attn_dropout=0)"
  if kernel == "cudnn":
    if dtype not in CUDNN_DTYPES:
      return f"cuDNN flash attention needs float16 or bfloat16 activations, not {dtype}"
    if head_dim % 8 or head_dim > max_head_dim:
      return (f"cuDNN flash attention needs a head dim that is a multiple of 8 and at most "
              f"{max_head_dim}, not {head_dim}")
  return None
