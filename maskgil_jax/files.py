"""Writes that never leave half a file: the data goes to a hidden sibling, renamed onto the
target once complete (a rename within one folder is atomic), so a reader, a resumed run or an
interrupted one sees the old file or the new one, never a torn one. Imports nothing of the
package: every floor may use it."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp", per_process: bool = False):
  """A temporary sibling of `path` to write (ending in `suffix`, so writers that read the
  format from the name, e.g. np.savez or savefig, keep it); renamed onto `path` when the
  block ends, removed when it raises. `per_process`: the name carries the process id, for
  files several processes may write at once (the same content; the last rename wins)."""
  path = pathlib.Path(path)
  pid = f".{os.getpid()}" if per_process else ""
  tmp = path.with_name(f".{path.name}{pid}{suffix}")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_text(path, text: str, per_process: bool = False) -> None:
  """`text` into `path`, atomically."""
  with atomic_path(path, per_process=per_process) as tmp:
    tmp.write_text(text)


def write_json(path, obj, **dumps_options) -> None:
  """`obj` as JSON (indent 2 unless given, a final newline) into `path`, atomically."""
  dumps_options.setdefault("indent", 2)
  write_text(path, json.dumps(obj, **dumps_options) + "\n")
