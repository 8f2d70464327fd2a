"""The tokenizer's name table: our VQModel <-> LlamaGen's `VQModel.state_dict()`.

Our attribute paths are LlamaGen's keys, so every Rule pairs a path with itself; conv kernels
use the 'conv' transform (HWIO <-> OIHW), everything else is copied. The table is written out
from the architecture in PyTorch's registration order, so an export lists its keys exactly as
`torch.save(model.state_dict())` does.

The buffer `quantize.codebook_used` (a rolling window of the last 65,536 code indices) is not a
parameter: ours is a `CodebookUsage` Variable, which `names.import_state_dict` and
`names.export_state_dict` (Params only) do not see. `vq_rules` therefore lists parameters only,
and `import_vq_state_dict` / `export_vq_state_dict` carry the buffer beside them under
`BUFFER_KEY`. It is required on import, like every other key.

The frozen LPIPS network of the tokenizer loss has its table here too (`load_lpips`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax.interop.names import Rule, export_state_dict, import_state_dict
from maskgil_jax.interop.torch_io import CheckpointError, load_state_dict
from maskgil_jax.models.lpips import LPIPS, VGG16_SLICES, VGG16_WIDTHS
from maskgil_jax.models.quantizers import USAGE_WINDOW
from maskgil_jax.models.vq import TokenizerSpec, VQModel, record_usage

BUFFER_KEY = "quantize.codebook_used"


def conv_keys(prefix: str) -> list[tuple[str, str]]:
  return [(f"{prefix}.weight", "conv"), (f"{prefix}.bias", "copy")]


def norm_keys(prefix: str) -> list[tuple[str, str]]:
  return [(f"{prefix}.weight", "copy"), (f"{prefix}.bias", "copy")]


def resnet_keys(prefix: str, in_ch: int, out_ch: int) -> list[tuple[str, str]]:
  keys = (norm_keys(f"{prefix}.norm1") + conv_keys(f"{prefix}.conv1") + norm_keys(f"{prefix}.norm2")
          + conv_keys(f"{prefix}.conv2"))
  return keys + (conv_keys(f"{prefix}.nin_shortcut") if in_ch != out_ch else [])


def attn_keys(prefix: str) -> list[tuple[str, str]]:
  convs = [conv_keys(f"{prefix}.{p}") for p in ("q", "k", "v", "proj_out")]
  return norm_keys(f"{prefix}.norm") + sum(convs, [])


def _mid(prefix: str, ch: int) -> list[tuple[str, str]]:
  return resnet_keys(f"{prefix}.0", ch, ch) + attn_keys(f"{prefix}.1") + resnet_keys(f"{prefix}.2", ch, ch)


def _levels(prefix: str, s: TokenizerSpec, levels, block_in: int, n_res: int, attn_at: int,
            resample: str, no_resample_at: int):
  keys = []
  for k, level in enumerate(levels):
    out = s.ch * s.ch_mult[level]
    p = f"{prefix}.conv_blocks.{k}"
    for j in range(n_res):
      keys += resnet_keys(f"{p}.res.{j}", block_in, out)
      block_in = out
    if k == attn_at:
      keys += sum((attn_keys(f"{p}.attn.{j}") for j in range(n_res)), [])
    if k != no_resample_at:
      keys += conv_keys(f"{p}.{resample}.conv")
  return keys, block_in


def state_dict_layout(s: TokenizerSpec) -> list[tuple[str, str]]:
  """[(key, transform)] of LlamaGen's state dict in registration order; the buffer's
  transform is 'buffer'."""
  n = len(s.ch_mult)
  top = s.ch * s.ch_mult[-1]
  enc_levels, _ = _levels("encoder", s, range(n), s.ch, s.enc_res_blocks, n - 1, "downsample",
                          n - 1)
  encoder = (conv_keys("encoder.conv_in") + enc_levels + _mid("encoder.mid", top)
             + norm_keys("encoder.norm_out") + conv_keys("encoder.conv_out"))
  dec_levels, dec_out = _levels("decoder", s, reversed(range(n)), top, s.dec_res_blocks, 0,
                                "upsample", n - 1)
  decoder = (conv_keys("decoder.conv_in") + _mid("decoder.mid", top) + dec_levels
             + norm_keys("decoder.norm_out") + conv_keys("decoder.conv_out"))
  # a module's own buffers come before its children's parameters in a torch state dict
  quantize = [(BUFFER_KEY, "buffer")] + ([("quantize.embedding.weight", "copy")]
                                         if s.kind == "vq" else [])
  return encoder + decoder + quantize + conv_keys("quant_conv") + conv_keys("post_quant_conv")


def _spec(model_or_config) -> TokenizerSpec:
  if isinstance(model_or_config, VQModel):
    return model_or_config.spec
  return TokenizerSpec.from_config(model_or_config)


def vq_rules(model_or_config) -> list[Rule]:
  """The parameter Rules of a VQModel (or of the model a tokenizer config describes)."""
  return [Rule(key, key, transform) for key, transform in state_dict_layout(_spec(model_or_config))
          if transform != "buffer"]


def _check_kind(state_dict, source: str) -> None:
  """A clear error for a checkpoint of another model (a GPT, a discriminator, ...)."""
  if not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
    first = ", ".join(sorted(state_dict)[:5]) or "none"
    raise CheckpointError(f"{source}: not a VQ tokenizer checkpoint: it has no encoder.* or "
                          f"decoder.* keys (first keys: {first})")


def import_vq_state_dict(model: VQModel, state_dict, *, source: str = "checkpoint") -> VQModel:
  """A copy of `model` (concrete or abstract) holding the weights and usage buffer of a
  LlamaGen-layout state dict; every key and shape is checked first."""
  _check_kind(state_dict, source)
  buffer = state_dict.get(BUFFER_KEY)
  buffer_problem = None
  if buffer is None:
    buffer_problem = f"missing {BUFFER_KEY} [{USAGE_WINDOW}] (ours: {BUFFER_KEY})"
  elif np.shape(buffer) != (USAGE_WINDOW,):
    buffer_problem = (f"mis-shaped {BUFFER_KEY}: file {list(np.shape(buffer))}, expected "
                      f"[{USAGE_WINDOW}]")
  try:
    new = import_state_dict(model, state_dict, vq_rules(model), source=source, ignore=[BUFFER_KEY])
  except CheckpointError as e:
    if buffer_problem:
      raise CheckpointError(f"{e}\n  {buffer_problem}") from e
    raise
  if buffer_problem:
    raise CheckpointError(f"{source}: does not fit this model (1 problem):\n  {buffer_problem}")
  # `new` shares its non-parameter Variables with `model`: set the buffer on a copy
  return record_usage(new, jnp.asarray(buffer, jnp.float32))


def export_vq_state_dict(model: VQModel) -> dict[str, np.ndarray]:
  """{LlamaGen key: float32 array in PyTorch layout}, buffer included, in registration order."""
  params = export_state_dict(model, vq_rules(model))
  buffer = np.asarray(model.quantize.codebook_used[...], np.float32)
  return {key: buffer if transform == "buffer" else params[key]
          for key, transform in state_dict_layout(model.spec)}


# --- LPIPS -------------------------------------------------------------------------------------

# LPIPS constants and torchvision's classifier head are in some files but are not weights we use.
_LPIPS_IGNORED = re.compile(r"^(scaling_layer\.|classifier\.)")
_VGG_SLICE = {i: s for s, indices in enumerate(VGG16_SLICES, start=1) for i in indices}


def lpips_rules(widths=VGG16_WIDTHS) -> list[Rule]:
  rules = []
  for s, indices in enumerate(VGG16_SLICES, start=1):
    for i in indices:
      key = f"net.slice{s}.{i}"
      rules += [Rule(f"{key}.weight", f"{key}.weight", "conv"),
                Rule(f"{key}.bias", f"{key}.bias", "copy")]
  return rules + [Rule(f"lin{k}.model.1.weight", f"lin{k}.model.1.weight", "conv")
                  for k in range(len(widths))]


def _lpips_key(key: str) -> str:
  """torchvision `vgg16().features.{i}.*` -> LPIPS `net.slice{s}.{i}.*`; other keys as they are."""
  m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
  if m and int(m.group(1)) in _VGG_SLICE:
    return f"net.slice{_VGG_SLICE[int(m.group(1))]}.{m.group(1)}.{m.group(2)}"
  return key


def load_lpips(paths: str | Sequence[str], widths=VGG16_WIDTHS) -> LPIPS:
  """LPIPS with weights merged from one or more files: e.g. torchvision's
  `vgg16-397923af.pth` (VGG16, `features.*` keys) plus the LPIPS heads `vgg.pth`
  (`lin{k}.model.1.weight`), or one file holding a whole LPIPS state dict. `paths` is a list or
  a comma-separated string. Every VGG and head weight must be present exactly once."""
  if isinstance(paths, str):
    paths = [p.strip() for p in paths.split(",") if p.strip()]
  if not paths:
    raise CheckpointError("LPIPS: no weight files given")
  merged, origin = {}, {}
  for path in paths:
    for key, value in load_state_dict(path).items():
      if _LPIPS_IGNORED.match(key):
        continue
      key = _lpips_key(key)
      if key in merged:
        raise CheckpointError(f"LPIPS: {key} is in both {origin[key]} and {path}")
      merged[key], origin[key] = value, path
  abstract = nnx.eval_shape(lambda: LPIPS(rngs=nnx.Rngs(0), widths=widths))
  return import_state_dict(abstract, merged, lpips_rules(widths),
                           source=" + ".join(map(str, paths)))
