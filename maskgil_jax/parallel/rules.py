"""Logical axis names and the one table that maps them onto the mesh axes.

Every parameter declares the logical names of its axes (`nnx.Param(..., out_sharding=names)`);
activations are constrained with the `act_*` names. Which mesh axis a logical axis lands on is
decided here alone, so a layout change (pure FSDP, FSDP + tensor parallel, ...) is a config
change: `config.mesh.rules` may override any entry.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated).
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    # weights
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "qkv": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "vocab": "tensor",
    "layers": None,
    "norm": None,
    "conv_in": None,
    "conv_out": "fsdp",
    "codebook": None,
    "codebook_dim": None,
    "buckets": None,  # T5 relative-position buckets
    "caption_embed": "fsdp",  # width of the text encoder's features
    "caption_slots": None,  # the caption prefix's slots (the learned null caption)
    # activations
    "act_batch": ("data", "fsdp"),
    "act_length": None,
    "act_embed": "tensor",
    "act_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    # KV cache
    "cache_batch": ("data", "fsdp"),
    "cache_length": None,
    "cache_heads": "tensor",
    "cache_kv": None,
}


def make_rules(overrides: Mapping[str, object] | None = None) -> dict:
  """The default table with `overrides` applied; unknown logical names are refused."""
  rules = dict(DEFAULT_RULES)
  for name, axis in (overrides or {}).items():
    if name not in rules:
      raise ValueError(f"mesh.rules: unknown logical axis {name!r}; known: {sorted(rules)}")
    if isinstance(axis, list):
      axis = tuple(axis)
    for a in (axis if isinstance(axis, tuple) else (axis,)):
      if a is not None and a not in MESH_AXES:
        raise ValueError(f"mesh.rules.{name}: {a!r} is not a mesh axis {MESH_AXES}")
    rules[name] = axis
  return rules


def logical_to_spec(names: Sequence[str | None] | None, rules: Mapping[str, object],
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> PartitionSpec:
  """PartitionSpec for one array; a mesh axis is used once, and only where it divides the dim.

  With `shape` and `mesh` given, an axis whose size does not divide the dimension is dropped
  (that dimension stays replicated) instead of failing at placement time.
  """
  if not names:
    return PartitionSpec()
  used: set[str] = set()
  spec = []
  for i, name in enumerate(names):
    axis = rules.get(name) if name is not None else None
    axes = tuple(a for a in (axis if isinstance(axis, tuple) else (axis,)) if a is not None)
    axes = tuple(a for a in axes if a not in used)
    if shape is not None and mesh is not None:
      size = 1
      kept = []
      for a in axes:
        if shape[i] % (size * mesh.shape[a]) == 0:
          kept.append(a)
          size *= mesh.shape[a]
      axes = tuple(kept)
    axes = tuple(a for a in axes if mesh is None or mesh.shape[a] > 1) if mesh else axes
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def param_specs(tree, rules: Mapping[str, object], mesh: Mesh | None = None):
  """PartitionSpecs for every Variable in `tree` (a module or state, concrete or abstract)."""

  def spec(v):
    names = v.get_metadata().get("out_sharding") if _is_variable(v) else None
    value = v.get_value() if _is_variable(v) else v
    return logical_to_spec(names, rules, getattr(value, "shape", None), mesh)

  return jax.tree.map(spec, tree, is_leaf=_is_variable)


def param_shardings(tree, mesh: Mesh, rules: Mapping[str, object]):
  """NamedShardings with the same pytree structure as `tree` (Variables become leaves)."""
  specs = param_specs(tree, rules, mesh)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, PartitionSpec))
  return jax.tree.map(lambda v, s: v.replace(s) if _is_variable(v) else s, tree, shardings,
                      is_leaf=_is_variable)


_ACTIVE_RULES: list[Mapping[str, object]] = [DEFAULT_RULES]


def active_rules() -> Mapping[str, object]:
  """The table of the innermost `axis_rules` context (the defaults outside any)."""
  return _ACTIVE_RULES[-1]


@contextlib.contextmanager
def axis_rules(rules: Mapping[str, object]):
  """Rules that `constrain` uses while tracing inside this context (the trainer sets them)."""
  _ACTIVE_RULES.append(rules)
  try:
    yield
  finally:
    _ACTIVE_RULES.pop()


def constrain(x, names: Sequence[str | None], rules: Mapping[str, object] | None = None,
              mesh: Mesh | None = None):
  """`with_sharding_constraint` by logical names; a no-op outside a mesh.

  Models call this at block boundaries; the mesh comes from `jax.set_mesh` and the rules from
  `axis_rules` (the defaults otherwise), so model code never sees the layout.
  """
  mesh = mesh or _current_mesh()
  if mesh is None or mesh.empty:
    return x
  rules = rules if rules is not None else _ACTIVE_RULES[-1]
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, logical_to_spec(names, rules, x.shape, mesh)))


def gather_for_use(w, names: Sequence[str | None] | None,
                   rules: Mapping[str, object] | None = None, mesh: Mesh | None = None):
  """A weight as a matmul consumes it: gathered over the mesh axes that shard the batch.

  FSDP stores weights sharded over the batch axes and gathers them where they are used; this
  says so explicitly instead of leaving the choice to the partitioner. Left to itself, XLA
  (jax 0.10.2, Shardy and GSPMD alike) may instead permute the activations' batch rows to line
  up with an `embed`-over-`fsdp` weight and, for a row-parallel matmul (`wo`, `w2`) whose output
  is constrained to `act_embed`-over-`tensor`, never permute them back: with data=fsdp=2,
  tensor=2 and one example per batch shard, rows 1 and 2 come back swapped between devices
  (docs/architecture.md, "Mesh"). `names` are the weight's trailing logical axes (a layer
  slice of a stacked parameter drops its leading `layers` name). A no-op outside a mesh.
  """
  mesh = mesh or _current_mesh()
  if mesh is None or mesh.empty or not names:
    return w
  rules = rules if rules is not None else _ACTIVE_RULES[-1]
  names = tuple(names)[-w.ndim:] if w.ndim else ()
  batch = rules.get("act_batch")
  batch_axes = set(batch if isinstance(batch, tuple) else (batch,)) - {None}
  spec = []
  for entry in logical_to_spec(names, rules, w.shape, mesh):
    axes = entry if isinstance(entry, tuple) else (entry,)
    axes = tuple(a for a in axes if a is not None and a not in batch_axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return jax.lax.with_sharding_constraint(w, NamedSharding(mesh, PartitionSpec(*spec)))


def _current_mesh() -> Mesh | None:
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh
