"""Prompts as the sample command takes them, and the one-line refusal when the checkpoint
takes the other kind of condition (a class model given prompts, a caption model given labels).
"""
from __future__ import annotations

import pathlib
from collections.abc import Sequence

from maskgil_jax.configlib import ConfigError
from maskgil_jax.text_files import read_lines


def read_prompts(prompts: Sequence[str] | None = None, file: str | None = None) -> list[str]:
  """`--prompt` values, then the non-empty lines of `--prompts FILE` (UTF-8, one per line)."""
  out = [p for p in (prompts or ())]
  if file:
    path = pathlib.Path(file)
    if not path.is_file():
      raise ConfigError(f"--prompts {file}: no such file")
    out += [line.strip() for line in read_lines(path, "--prompts") if line.strip()]
  if any(not p.strip() for p in out):
    raise ConfigError("--prompt: an empty prompt (give text, or leave it out)")
  return out


def check_condition(condition: str, *, prompts: bool, labels: bool) -> None:
  """ConfigError saying which condition the checkpoint takes when the flags ask for the other."""
  if condition == "caption" and labels:
    raise ConfigError("this checkpoint is a text-to-image model (config.model.condition="
                      "'caption'): give --prompt TEXT or --prompts FILE, not class labels")
  if condition == "caption" and not prompts:
    raise ConfigError("this checkpoint is a text-to-image model: give --prompt TEXT or "
                      "--prompts FILE")
  if condition == "class" and prompts:
    raise ConfigError("this checkpoint is class-conditional (config.model.condition='class'): "
                      "give --labels or --per-class, not prompts")
