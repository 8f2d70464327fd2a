"""FLOPs per train step and per-chip peaks, for TFLOP/s per device and MFU.

The transformer count is analytic (model FLOPs, as in PaLM's MFU): 2 FLOPs per multiply-add of
every matmul, the forward pass counted once and the backward pass twice (x3 in all), remat
recomputation and the frozen tokenizer's encoding not counted. Attention scores and the
weighted sum add 4 * S^2 * (heads * head_dim) per layer and sequence; a bidirectional
(MAR) sequence attends to all S positions so nothing is halved, a causal (AR) one does half of
that useful work. The tokenizer task, a conv net, is counted by XLA instead
(`compiled_flops`).
"""
from __future__ import annotations

import jax

from maskgil_jax.parallel.chips import PEAK_TFLOPS, peak_tflops  # noqa: F401 (one table)
from maskgil_jax.configlib.model import ffn_hidden_dim, vocab_rows
from maskgil_jax.models.layouts import Layout

# Dense bf16 peak TFLOP/s of one JAX device (a TPU v2/v3 device is one core, half a chip).
# Matched as a substring of `device_kind`, lower-cased, most specific first.
def sequence_length(m, objective: str) -> int:
  """Positions the trained forward pass runs over: the full layout sequence for MAR; for AR
  the prefix plus all image tokens but the last (teacher forcing)."""
  layout = Layout.from_config(m)
  return layout.seq_len if objective == "mar" else layout.prefix_len + layout.num_image_tokens - 1


def transformer_forward_flops(m, seq_len: int, causal: bool) -> float:
  """Forward FLOPs of one sequence through the model described by config.model `m`."""
  head_dim = m.dim // m.n_head
  q_dim = m.n_head * head_dim
  qkv_dim = (m.n_head + 2 * m.n_kv_head) * head_dim
  per_token_layer = m.dim * qkv_dim + q_dim * m.dim + 3 * m.dim * ffn_hidden_dim(m)
  head = m.dim * vocab_rows(m)[1]
  bits = tuple(m.get("token_factorization", ()) or ())
  if bits:  # factorized tokens: two small heads, and the intra blocks over two slots per
    # position (models/factorized.py; their two-slot attention is negligible)
    head = m.dim * sum(2 ** b for b in bits) + 2 * m.factorized_n_layer * per_token_layer
  matmuls = 2.0 * seq_len * (m.n_layer * per_token_layer + head)
  attention = 4.0 * seq_len * seq_len * q_dim * m.n_layer * (0.5 if causal else 1.0)
  return matmuls + attention


def generator_step_flops(config) -> float:
  """Model FLOPs of one optimizer step over the global batch (forward + backward = 3x)."""
  def per_example(objective):
    seq = sequence_length(config.model, objective)
    return transformer_forward_flops(config.model, seq, objective == "ar")

  if config.objective.name == "joint":  # round(f * B) rows run causal, the rest bidirectional
    n_ar = round(config.objective.ar_fraction * config.batch_size)
    return 3.0 * (n_ar * per_example("ar") + (config.batch_size - n_ar) * per_example("mar"))
  return 3.0 * config.batch_size * per_example(config.objective.name)


def compiled_flops(compiled) -> float | None:
  """FLOPs XLA counts in a compiled program (per device for a partitioned one), if it does."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def device_kind() -> str:
  return jax.devices()[0].device_kind
