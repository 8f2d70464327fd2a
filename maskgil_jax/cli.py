"""What every command-line entry point shares: a clean one-line error for bad input.

A wrong path, a corrupt checkpoint or a bad config value is the user's to fix, so it is
reported as `error: <what is wrong>` with exit status 2, not as a traceback.
"""
from __future__ import annotations

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
