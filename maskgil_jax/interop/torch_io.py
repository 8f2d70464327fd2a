"""Reading and writing PyTorch weight files without trusting them.

`.pt`/`.pth` files are opened with `torch.load(weights_only=True)`, which refuses any pickled
object that is not a tensor or a plain container, so a checkpoint can never run code here.
`.safetensors` files need no torch at all. Every failure is a `CheckpointError` that names the
file and what is wrong with it.
"""
from __future__ import annotations

import os
import pathlib
import zipfile
from collections.abc import Mapping

import numpy as np

# Wrappers seen in the wild around a state dict, in the order they are tried.
STATE_DICT_ENTRIES = ("model", "model_state_dict", "state_dict", "module")


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: missing, truncated, of the wrong kind or shape."""


def load_torch_file(path: str | os.PathLike) -> Mapping:
  """The raw object stored in a `.pt`/`.pth`/`.safetensors` file (tensors as numpy arrays)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    try:
      return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
      raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
  try:
    import torch
  except ImportError as e:  # pragma: no cover - torch is in the test extra
    raise CheckpointError(f"{path}: reading .pt files needs torch (pip install torch)") from e
  if not zipfile.is_zipfile(path):
    raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (truncated or another format)")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    msg = str(e).splitlines()[0][:300]
    if "weights_only" in str(e) or "Unsupported global" in str(e):
      raise CheckpointError(f"{path}: refused, it pickles objects that are not tensors "
                            f"(only plain weight files are loaded): {msg}") from e
    raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint "
                          f"(truncated or corrupt?): {msg}") from e
  return _to_numpy(obj)


def _to_numpy(obj):
  import torch
  if isinstance(obj, torch.Tensor):
    t = obj.detach().cpu()
    if t.dtype == torch.bfloat16:
      t = t.float()
    return t.numpy()
  if isinstance(obj, Mapping):
    return {k: _to_numpy(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v) for v in obj)
  return obj


def extract_state_dict(obj: Mapping, path: str | os.PathLike = "checkpoint",
                       entry: str | None = None) -> dict[str, np.ndarray]:
  """The flat {name: array} state dict inside a loaded checkpoint.

  Accepts a bare state dict or one wrapped as `{"model": sd}`, `{"model_state_dict": sd}`,
  `{"state_dict": sd}`; `entry` picks a wrapper explicitly (e.g. "ema"). FSDP/DDP
  prefixes (`module.`, `_orig_mod.`, `_fsdp_wrapped_module.`) are stripped.
  """
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  if entry is not None:
    if entry not in obj:
      raise CheckpointError(f"{path}: has no {entry!r} entry; entries: {sorted(obj)[:20]}")
    sd = obj[entry]
  elif obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    sd = obj
  else:
    found = [k for k in STATE_DICT_ENTRIES if isinstance(obj.get(k), Mapping)]
    if not found:
      raise CheckpointError(f"{path}: no state dict found; top-level entries: {sorted(obj)[:20]}")
    sd = obj[found[0]]
  out = {}
  for k, v in sd.items():
    if not isinstance(v, np.ndarray):
      raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    for prefix in ("_orig_mod.", "module.", "_fsdp_wrapped_module."):
      while k.startswith(prefix):
        k = k[len(prefix):]
    k = k.replace("._fsdp_wrapped_module", "").replace("._checkpoint_wrapped_module", "")
    out[k] = v
  return out


def load_state_dict(path: str | os.PathLike, entry: str | None = None) -> dict[str, np.ndarray]:
  """Read a weights file and return its flat state dict as numpy arrays."""
  return extract_state_dict(load_torch_file(path), path, entry)


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike,
                    wrap: str | None = "model") -> None:
  """Write `.pt` (optionally wrapped as {wrap: sd}) or `.safetensors`, atomically."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file
    save_file(arrays, str(tmp), metadata={"format": "pt"})
  else:
    import torch
    sd = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    torch.save({wrap: sd} if wrap else sd, tmp)
  os.replace(tmp, path)
