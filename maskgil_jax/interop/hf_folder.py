"""Weights of a Hugging Face model folder: one or sharded `.safetensors`, or `pytorch_model.bin`.

Accepted, in this order: `model.safetensors`; `model.safetensors.index.json` with the shards it
names (`model-0000k-of-0000n.safetensors`); `pytorch_model.bin` (or its index and shards), read
through the safe reader (`torch.load(weights_only=True)`). Safetensors files are memory-mapped
(`torch_io.map_safetensors`): a tensor is read from disk only when it is converted, so the
11 GB FLAN-T5-XL never sits in memory twice. A folder without weights is a `CheckpointError`
naming the files looked for.
"""
from __future__ import annotations

import json
import os
import pathlib

from maskgil_jax.interop import torch_io
from maskgil_jax.interop.torch_io import CheckpointError

SINGLE = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _read_one(path: pathlib.Path) -> dict:
  if path.suffix == ".safetensors":
    return torch_io.map_safetensors(path)[0]
  return torch_io.extract_state_dict(torch_io.load_torch_file(path), path)


def _read_index(index: pathlib.Path) -> dict:
  try:
    weight_map = json.loads(index.read_text())["weight_map"]
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"{index}: not a readable weight index ({e})") from e
  out = {}
  for shard in sorted(set(weight_map.values())):
    path = index.parent / shard
    if not path.is_file():
      raise CheckpointError(f"{index}: names the shard {shard}, which is missing from "
                            f"{index.parent}")
    out.update(_read_one(path))
  missing = sorted(set(weight_map) - set(out))
  if missing:
    raise CheckpointError(f"{index}: its shards lack {len(missing)} listed tensors, e.g. "
                          f"{missing[:3]}")
  return out


def read_weights(folder: str | os.PathLike) -> tuple[dict, str]:
  """({key: array}, the file or index read) of a model folder."""
  folder = pathlib.Path(folder)
  for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json"):
    path = folder / name
    if path.is_file():
      return (_read_index(path) if name.endswith(".json") else _read_one(path)), str(path)
  raise CheckpointError(f"{folder}: no weights: expected one of {', '.join(SINGLE + INDEXES)}")
