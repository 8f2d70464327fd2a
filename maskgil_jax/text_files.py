"""The one rule for the text files a user gives: prompts (`sample --prompts`), class names
(`app --class-names`), caption manifests (`caption_jsonl`) and caption files (`caption_folder`).

They are read strictly as UTF-8 (a leading byte-order mark is dropped). A file that is not
UTF-8 is refused with a `TextFileError` naming the flag or field, the file and the first bad
line, rather than decoded with replacement characters that would become the model's input
without a word. Like `errors`, this module imports nothing of the package but `errors`, so
every floor may use it.
"""
from __future__ import annotations

import os
import pathlib

from maskgil_jax.errors import UserError


class TextFileError(UserError):
  """A text input that cannot be read as UTF-8."""


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
  """The lines of the UTF-8 text file `path` (without line ends). `what` names where the file
  came from (`--prompts`, `data.path`, ...) for the error."""
  data = pathlib.Path(path).read_bytes()
  try:
    return data.decode("utf-8-sig").splitlines()
  except UnicodeDecodeError as e:
    before = data[:e.start].decode("utf-8-sig")  # valid up to the first bad byte
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    raise TextFileError(f"{what} {path}: line {line} is not UTF-8 text (byte "
                        f"0x{data[e.start]:02x} at character {column}); save the file as "
                        "UTF-8") from None
