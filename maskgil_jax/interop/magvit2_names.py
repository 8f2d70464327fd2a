"""Open-MAGVIT2's name table (`improved_model.Encoder/Decoder`; LFQ has no weights).

Our paths are its state-dict keys (models/magvit2.py), so each Rule pairs a key with itself, in
its registration order. Res-block convolutions carry no bias; the adaptive norms' `gamma` and
`beta` are torch Linears (transposed).
"""
from __future__ import annotations

from maskgil_jax.interop.vq_names import conv_keys, norm_keys


def _resblock(prefix: str, in_ch: int, out_ch: int) -> list[tuple[str, str]]:
  keys = (norm_keys(f"{prefix}.norm1") + norm_keys(f"{prefix}.norm2")
          + [(f"{prefix}.conv1.weight", "conv"), (f"{prefix}.conv2.weight", "conv")])
  return keys + ([(f"{prefix}.nin_shortcut.weight", "conv")] if in_ch != out_ch else [])


def _linear(prefix: str) -> list[tuple[str, str]]:
  return [(f"{prefix}.weight", "linear"), (f"{prefix}.bias", "copy")]


def state_dict_layout(s) -> list[tuple[str, str]]:
  """[(key, transform)] of Open-MAGVIT2's encoder and decoder weights."""
  n = len(s.ch_mult)
  top = s.ch * s.ch_mult[-1]
  keys, block_in = [("encoder.conv_in.weight", "conv")], s.ch
  for level in range(n):
    out = s.ch * s.ch_mult[level]
    for j in range(s.enc_res_blocks):
      keys += _resblock(f"encoder.down.{level}.block.{j}", block_in, out)
      block_in = out
    if level != n - 1:
      keys += conv_keys(f"encoder.down.{level}.downsample")
  keys += sum((_resblock(f"encoder.mid_block.{j}", top, top) for j in range(s.enc_res_blocks)), [])
  keys += norm_keys("encoder.norm_out") + conv_keys("encoder.conv_out")
  keys += conv_keys("decoder.conv_in")
  keys += sum((_resblock(f"decoder.mid_block.{j}", top, top) for j in range(s.dec_res_blocks)), [])
  level_in, block_in = {}, top
  for level in reversed(range(n)):
    level_in[level] = block_in
    block_in = s.ch * s.ch_mult[level]
  for level in range(n):
    block_in, out = level_in[level], s.ch * s.ch_mult[level]
    for j in range(s.dec_res_blocks):
      keys += _resblock(f"decoder.up.{level}.block.{j}", block_in, out)
      block_in = out
    if level:
      keys += conv_keys(f"decoder.up.{level}.upsample.conv1")
  for level in range(n):
    keys += _linear(f"decoder.adaptive.{level}.gamma") + _linear(f"decoder.adaptive.{level}.beta")
  return keys + norm_keys("decoder.norm_out") + conv_keys("decoder.conv_out")
