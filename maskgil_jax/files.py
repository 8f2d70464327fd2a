"""Writes that never leave half a file: the data goes to a hidden sibling, renamed onto the
target once complete (a rename within one folder is atomic), so a reader, a resumed run or an
interrupted one sees the old file or the new one, never a torn one. Imports nothing of the
package: every floor may use it."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import socket


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
  """A temporary sibling of `path` to write (ending in `suffix`, so writers that read the
  format from the name, e.g. np.savez or savefig, keep it); renamed onto `path` when the
  block ends, removed when it raises. The name is this writer's own (host, process and a
  random part), so processes of a job that write the same file at once (the same content; the
  last rename wins) never rename or remove each other's temporary file."""
  path = pathlib.Path(path)
  own = f".{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
  tmp = path.with_name(f".{path.name}{own}{suffix}")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_text(path, text: str) -> None:
  """`text` into `path`, atomically."""
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json(path, obj, **dumps_options) -> None:
  """`obj` as JSON (indent 2 unless given, a final newline) into `path`, atomically."""
  dumps_options.setdefault("indent", 2)
  write_text(path, json.dumps(obj, **dumps_options) + "\n")
