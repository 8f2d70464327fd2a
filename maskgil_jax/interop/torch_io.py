"""Reading and writing PyTorch weight files without trusting them.

`.pt`/`.pth`/`.ckpt` files are opened with `torch.load(weights_only=True)`, which refuses any
pickled object that is not a tensor or a plain container, so a checkpoint can never run code
here. PyTorch Lightning checkpoints (`{"state_dict": sd, ...}`, as taming's pinned Lightning
1.0.8 writes them) also pickle hyper-parameters, callbacks and optimizer state as objects of
their own classes; such a file is read a second time by `_RestrictedUnpickler`, which rebuilds
only what `weights_only` would (tensors, their storages, plain containers) and stands an inert
placeholder in for every other class, importing nothing and calling nothing of the file's, and
only the tensors under `state_dict` are kept. A pickle that names a code-running function
(`os.system`, `builtins.eval`, ...) is refused outright. `.safetensors` files need no torch at
all (bfloat16 tensors included). Every failure is a `CheckpointError` that names the file and
what is wrong with it.

Files written by `maskgil_jax.export` carry string metadata (the safetensors header, or a
`"metadata"` entry beside the state dict in a `.pt` file) under the `META_*` keys below;
`interop/torch_model.py` reads the same keys (it repeats them because it must import nothing
from this package; a test checks they agree).
"""
from __future__ import annotations

import _compat_pickle
import argparse
import json
import os
import pathlib
import pickle
import re
import types
import zipfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from maskgil_jax.errors import UserError

# Wrappers seen in the wild around a state dict, in the order they are tried.
STATE_DICT_ENTRIES = ("model", "model_state_dict", "state_dict", "module")
METADATA_ENTRY = "metadata"
META_KIND = "maskgil_jax.kind"  # 'transformer' | 'tokenizer'
META_LAYOUT = "maskgil_jax.layout"  # 'llamagen' | 'maskgil-reference' | 'native'
META_CONFIG = "maskgil_jax.config"  # the experiment config as JSON

# safetensors dtype names <-> numpy dtypes (bfloat16 through ml_dtypes, which JAX ships)
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(UserError):
  """A checkpoint that cannot be used: missing, truncated, of the wrong kind or shape."""


TORCH_EXTRA = 'pip install "maskgil_jax[torch]"'


def import_torch(what: str):
  """The `torch` module, or a CheckpointError saying that `what` needs the torch extra."""
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(f"{what} needs PyTorch: {TORCH_EXTRA}") from e
  return torch


def load_torch_file(path: str | os.PathLike) -> Mapping:
  """The raw object stored in a `.pt`/`.pth`/`.safetensors` file (tensors as numpy arrays)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  if path.suffix == ".safetensors":
    return read_safetensors(path)[0]
  torch = import_torch(f"{path}: reading .pt files")
  if not zipfile.is_zipfile(path):
    raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (truncated or another format)")
  try:
    # LlamaGen's training checkpoints also store their `args` Namespace: a plain attribute
    # holder, safe to rebuild, so it is the one non-tensor class allowed besides containers.
    with torch.serialization.safe_globals([argparse.Namespace]):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    text = str(e)
    if "Weights only load failed" in text or "Unsupported global" in text:
      found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
      return _lightning_weights(path, found.group(1) if found else None)
    raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint "
                          f"(truncated or corrupt?): {text.splitlines()[0][:300]}") from e
  return _to_numpy(obj)


# ---- Lightning checkpoints: objects beside the weights ------------------------------------------
# Globals whose mere naming in a pickle marks it as an attempt to run code: refused, not replaced.
_CODE_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy",
                 "pickle", "_pickle", "marshal", "ctypes", "socket", "pty", "code", "codeop",
                 "webbrowser", "multiprocessing", "pdb", "types", "inspect", "torch.hub")
_CODE_BUILTINS = ("eval", "exec", "compile", "__import__", "getattr", "setattr", "delattr",
                  "open", "input", "breakpoint", "globals", "locals", "vars", "exit", "quit")


class _Refused(Exception):
  pass


class _Inert:
  """Stands in for an object of a class the reader does not rebuild: it keeps what the pickle
  hands it (constructor arguments, state, items) and has no behaviour of its own."""
  pickled_name = "?"

  def __new__(cls, *args, **kwargs):
    obj = object.__new__(cls)
    obj.__dict__["pickled"] = {"args": args, "kwargs": kwargs, "state": None, "items": {},
                               "list": []}
    return obj

  def __init__(self, *args, **kwargs):
    pass

  def __setstate__(self, state):
    self.__dict__["pickled"]["state"] = state

  def __setitem__(self, key, value):
    self.__dict__["pickled"]["items"][key] = value

  def append(self, value):
    self.__dict__["pickled"]["list"].append(value)

  def extend(self, values):
    self.__dict__["pickled"]["list"].extend(values)

  def __repr__(self):
    return f"<{self.pickled_name} (not rebuilt)>"


def _trusted_globals() -> dict:
  """What `torch.load(weights_only=True)` itself rebuilds: tensors, storages, dtypes, plain
  containers, and the functions that assemble them."""
  from collections import OrderedDict
  import torch
  try:
    from torch._weights_only_unpickler import _get_allowed_globals
    return dict(_get_allowed_globals())
  except ImportError:  # pragma: no cover - an older or newer torch: the essentials
    return {"collections.OrderedDict": OrderedDict, "builtins.set": set,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter}


class _RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that never imports or calls anything of the file's: globals torch trusts
  are rebuilt, code-running ones refused, and every other class an `_Inert` placeholder."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.trusted = _trusted_globals()
    self.replaced: dict[str, type] = {}

  def find_class(self, module, name):
    # Python 2 names (protocol 2 writes `__builtin__.eval`), mapped as pickle itself maps them
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    full = f"{module}.{name}"
    if full in self.trusted:
      return self.trusted[full]
    root = module.split(".")[0]
    if (module in _CODE_MODULES or root in _CODE_MODULES
        or (module == "builtins" and name in _CODE_BUILTINS)):
      raise _Refused(full)
    if full not in self.replaced:
      self.replaced[full] = type(f"Inert_{name}", (_Inert,), {"pickled_name": full})
    return self.replaced[full]


_RESTRICTED_PICKLE = types.ModuleType("maskgil_jax_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler


def _lightning_weights(path: pathlib.Path, found: str | None) -> dict:
  """{"state_dict": tensors} of a file `weights_only` refused because of `found`: the file read
  by `_RestrictedUnpickler`; only a Lightning layout (a `state_dict` of tensors) is accepted."""
  import torch
  what = f" ({found})" if found else ""
  try:
    obj = torch.load(path, map_location="cpu", weights_only=False,
                     pickle_module=_RESTRICTED_PICKLE)
  except _Refused as e:
    raise CheckpointError(f"{path}: refused: it pickles a call to {e} (code, not weights); "
                          "nothing in it was run") from None
  except Exception as e:
    raise CheckpointError(f"{path}: refused: it pickles objects that are not tensors{what} and "
                          f"cannot be read without them: {str(e).splitlines()[0][:200]}") from e
  sd = obj.get("state_dict") if isinstance(obj, Mapping) else None
  if not isinstance(sd, Mapping):
    entries = sorted(str(k) for k in obj) if isinstance(obj, Mapping) else []
    held = [k for k in STATE_DICT_ENTRIES if k in entries]
    fix = (f"torch.save({{{held[0]!r}: torch.load(FILE, weights_only=False)[{held[0]!r}]}}, "
           "'weights.pt')" if held else
           "torch.save(torch.load(FILE, weights_only=False)[ENTRY], 'weights.pt') with the "
           f"entry that holds the weights (entries: {entries[:20]})")
    raise CheckpointError(
        f"{path}: refused: it pickles objects that are not tensors{what}, and only plain weight "
        "files and Lightning checkpoints (a 'state_dict' entry) are loaded. If you trust the "
        f"file, re-save its weights alone: {fix}")
  odd = [f"{k} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, torch.Tensor)]
  if odd:
    raise CheckpointError(f"{path}: its state_dict holds objects that are not tensors: "
                          + ", ".join(odd[:5]))
  return {"state_dict": _to_numpy(dict(sd))}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """({name: array}, header metadata) of a `.safetensors` file; bfloat16 becomes float32."""
  import safetensors
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    tensors = safetensors.deserialize(data)
  except Exception as e:  # safetensors raises its own error types
    raise CheckpointError(f"{path}: not a readable safetensors file (truncated or another "
                          f"format?): {str(e)[:300]}") from e
  out = {}
  for name, t in tensors:
    if t["dtype"] not in _SAFETENSORS_DTYPES:
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {t['dtype']}")
    a = np.frombuffer(t["data"], _SAFETENSORS_DTYPES[t["dtype"]]).reshape(t["shape"])
    out[name] = a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a
  return out, dict(metadata)


def map_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Like `read_safetensors`, but every array is a read-only view of the memory-mapped file:
  nothing is read until a tensor is used, so an 11 GB text encoder is never held twice.
  bfloat16 tensors stay bfloat16 (`ml_dtypes`); callers cast what they take."""
  path = pathlib.Path(path)
  try:
    with open(path, "rb") as f:
      header_len = int.from_bytes(f.read(8), "little")
      header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r")
  except Exception as e:
    raise CheckpointError(f"{path}: not a readable safetensors file (truncated or another "
                          f"format?): {str(e)[:300]}") from e
  metadata = header.pop("__metadata__", None) or {}
  out, base = {}, 8 + header_len
  for name, t in header.items():
    if t["dtype"] not in _SAFETENSORS_DTYPES:
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {t['dtype']}")
    start, end = (base + o for o in t["data_offsets"])
    if end > data.size:
      raise CheckpointError(f"{path}: tensor {name!r} ends at byte {end} but the file has "
                            f"{data.size} (truncated?)")
    out[name] = data[start:end].view(_SAFETENSORS_DTYPES[t["dtype"]]).reshape(t["shape"])
  return out, dict(metadata)


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
  return load_weights(path, entry)[0]


def load_weights(path: str | os.PathLike, entry: str | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(flat state dict, string metadata) of a weights file; metadata is {} when it has none."""
  path = pathlib.Path(path)
  if path.suffix == ".safetensors" and path.is_file():
    tensors, metadata = read_safetensors(path)
    return extract_state_dict(tensors, path, entry), metadata
  obj = load_torch_file(path)
  metadata = obj.get(METADATA_ENTRY) if isinstance(obj, Mapping) else None
  if isinstance(metadata, Mapping) and all(isinstance(v, str) for v in metadata.values()):
    return extract_state_dict(obj, path, entry), dict(metadata)
  return extract_state_dict(obj, path, entry), {}


def _torch_tensor(a: np.ndarray):
  import torch
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16)
  return torch.from_numpy(a.copy())


def _write_safetensors(arrays: Mapping[str, np.ndarray], path: pathlib.Path,
                       metadata: Mapping[str, str]) -> None:
  """safetensors' own writer, given each array's memory (bfloat16 included, which
  `safetensors.numpy` cannot name); the arrays are contiguous and little-endian."""
  import safetensors
  specs = {k: safetensors.TensorSpec(dtype=a.dtype.name, shape=a.shape, data_ptr=a.ctypes.data,
                                     data_len=a.nbytes)
           for k, a in arrays.items()}
  safetensors.serialize_file(specs, str(path), metadata=dict(metadata))


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike,
                    wrap: str | None = "model", metadata: Mapping[str, str] | None = None) -> None:
  """Write `.pt` (wrapped as {wrap: sd} unless `wrap` is None) or `.safetensors`, atomically.

  Arrays keep their dtype (float32, bfloat16 as `ml_dtypes.bfloat16`, ...). `metadata`
  (strings) goes into the safetensors header ({"format": "pt"} is always there), or beside the
  state dict of a `.pt` file as `{wrap: sd, "metadata": {...}}` when given. Nothing is left at
  `path` on failure.
  """
  path = pathlib.Path(path)
  metadata = dict(metadata or {})
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  tmp = path.with_name(path.name + ".tmp")
  try:
    if path.suffix == ".safetensors":
      _write_safetensors(arrays, tmp, {"format": "pt", **metadata})
    else:
      torch = import_torch(f"{path}: writing .pt files")
      sd = {k: _torch_tensor(v) for k, v in arrays.items()}
      if wrap is None and metadata:
        raise ValueError("metadata in a .pt file needs a wrapper entry (wrap=...)")
      obj = {wrap: sd, METADATA_ENTRY: metadata} if metadata else {wrap: sd} if wrap else sd
      torch.save(obj, tmp)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
