"""Orbax checkpoints for every command: the trainer's, and parameters on their own.

Layout (one per run, written by `maskgil_jax.train` and by `save_params`):

    WORKDIR/checkpoints/<step>/state/      parameters (+ optimizer state, step, EMA) as nested
                                           dicts named like the module attributes
                            config/        the full config as JSON
                            data_iter/     the input pipeline position (one file per process)

Trees are stored as plain nested dicts keyed by attribute path (`params.layers.attention.wqkv.
weight`), never as pickled classes, so a checkpoint restores onto any module of the same
shapes, on any mesh (each array is read straight into the sharding of the target), and one
part (`params` or `ema_params`) can be read without the optimizer state. Layer parameters are
always stacked on a leading `layers` axis (recorded as `param_layout` in the step metadata).

Any command can point at a workdir, its `checkpoints/` folder or one step folder. A latest
checkpoint that cannot be read (corrupt, truncated) is reported and the previous one is used;
the trainer moves the bad one aside so the next save of that step can happen.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from maskgil_jax import __version__, notices
from maskgil_jax.data.global_batches import saved_position
from maskgil_jax.interop.torch_io import CheckpointError

SUBDIR = "checkpoints"
PARAM_LAYOUT = "stacked_layers"  # every layer parameter carries a leading `layers` axis


# ---- trees as nested dicts ------------------------------------------------------------------
def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def _key_name(k) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)


def to_nested(tree) -> dict:
  """{attribute: {...: array}} for any pytree of arrays or NNX Variables (no classes stored)."""
  out: dict = {}
  for path, leaf in _leaves(tree)[0]:
    *parents, last = [_key_name(k) for k in path]
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf.get_value() if _is_variable(leaf) else leaf
  return out


def from_nested(nested: dict, like, source: str = "checkpoint"):
  """`like`'s pytree (module, optimizer state, ...) with its leaves read from `nested`."""
  leaves, treedef = _leaves(like)
  values, missing = [], []
  for path, leaf in leaves:
    node = nested
    for k in path:
      node = node.get(_key_name(k)) if isinstance(node, dict) else None
    if node is None or isinstance(node, jax.ShapeDtypeStruct):  # a placeholder: not stored
      missing.append(".".join(_key_name(k) for k in path))
    values.append(leaf.replace(node) if _is_variable(leaf) else node)
  if missing:
    raise CheckpointError(f"{source}: lacks {len(missing)} entries this model needs, e.g. "
                          f"{missing[:5]}")
  return jax.tree.unflatten(treedef, values)


def _restore_target(abstract, default_sharding):
  """(nested ShapeDtypeStructs, nested ArrayRestoreArgs) for an abstract tree."""
  def struct(x):
    sharding = getattr(x, "sharding", None) or default_sharding
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  target = jax.tree.map(struct, to_nested(abstract))
  return target, ocp.checkpoint_utils.construct_restore_args(target)


def _check_fits(stored, target: dict, source: str) -> None:
  """Every entry of `target` is stored with the same shape (CheckpointError listing each one
  that is missing or mis-shaped): a readable checkpoint of another model is not 'damaged'."""
  problems = []

  def walk(t, s, path):
    for k, v in t.items():
      sub = s.get(k) if hasattr(s, "get") else None
      name = f"{path}{k}"
      if isinstance(v, dict):
        walk(v, sub if sub is not None else {}, name + ".")
      elif sub is None:
        problems.append(f"missing {name} {list(v.shape)}")
      elif tuple(getattr(sub, "shape", ())) != tuple(v.shape):
        problems.append(f"mis-shaped {name}: stored {list(sub.shape)}, expected {list(v.shape)}")

  walk(target, stored, "")
  if problems:
    raise CheckpointError(f"{source}: does not fit ({len(problems)} problems, e.g. "
                          + "; ".join(problems[:8]) + ")")


def replicated() -> NamedSharding:
  """Every device holds the whole array (the default for targets that name no sharding)."""
  return NamedSharding(jax.sharding.Mesh(jax.devices(), ("all",)), PartitionSpec())


# ---- where checkpoints live -----------------------------------------------------------------
def _is_step_dir(p: epath.Path) -> bool:
  return p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()


def locate(directory: str | os.PathLike) -> tuple[epath.Path, int | None]:
  """(checkpoint root, step or None) of a workdir, a `checkpoints/` folder or a step folder."""
  p = epath.Path(directory)
  if not p.is_dir():
    raise CheckpointError(f"{p}: no such directory")
  if _is_step_dir(p):
    return p.parent, int(p.name)
  if (p / SUBDIR).is_dir():
    return p / SUBDIR, None
  return p, None


def _handlers() -> dict:
  import grain.checkpoint  # registers grain's iterator args with orbax
  return {"state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
          "data_iter": grain.checkpoint.CheckpointHandler()}


def make_manager(root: str | os.PathLike, *, every_steps: int = 1, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of a checkpoint root: asynchronous saves every `every_steps` steps
  (and at a preemption), keeping the newest `keep`; half-written saves are cleaned up."""
  notices.quiet_checkpoint_library()
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps, max_to_keep=keep, read_only=read_only,
      create=not read_only, cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(epath.Path(root).absolute(), options=options,
                               item_handlers=_handlers())


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def save(manager: ocp.CheckpointManager, step: int, state, config, data_iter=None, *,
         force: bool = False) -> bool:
  """Start saving `state` (any pytree), the config and the data position at `step` if the
  manager's interval (or a preemption) asks for it, or `force`; returns whether it saves."""
  items = {"state": ocp.args.PyTreeSave(to_nested(state)),
           "config": ocp.args.JsonSave(_config_json(config))}
  if data_iter is not None:
    import grain.checkpoint
    items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
  metadata = {"param_layout": PARAM_LAYOUT, "maskgil_jax_version": __version__,
              "task": config.get("task", "generator")}
  return manager.save(step, args=ocp.args.Composite(**items), force=force,
                      custom_metadata=metadata)


def _quarantine(root: epath.Path, step: int) -> None:
  """Move an unreadable step aside (kept for inspection) so the step can be saved again."""
  if jax.process_index() == 0:
    src = root / str(step)
    dst = root / f"{step}.unreadable-{int(time.time())}"
    if src.exists():
      src.rename(dst)
      logging.warning("moved unreadable checkpoint %s to %s", src, dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"quarantine_checkpoint_{step}")


def restore_state(manager: ocp.CheckpointManager, abstract_state, data_iter=None, *,
                  step: int | None = None, quarantine: bool = False,
                  restart_data: bool = False):
  """(state, step) from the newest readable checkpoint (or `step`), None when there is none.

  `abstract_state` gives the structure, dtypes and shardings to restore into (a different mesh
  than the one that saved is fine); `data_iter` (a grain iterator) is moved to the saved data
  position. A checkpoint that fails to read, or (with `data_iter`) lacks this process's data
  position, is reported with a warning and the previous one is tried (`restart_data`: a
  missing position restarts the stream instead); with `quarantine` (the trainer) the unreadable ones newer than the one restored are
  then moved aside, so their step numbers can be saved again. If none can be read, nothing is
  moved (a file system outage must not look like damage) and CheckpointError says why.
  """
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  target, restore_args = _restore_target(abstract_state, replicated())
  root = epath.Path(manager.directory)
  failures = {}
  for s in steps:
    items = {"state": ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                             partial_restore=True)}
    try:
      stored = manager.item_metadata(s)["state"]
      stored = getattr(stored, "tree", stored)
      if stored is None:
        raise FileNotFoundError("no state item")
      # readable but not for this model: an error, since falling back would hide it
      _check_fits(stored, target, f"{root}/{s}")
      position = (saved_position(root / str(s) / "data_iter", restart_data)
                  if data_iter is not None else None)
      restored = manager.restore(s, args=ocp.args.Composite(**items))
      state = from_nested(restored["state"], abstract_state, source=f"{root}/{s}")
      if position is not None:
        data_iter.set_state(position)
    except CheckpointError:
      raise
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      failures[s] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      logging.warning("checkpoint %s/%s cannot be read (%s); falling back to the previous one",
                      root, s, failures[s])
      continue
    if failures and quarantine:
      for bad in failures:
        _quarantine(root, bad)
      manager.reload()
    return state, s
  if failures:
    raise CheckpointError(f"{root}: no readable checkpoint:\n  " + "\n  ".join(
        f"step {s}: {m}" for s, m in failures.items()))
  return None


# ---- parameters on their own ----------------------------------------------------------------
def save_params(directory: str | os.PathLike, module, config, step: int = 0,
                name: str = "params") -> epath.Path:
  """Write `module` (all its Variables) as `{name: ...}` with the config, in the trainer's
  layout under `directory/checkpoints/<step>`; refuses to overwrite an existing step."""
  root = epath.Path(directory) / SUBDIR
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise CheckpointError(f"{directory}: cannot create {root} ({e})") from e
  manager = make_manager(root)
  try:
    if step in manager.all_steps():
      raise CheckpointError(f"{root / str(step)} already exists; not overwriting it")
    save(manager, step, {name: module}, config, force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return root / str(step)


def _read_manager(directory) -> tuple[ocp.CheckpointManager, int | None]:
  root, step = locate(directory)
  manager = make_manager(root, read_only=True)
  if not manager.all_steps():
    manager.close()
    raise CheckpointError(f"{directory}: holds no checkpoint (expected WORKDIR/{SUBDIR}/<step>/ "
                          "as written by maskgil_jax.train or checkpoints.save_params)")
  return manager, step


def latest_step(directory: str | os.PathLike) -> int | None:
  """The newest step under a workdir / checkpoint root, or None when there is none."""
  try:
    root, step = locate(directory)
  except CheckpointError:
    return None
  if step is not None:
    return step
  manager = make_manager(root, read_only=True)
  try:
    return manager.latest_step()
  finally:
    manager.close()


def restore_params(directory: str | os.PathLike, abstract_module, step: int | None = None,
                   ema: bool = False, name: str = "params"):
  """`abstract_module` (e.g. from `nnx.eval_shape`) filled from a checkpoint's `name` entry
  (`ema_<name>` with `ema`), newest readable step unless `step` or a step folder is given.

  Arrays go to the shardings the abstract module's values carry (replicated otherwise) and
  are cast to its dtypes; the optimizer state is not read.
  """
  manager, dir_step = _read_manager(directory)
  key = f"ema_{name}" if ema else name
  try:
    found = restore_state(manager, {key: abstract_module},
                          step=step if step is not None else dir_step)
  except CheckpointError as e:
    if ema and f"missing {key}." in str(e):
      raise CheckpointError(f"{directory}: has no EMA parameters ({key}); the run trained "
                            "without optim.ema_decay") from e
    raise
  finally:
    manager.close()
  return found[0][key]


def restore_tokenizer(directory: str | os.PathLike, abstract_module):
  """The tokenizer of a `task='tokenizer'` training run (or of `save_params`)."""
  config = restore_config(directory)
  if config.get("task", "tokenizer") != "tokenizer":
    raise CheckpointError(f"{directory}: is a {config.task!r} run, not a tokenizer")
  return restore_params(directory, abstract_module)


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def restore_config(directory: str | os.PathLike, step: int | None = None
                   ) -> ml_collections.ConfigDict:
  """The config a checkpoint was written with (lists come back as tuples, as in the presets)."""
  manager, dir_step = _read_manager(directory)
  try:
    s = step if step is not None else dir_step if dir_step is not None else manager.latest_step()
    try:
      restored = manager.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(f"{directory}: step {s} has no readable config ({e})") from e
  finally:
    manager.close()
  return ml_collections.ConfigDict(_tuples(restored["config"]))
