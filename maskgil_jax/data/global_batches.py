"""One global stream, the same for every number of processes, and its position in global batches.

The training data is one stream of examples (shuffled, repeated, each example's random view
drawn from the seed and its position) cut into global batches of `batch_size`. Process i of n
reads rows [i*B/n, (i+1)*B/n) of each global batch (`ProcessRows`), so the examples of a
global batch, and their order on the devices, do not depend on how many processes read them:
a run on 2 processes of 4 devices trains on exactly what a run on 1 process of 8 devices does.

The iterator's position is the number of global batches taken (`GlobalBatchIterator`), saved
in every checkpoint; restoring rebuilds the pipeline from that batch, so a checkpoint resumes
exactly on any number of processes and any number of reader threads or worker processes.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax

from maskgil_jax.data.unreadable import UNREADABLE_KEY

POSITION_KEY = "global_batches"


class ProcessRows(grain.MapDataset):
  """Element j: global element (j // per) * batch_size + first + j % per of the parent, for
  `per` = batch_size / process_count rows starting at `first` = process_index * per."""

  def __init__(self, parent: grain.MapDataset, batch_size: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    if batch_size % process_count or not 0 <= process_index < process_count:
      raise ValueError(f"process {process_index} of {process_count} cannot share batches of "
                       f"{batch_size}")
    self.batch_size, self.per = batch_size, batch_size // process_count
    self.first = process_index * self.per
    n = len(parent)
    self._length = sys.maxsize if n >= sys.maxsize else (n // batch_size) * self.per

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return f"ProcessRows(rows {self.first}..{self.first + self.per - 1} of {self.batch_size})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self.per)
    return self._parent[batch * self.batch_size + self.first + row]


class GlobalBatchIterator(grain.DatasetIterator):
  """Batches of `build(start)` (an IterDataset beginning at global batch `start`), counting
  the global batches taken and the unreadable images met; the state is those two numbers."""

  def __init__(self, build: Callable[[int], grain.IterDataset]):
    super().__init__()
    self._build = build
    self._inner = None
    self._taken = 0
    self._unreadable = 0

  def __next__(self):
    if self._inner is None:
      self._inner = iter(self._build(self._taken))
    batch = dict(next(self._inner))
    counts = batch.pop(UNREADABLE_KEY, None)
    if counts is not None:
      self._unreadable += int(counts.sum())
    self._taken += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {POSITION_KEY: self._taken, UNREADABLE_KEY: self._unreadable}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if POSITION_KEY not in state:
      raise ValueError(f"not a data position of this pipeline (no {POSITION_KEY!r}): "
                       f"{sorted(state)}")
    self.close()
    self._taken = int(state[POSITION_KEY])
    self._unreadable = int(state.get(UNREADABLE_KEY, 0))

  def close(self) -> None:
    if self._inner is not None and hasattr(self._inner, "close"):
      self._inner.close()
    self._inner = None

  def __str__(self) -> str:
    return f"GlobalBatchIterator(at global batch {self._taken})"


# ---- the position saved with a checkpoint ---------------------------------------------------
class MissingDataPosition(FileNotFoundError):
  """A step without this process's data position: damage unless a restart is asked for."""


def saved_position(folder, restart_data: bool) -> dict | None:
  """This process's saved data position (the data iterator's state) in a checkpoint step's
  `data_iter` folder (one `process_<i>-of-<n>.json` per process, as grain writes them).

  The position is the global batch the stream stands at (data/global_batches.py), the same in
  every process's file, so a step saved by another number of processes is read from its files
  (process 0 takes over the sum of their unreadable-image counts). A step without any position
  file is unusable (`MissingDataPosition`, so the previous step is tried like for any damaged
  one): resuming parameters with a restarted stream would silently train on other data than
  the uninterrupted run. With `restart_data` (a deliberate choice) a missing position starts
  the stream from its beginning instead, with a warning, and None is returned.
  """
  from maskgil_jax import cli
  name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  if (folder / name).exists():
    return json.loads((folder / name).read_text())
  saved = sorted(folder.glob("process_*-of-*.json")) if folder.exists() else []
  if saved:
    states = [json.loads(p.read_text()) for p in saved]
    positions = {s.get(POSITION_KEY) for s in states}
    if len(positions) != 1 or None in positions:
      raise MissingDataPosition(f"the data positions in {folder} disagree or are not global "
                                f"batch counts ({sorted(map(str, positions))})")
    position = positions.pop()
    total = sum(int(s.get(UNREADABLE_KEY, 0)) for s in states)
    cli.notice("data position of another number of processes (%s): global batch %d",
               saved[0].name.split("-of-")[1].removesuffix(".json"), position)
    return {POSITION_KEY: position, UNREADABLE_KEY: total if jax.process_index() == 0 else 0}
  if restart_data:
    logging.warning("%s holds no data position %s; config.ckpt.restart_data: the data "
                    "stream starts from its beginning", folder.parent, name)
    return None
  raise MissingDataPosition(
      "no data position in data_iter/ (lost or deleted); "
      "set config.ckpt.restart_data=True to resume with the data stream restarted")
