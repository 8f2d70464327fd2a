"""Loading an experiment file by path (`configs/x.py` or `configs/x.py:arg`) with overrides."""
from __future__ import annotations

import ast
import importlib.resources
import importlib.util
import pathlib
from collections.abc import Iterable

import ml_collections

from maskgil_jax.configlib.finalize import ConfigError

REPO_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def shipped_configs() -> pathlib.Path:
  """The folder of the experiment files: the `configs/` of the checkout this package is
  imported from, else the installed `maskgil_jax.configs` package (an editable install of
  another checkout maps that package to its own folder, whose files may differ)."""
  if REPO_CONFIGS.is_dir():
    return REPO_CONFIGS
  try:
    folder = pathlib.Path(str(importlib.resources.files("maskgil_jax.configs")))
    if folder.is_dir():
      return folder
  except (ModuleNotFoundError, TypeError):
    pass
  return REPO_CONFIGS  # reported as missing by the caller


def shipped_config_names() -> list[str]:
  """The names `--config NAME` accepts without a path: the experiment files shipped now."""
  return sorted(f.stem for f in shipped_configs().glob("*.py") if not f.stem.startswith("_"))


def _resolve(path: str) -> pathlib.Path:
  p = pathlib.Path(path)
  if p.is_file():
    return p
  folder = shipped_configs()
  name = p.name if p.parent.name == "configs" else path  # `configs/x.py` from another folder
  for candidate in (folder / name, folder / f"{name}.py"):
    if candidate.is_file():
      return candidate
  raise ConfigError(f"--config {path}: no such file, nor a shipped config (one of "
                    f"{shipped_config_names()})")


def load_config(spec: str, overrides: Iterable[str] | dict | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file named by `spec`, then `a.b=value` overrides (not finalized)."""
  path, _, arg = spec.partition(":")
  file = _resolve(path)
  module_spec = importlib.util.spec_from_file_location(f"_maskgil_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  items = overrides.items() if isinstance(overrides, dict) else (
      o.split("=", 1) for o in (overrides or ()))
  for key, value in items:
    apply_override(config, key.removeprefix("config."), value)
  return config


def apply_override(config: ml_collections.ConfigDict, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node:
      raise ConfigError(f"config.{key}: no field {p!r}")
    node = node[p]
  if leaf not in node:
    raise ConfigError(f"config.{key}: no such field")
  if isinstance(value, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
  current = node[leaf]
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f"config.{key}: {e}") from e
