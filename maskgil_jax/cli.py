"""What every command-line entry point shares: a clean one-line error for bad input.

A wrong path, a corrupt checkpoint or a bad config value is the user's to fix, so it is
reported as `error: <what is wrong>` with exit status 2, not as a traceback.
"""
from __future__ import annotations

import logging
import sys

from absl import app

from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop.torch_io import CheckpointError

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, NotADirectoryError,
               PermissionError)


def run(main) -> None:
  """absl `app.run(main)`, with user errors printed as one line and exit status 2."""
  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded)


class _LibraryChatter(logging.Filter):
  """Drops INFO lines of the checkpointing library (a dozen per save or restore), keeping its
  warnings and every line of our own."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """Keep the log readable: our progress and metric lines, not orbax's bookkeeping."""
  logging.getLogger("absl").addFilter(_LibraryChatter())
