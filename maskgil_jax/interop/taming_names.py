"""The taming-transformers VQGAN's name table (MaskGIT-pytorch's and Chameleon's tokenizers).

Our paths are taming's state-dict keys (models/taming.py), so each Rule pairs a key with
itself; the table lists them in taming's registration order (encoder, decoder, quantize,
quant_conv, post_quant_conv) so an export reads like the reference's `state_dict()`.
"""
from __future__ import annotations

from maskgil_jax.interop.vq_names import attn_keys, conv_keys, norm_keys, resnet_keys
from maskgil_jax.models.taming import has_attention


def _mid(prefix: str, ch: int) -> list[tuple[str, str]]:
  return (resnet_keys(f"{prefix}.block_1", ch, ch) + attn_keys(f"{prefix}.attn_1")
          + resnet_keys(f"{prefix}.block_2", ch, ch))


def _level(prefix: str, s, level: int, block_in: int, n_res: int, resample: str | None):
  out = s.ch * s.ch_mult[level]
  keys = []
  for j in range(n_res):
    keys += resnet_keys(f"{prefix}.block.{j}", block_in, out)
    block_in = out
  if has_attention(s, level):
    keys += sum((attn_keys(f"{prefix}.attn.{j}") for j in range(n_res)), [])
  if resample:
    keys += conv_keys(f"{prefix}.{resample}.conv")
  return keys


def state_dict_layout(s) -> list[tuple[str, str]]:
  """[(key, transform)] of taming's `VQModel.state_dict()` (network keys only)."""
  n = len(s.ch_mult)
  top = s.ch * s.ch_mult[-1]
  encoder, block_in = conv_keys("encoder.conv_in"), s.ch
  for level in range(n):
    encoder += _level(f"encoder.down.{level}", s, level, block_in, s.enc_res_blocks,
                      "downsample" if level != n - 1 else None)
    block_in = s.ch * s.ch_mult[level]
  encoder += _mid("encoder.mid", top) + norm_keys("encoder.norm_out") + conv_keys("encoder.conv_out")
  decoder_in = {}  # a decoder level's input width is the output of the level below it
  block_in = top
  for level in reversed(range(n)):
    decoder_in[level] = block_in
    block_in = s.ch * s.ch_mult[level]
  decoder = conv_keys("decoder.conv_in") + _mid("decoder.mid", top)
  for level in range(n):  # torch registers up.0 (full resolution) first
    decoder += _level(f"decoder.up.{level}", s, level, decoder_in[level], s.dec_res_blocks,
                      "upsample" if level else None)
  decoder += norm_keys("decoder.norm_out") + conv_keys("decoder.conv_out")
  return (encoder + decoder + [("quantize.embedding.weight", "copy")] + conv_keys("quant_conv")
          + conv_keys("post_quant_conv"))
