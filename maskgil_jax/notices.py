"""Lines for the person running a command, and the checkpoint library's routine chatter kept
from them: the bottom floor every module may use (the shell `cli`, `checkpoints`, `interop`),
importing nothing of the package."""
from __future__ import annotations

import logging
import sys

_ROUTINE = ("read only", "read_only", "read-only", "readonly")  # orbax's warnings on every restore


def is_primary() -> bool:
  """Process 0 (or a process that has not started JAX's runtime yet)."""
  import jax
  return jax.process_index() == 0


def notice(message: str, *args) -> None:
  """A line the person running the command should see: on the terminal of process 0 and in
  the log file, if one is open."""
  from absl import logging as absl_logging
  text = message % args if args else message
  absl_logging.info("%s", text)
  if is_primary():
    print(text, file=sys.stderr, flush=True)


class LibraryChatter(logging.Filter):
  """Drops the checkpointing library's routine warnings (two 'read only' notes per restore)
  and, unless `info`, its INFO lines (a dozen per save or restore); keeps every line of our
  own and every other warning of the library."""

  def __init__(self, info: bool = False):
    super().__init__()
    self.info = info

  def filter(self, record: logging.LogRecord) -> bool:
    if "/orbax/" not in record.pathname and "orbax" not in record.name:
      return True
    if record.levelno < logging.WARNING:
      return self.info
    text = record.getMessage().lower()
    return not any(r in text for r in _ROUTINE)


def quiet_checkpoint_library() -> None:
  """The routine warnings dropped for Python users too (`pipeline.load`, any restore): a
  filter on the `absl` logger, through which the library logs, so no handler sees them -- the
  user's own, absl's or ours. Handlers, levels and every other record are left as they are.
  Called where checkpoint managers are made; safe to call more than once."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, LibraryChatter) for f in logger.filters):
    logger.addFilter(LibraryChatter(info=True))
