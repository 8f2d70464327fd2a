"""The one command shell every `python -m maskgil_jax.<command>` shares.

- **One flag style.** Flags are spelled `--kebab-case`. An experiment is `--config FILE[:arg]`
  (a path, or the name of a config shipped with the package, `maskgil:B`), and any field is
  overridden with `--config.a.b=value` (also `--config.a.b value`); commands that read a second
  model take `--ar-config` the same way.
- **One error path.** Every mistake the user can fix derives from `errors.UserError` (config
  fields, paths, checkpoints, data, existing outputs); `run` prints it as one `error:` line and
  exits with status 2. A bad or missing flag is reported the same way (argparse's two-line
  usage dump is replaced by one line that points at `--help`).
- **Nothing overwritten.** `check_new_output` refuses an existing output unless `--overwrite`
  is given, before any work is done; writers go through a temporary name and rename.
- **Readable logs.** The terminal shows our notices (`notice`) and warnings as plain lines;
  the checkpointing library's routine chatter is dropped (its routine warnings for Python users
  of the library too, `quiet_checkpoint_library`).
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from maskgil_jax.notices import (LibraryChatter, is_primary, notice,  # noqa: F401
                                 quiet_checkpoint_library)
from maskgil_jax.errors import OutputExistsError, UsageError, UserError  # noqa: F401 (the shell's)

# OS errors that mean "the path you gave is wrong": reported like any other user error
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               FileExistsError)


CONFIG_HELP = ("experiment file (configs/x.py[:arg]) or a shipped config's name; "
               "--config.a.b=value overrides a field")


class Parser(argparse.ArgumentParser):
  """argparse with the shell's conventions: one-line errors and `--config` overrides."""

  def __init__(self, command: str, description: str, *, config: str | None = None,
               override_prefixes: Sequence[str] = (), usage: str | None = None):
    """`config`: None (no `--config`), 'required' or 'optional'. `override_prefixes`: extra
    prefixes besides `config` whose `--prefix.a.b=v` items are collected (e.g. `ar-config`)."""
    prog = f"python -m maskgil_jax.{command}"
    super().__init__(prog=prog, description=description, usage=usage and f"{prog} {usage}",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    self.prefixes = (("config",) if config else ()) + tuple(override_prefixes)
    self.config_flag = None
    if config:
      self.config_flag = self.add_argument(
          "--config", required=config == "required", metavar="FILE[:ARG]", help=CONFIG_HELP)

  def format_help(self) -> str:
    """The help, with the names of the configs shipped now (read from their folder when the
    help is shown, so a config added or folded into another is listed as it is)."""
    if self.config_flag is not None:
      from maskgil_jax.configlib.load import shipped_config_names
      self.config_flag.help = f"{CONFIG_HELP}. Shipped: {', '.join(shipped_config_names())}"
    return super().format_help()

  def add_shard_flags(self, what: str, batch_default: int, batch_help: str) -> None:
    """--out (a folder of `what` shards, resumed), --batch-size and --shard-size, as the
    resumable extraction commands take them; `shard_sizes` reads the last two, checked."""
    self.add_argument("--out", required=True, help=f"output folder of {what} shards (an "
                      "existing one is resumed)")
    self.add_argument("--batch-size", type=int, default=batch_default, help=batch_help)
    self.add_argument("--shard-size", type=int, default=4096, help="images per shard, the "
                      "unit of resumption (default 4096)")

  def error(self, message: str):  # argparse's hook for bad flags
    raise UsageError(f"{message} (see {self.prog} --help)")

  def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, plus `<prefix>_overrides` lists of 'a.b=value' for each override prefix."""
    args, rest = self.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    found = {p: [] for p in self.prefixes}
    items = iter(rest)
    for item in items:
      prefix = next((p for p in self.prefixes if item.startswith(f"--{p}.")), None)
      if prefix is None:
        self.error(f"unrecognized argument {item!r}")
      key = item[len(prefix) + 3:]
      if "=" not in key:  # `--config.a.b value`
        value = next(items, None)
        if value is None or value.startswith("--"):
          self.error(f"{item} needs a value: {item}=VALUE")
        key = f"{key}={value}"
      found[prefix].append(key)
    for p, overrides in found.items():
      setattr(args, f"{p.replace('-', '_')}_overrides", overrides)
    return args


def load_config(args: argparse.Namespace, prefix: str = "config"):
  """The experiment named by `--<prefix>` with its overrides applied (not finalized)."""
  from maskgil_jax import configlib  # heavy-ish; only commands with a config need it
  attr = prefix.replace("-", "_")
  return configlib.load_config(getattr(args, attr), getattr(args, f"{attr}_overrides"))


def check_new_output(path, flag: str = "--out", *, overwrite: bool = False,
                     what: str = "file") -> pathlib.Path:
  """`path` as a Path, once it is known that writing it loses nothing: it does not exist (or
  `overwrite` was given) and its folder exists or can be made. Called before any work."""
  if "://" in str(path):  # object stores: existence checks are the writer's job
    return path
  path = pathlib.Path(path)
  if path.exists() and not overwrite:
    raise OutputExistsError(f"{flag} {path} exists; choose another {what} or pass --overwrite")
  if path.exists() and path.is_dir() != (what == "folder"):
    raise UsageError(f"{flag} {path} is a {'folder' if path.is_dir() else 'file'}, "
                     f"not a {what}")
  parent = path.parent
  for p in (parent, *parent.parents):
    if p.exists():
      if not p.is_dir():
        raise UsageError(f"{flag} {path}: {p} is a file, not a folder")
      if not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {path}: {p} is not writable")
      break
  return path


def entry(body: Callable[[Sequence[str] | None], int | None], module: str):
  """A command's `main(argv=None) -> int`: `body(argv)` run through `run`. Called last in the
  command's module with its `__name__`: run as `python -m`, the command runs and exits here."""
  def main(argv: Sequence[str] | None = None) -> int:
    return run(body, argv)
  main.__doc__ = body.__doc__
  if module == "__main__":
    sys.exit(main())
  return main


def shard_sizes(args: argparse.Namespace) -> dict:
  """{'batch_size', 'shard_size'} of `Parser.add_shard_flags`' flags; UsageError below 1."""
  require_positive(("--batch-size", args.batch_size), ("--shard-size", args.shard_size))
  return dict(batch_size=args.batch_size, shard_size=args.shard_size)


def require_positive(*flags: tuple[str, int]) -> None:
  """UsageError naming the first (flag, value) pair whose value is below 1."""
  for flag, value in flags:
    if value < 1:
      raise UsageError(f"{flag} must be >= 1, got {value}")


def run(main: Callable[[Sequence[str] | None], int | None],
        argv: Sequence[str] | None = None) -> int:
  """Runs a command's `main(argv)`; a user error becomes one `error:` line and status 2."""
  setup_logging()
  try:
    code = main(argv)
  except UserError as e:
    return _error(str(e))
  except PATH_ERRORS as e:
    return _error(f"{e.filename}: {e.strerror}" if getattr(e, "filename", None) else str(e))
  except KeyboardInterrupt:
    return _error("interrupted", 130)
  except Exception as e:  # in a multi-process job a failed collective may mean a lost peer
    from maskgil_jax.parallel import peers
    if type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError"):
      peers.await_verdict()  # names the lost process and exits, if one is lost
    raise
  return int(code or 0)


def _error(message: str, code: int = 2) -> int:
  print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
  return code


def summary(message: str, *args) -> None:
  """A command's closing line: on stdout of process 0 and in the log file."""
  from absl import logging as absl_logging
  text = message % args if args else message
  absl_logging.info("%s", text)
  if is_primary():
    print(text, flush=True)


# ---- logging -----------------------------------------------------------------------------------


class _Terminal(logging.Handler):
  """Warnings and errors as plain `warning: ...` lines on stderr, on process 0 only."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      if is_primary():
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)
    except Exception:  # logging never breaks a run
      pass


def setup_logging(log_dir: str | None = None, name: str = "") -> None:
  """absl logging without absl's flag parsing. Warnings reach the terminal as plain lines;
  with `log_dir`, every INFO line also goes to `log_dir/<name>.INFO`; orbax's routine chatter
  is dropped everywhere. Safe to call more than once."""
  from absl import flags
  from absl import logging as absl_logging
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  root = logging.getLogger()
  for h in list(root.handlers):  # a library's basicConfig() would print every line twice
    if type(h) is logging.StreamHandler:
      root.removeHandler(h)
  absl_logging.use_absl_handler()
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, LibraryChatter) for f in handler.filters):
    handler.addFilter(LibraryChatter())
  if not any(isinstance(h, _Terminal) for h in root.handlers):
    terminal = _Terminal(level=logging.WARNING)
    terminal.addFilter(LibraryChatter())
    root.addHandler(terminal)
  if log_dir:
    handler.setLevel(logging.NOTSET)
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.set_stderrthreshold("fatal")  # the terminal gets _Terminal's lines instead
    handler.use_absl_log_file(name, log_dir)
  else:
    handler.setLevel(logging.CRITICAL + 1)  # no file: _Terminal speaks for it
    absl_logging.set_verbosity(absl_logging.WARNING)


def quiet_library_logs() -> None:
  """Only the filters and the terminal handler (for tests and notebooks)."""
  setup_logging()
