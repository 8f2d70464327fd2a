"""Name tables between our parameter pytrees and PyTorch state dicts.

A model's table is a list of `Rule`s, each pairing one of our parameter paths with one torch key
and naming the layout transform between them. Import and export both walk the table; nothing is
inferred from shapes. Stacked layer parameters (leading `layers` axis) use `{i}` in the torch key.

Paths are the module attribute names joined by dots (`layers.attention.wqkv.weight`), the same
spelling as the reference PyTorch keys wherever the reference has the parameter.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from maskgil_jax.interop.torch_io import CheckpointError

# our layout <- torch layout
_TO_OURS = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,  # torch Linear [out, in] -> ours [in, out]
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # OIHW -> HWIO
}
# torch layout <- our layout
_TO_TORCH = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
}


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str  # our parameter path
  theirs: str  # torch key; '{i}' stands for the index along our leading `layers` axis
  transform: str = "copy"  # 'copy' | 'linear' | 'conv'

  def __post_init__(self):
    if self.transform not in _TO_OURS:
      raise ValueError(f"unknown transform {self.transform!r} for {self.ours}")

  @property
  def stacked(self) -> bool:
    return "{i}" in self.theirs


def path_str(path) -> str:
  """'a.b.0.c' from a jax key path, dropping the Variable's trailing `.value`."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(k))
  if parts and parts[-1] == "value":
    parts.pop()
  return ".".join(parts)


def named_arrays(module) -> dict[str, object]:
  """{path: array} for every Param leaf of a module (concrete or abstract)."""
  params = nnx.state(module, nnx.Param)
  return {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _torch_entries(rule: Rule, ours_shape: tuple[int, ...]):
  """[(torch key, torch shape, index or None)] that one rule covers."""
  def torch_shape(shape):
    dummy = np.empty(shape, dtype=np.bool_)
    return tuple(_TO_TORCH[rule.transform](dummy).shape)

  if rule.stacked:
    return [(rule.theirs.format(i=i), torch_shape(ours_shape[1:]), i)
            for i in range(ours_shape[0])]
  return [(rule.theirs, torch_shape(ours_shape), None)]


def expected_torch_shapes(module, rules: Iterable[Rule]) -> dict[str, tuple[int, ...]]:
  arrays = named_arrays(module)
  out = {}
  for rule in rules:
    for key, shape, _ in _torch_entries(rule, tuple(arrays[rule.ours].shape)):
      out[key] = shape
  return out


def check_table(module, rules: list[Rule]) -> None:
  """Every parameter of `module` appears in exactly one rule (a table bug otherwise)."""
  ours = set(named_arrays(module))
  covered = [r.ours for r in rules]
  missing = sorted(ours - set(covered))
  unknown = sorted(set(covered) - ours)
  dup = sorted({c for c in covered if covered.count(c) > 1})
  if missing or unknown or dup:
    raise ValueError(f"name table does not match the model: uncovered {missing}, "
                     f"unknown {unknown}, duplicated {dup}")


def import_state_dict(module, state_dict: Mapping[str, np.ndarray], rules: list[Rule], *,
                      source: str = "checkpoint", ignore: Iterable[str] = ()):
  """A copy of `module` (concrete or abstract) whose parameters come from `state_dict`.

  Every key and shape is checked before anything is built: the error lists each missing,
  unexpected and mis-shaped key with both names and both shapes.
  """
  check_table(module, rules)
  arrays = named_arrays(module)
  expected = {}
  for rule in rules:
    ours_shape = tuple(arrays[rule.ours].shape)
    for key, shape, _ in _torch_entries(rule, ours_shape):
      expected[key] = (shape, rule)
  ignore = set(ignore)
  problems = []
  for key in sorted(set(expected) - set(state_dict)):
    shape, rule = expected[key]
    problems.append(f"missing {key} {list(shape)} "
                    f"(ours: {rule.ours} {list(arrays[rule.ours].shape)})")
  for key in sorted(set(state_dict) - set(expected) - ignore):
    problems.append(f"unexpected {key} {list(np.shape(state_dict[key]))}")
  for key in sorted(set(expected) & set(state_dict)):
    shape, rule = expected[key]
    if tuple(np.shape(state_dict[key])) != shape:
      problems.append(f"mis-shaped {key}: file {list(np.shape(state_dict[key]))}, "
                      f"expected {list(shape)} for ours {rule.ours} {list(arrays[rule.ours].shape)}")
  if problems:
    raise CheckpointError(f"{source}: does not fit this model ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
                          + "\n  ".join(problems))

  values = {}
  for rule in rules:
    ours_shape = tuple(arrays[rule.ours].shape)
    dtype = arrays[rule.ours].dtype
    to_ours = _TO_OURS[rule.transform]
    pieces = [to_ours(np.asarray(state_dict[key])) for key, _, _ in
              _torch_entries(rule, ours_shape)]
    value = np.stack(pieces) if rule.stacked else pieces[0]
    values[rule.ours] = np.asarray(value, dtype=dtype)

  def fill(path, leaf):
    name = path_str(path)
    return jax.numpy.asarray(values[name]) if name in values else leaf

  params = nnx.state(module, nnx.Param)
  rest = nnx.state(module, nnx.Not(nnx.Param))
  params = jax.tree_util.tree_map_with_path(fill, params)
  graphdef = nnx.graphdef(module)
  return nnx.merge(graphdef, params, rest)


def export_state_dict(module, rules: list[Rule], dtype=np.float32) -> dict[str, np.ndarray]:
  """{torch key: array in torch layout} for every rule.

  Keys come in table order, except that a run of consecutive stacked rules is written layer by
  layer (`layers.0.*` for each rule of the run, then `layers.1.*`, ...), which is the order
  PyTorch registers them. `dtype` None keeps each parameter's own dtype.
  """
  check_table(module, rules)
  arrays = named_arrays(module)

  def host(rule):  # one device-to-host copy per parameter
    value = np.asarray(jax.device_get(arrays[rule.ours]))
    return value if dtype is None else value.astype(dtype)

  def torch_layout(rule, value):
    return np.ascontiguousarray(_TO_TORCH[rule.transform](value))

  out = {}
  for stacked, run in itertools.groupby(rules, key=lambda r: r.stacked):
    run = list(run)
    values = [host(rule) for rule in run]
    if not stacked:
      out.update((rule.theirs, torch_layout(rule, v)) for rule, v in zip(run, values))
      continue
    for i in range(values[0].shape[0]):
      out.update((rule.theirs.format(i=i), torch_layout(rule, v[i]))
                 for rule, v in zip(run, values))
  return out
