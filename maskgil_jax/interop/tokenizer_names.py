"""One front for every tokenizer family's name table: import, export and which keys of a
reference checkpoint are not network weights.

`config.tokenizer.kind` picks the table: 'vq' / 'lfq' are LlamaGen's (`vq_names`, with its
usage buffer), 'taming' is taming's VQGAN (`taming_names`), 'magvit2' is Open-MAGVIT2
(`magvit2_names`). The released taming, Chameleon and Open-MAGVIT2 files are PyTorch Lightning
checkpoints (`{"state_dict": sd, ...}`) whose state dict also holds the training loss
(`loss.*`: discriminator, LPIPS, logvar) and, for Open-MAGVIT2, the EMA copy of the network
(`model_ema.*`, LitEma's names: the key with its dots removed). Those are dropped by the rule
below, and only those: every other key must be a network weight of the table, and every
weight of the table must be present.

When a file holds the EMA copy, it is what gets loaded unless asked otherwise (`ema=False`):
Open-MAGVIT2's own reconstruction and evaluation scripts run under `ema_scope()` and its
transformer stage loads `model_ema.*`, so the EMA weights are the ones its results come from.
Which copy was loaded is said on the terminal.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from maskgil_jax import notices
from maskgil_jax.interop import magvit2_names, taming_names, vq_names
from maskgil_jax.interop.names import Rule, export_state_dict, import_state_dict
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.quantizers import USAGE_WINDOW
from maskgil_jax.models.vq import TokenizerSpec, VQModel, record_usage

# Lightning keys that are not the network: the training loss, the EMA copy, and constant
# buffers some versions of Open-MAGVIT2's LFQ saved (bit masks, the zero, the +-1 codebook).
NON_NETWORK = re.compile(r"^(loss\.|model_ema\.|quantize\.(mask|zero|codebook)$)")
EMA_PREFIX = "model_ema."


def _spec(model_or_config) -> TokenizerSpec:
  if isinstance(model_or_config, VQModel):
    return model_or_config.spec
  return TokenizerSpec.from_config(model_or_config)


def state_dict_layout(model_or_config) -> list[tuple[str, str]]:
  """[(reference key, transform)] of the family, in the reference's registration order."""
  s = _spec(model_or_config)
  if s.kind == "taming":
    return taming_names.state_dict_layout(s)
  if s.kind == "magvit2":
    return magvit2_names.state_dict_layout(s)
  return vq_names.state_dict_layout(s)


def tokenizer_rules(model_or_config) -> list[Rule]:
  return [Rule(key, key, transform) for key, transform in state_dict_layout(model_or_config)
          if transform != "buffer"]


def split_non_network(state_dict: Mapping[str, np.ndarray]) -> tuple[dict, list[str]]:
  """(network keys, dropped keys): `NON_NETWORK` keys go, everything else stays to be checked."""
  kept = {k: v for k, v in state_dict.items() if not NON_NETWORK.match(k)}
  return kept, sorted(set(state_dict) - set(kept))


def ema_weights(state_dict: Mapping[str, np.ndarray], rules: list[Rule], source: str) -> dict:
  """The network weights of LitEma's copy: `model_ema.<key without dots>` for each key."""
  missing = [r.theirs for r in rules if EMA_PREFIX + r.theirs.replace(".", "") not in state_dict]
  if len(missing) == len(rules):
    raise CheckpointError(f"{source}: has no EMA weights ({EMA_PREFIX}* keys)")
  if missing:
    raise CheckpointError(f"{source}: its EMA copy lacks {len(missing)} weights, e.g. "
                          + ", ".join(f"{EMA_PREFIX}{k.replace('.', '')} ({k})"
                                      for k in missing[:5]))
  return {r.theirs: state_dict[EMA_PREFIX + r.theirs.replace(".", "")] for r in rules}


def _check_family(s: TokenizerSpec, state_dict, source: str) -> None:
  """A clear error for a checkpoint of another family (or of no tokenizer at all)."""
  first = ", ".join(sorted(state_dict)[:5]) or "none"
  if not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
    raise CheckpointError(f"{source}: not a VQ tokenizer checkpoint: it has no encoder.* or "
                          f"decoder.* keys (first keys: {first})")
  found = family_of(state_dict)
  expected = {"vq": "llamagen", "lfq": "llamagen"}.get(s.kind, s.kind)
  if found is not None and found != expected:
    raise CheckpointError(f"{source}: holds a {found} tokenizer, but config.tokenizer.kind is "
                          f"{s.kind!r} (first keys: {first})")


def family_of(state_dict) -> str | None:
  """'llamagen', 'taming' or 'magvit2' from the keys' spelling (None: none of them)."""
  if any(k.startswith("encoder.conv_blocks.") for k in state_dict):
    return "llamagen"
  if any(k.startswith("decoder.adaptive.") or k.startswith("encoder.mid_block.")
         for k in state_dict):
    return "magvit2"
  if any(k.startswith("encoder.down.") for k in state_dict):
    return "taming"
  return None


def has_ema(state_dict) -> bool:
  return any(k.startswith(EMA_PREFIX) for k in state_dict)


def import_tokenizer_state_dict(model: VQModel, state_dict, *, source: str = "checkpoint",
                                ema: bool | None = None) -> VQModel:
  """A copy of `model` (concrete or abstract) holding the weights of a reference state dict
  of its family; every key and shape is checked first. `ema`: None takes the EMA copy
  (`model_ema.*`) when the file has one, as Open-MAGVIT2 does; True requires it; False takes
  the raw weights."""
  s = model.spec
  _check_family(s, state_dict, source)
  if s.kind in ("vq", "lfq"):
    if ema:
      raise CheckpointError(f"{source}: LlamaGen tokenizer files keep no EMA copy")
    return vq_names.import_vq_state_dict(model, state_dict, source=source)
  rules = tokenizer_rules(model)
  present = has_ema(state_dict)
  use_ema = present if ema is None else ema
  if use_ema:
    state_dict = ema_weights(state_dict, rules, source)
  if present or ema is not None or s.kind == "magvit2":
    which = ("the EMA weights (model_ema.*; --no-ema for the raw ones)" if use_ema else
             "the raw weights" + (" (the file also holds an EMA copy, the one its authors' "
                                  "scripts use)" if present else " (the file has no EMA copy)"))
    notices.notice("%s: loaded %s", source, which)
  network, _ = split_non_network(state_dict)
  new = import_state_dict(model, network, rules, source=source)
  # the reference keeps no usage window: start an empty one
  return record_usage(new, jnp.zeros((USAGE_WINDOW,), jnp.float32))


def export_tokenizer_state_dict(model: VQModel) -> dict[str, np.ndarray]:
  """{reference key: float32 array in PyTorch layout} in the family's registration order
  (LlamaGen's usage buffer included; the other families have none)."""
  if model.spec.kind in ("vq", "lfq"):
    return vq_names.export_vq_state_dict(model)
  return export_state_dict(model, tokenizer_rules(model))
