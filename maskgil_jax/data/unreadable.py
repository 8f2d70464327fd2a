"""Unreadable examples: replaced by a readable neighbour, logged and counted.

A per-example transform returns an `Unreadable` marker instead of raising. The training stream
does not drop the marker (dropping would shift every later example, and a process could not
know which rows other processes dropped): `ReplaceUnreadable` fills the position with the next
readable example of the stream instead (positions g+1, g+2, ...; before g at the end of a
finite stream). The replacement is a function of the position alone, so every number of
processes builds the same global batches, and batches keep their static shape. Each example
carries how many unreadable records were met for it (`UNREADABLE_KEY`); the iterator of
`global_batches.py` takes that count out of the batch and keeps the running sum in its
checkpointed state (`unreadable_images(iterator)`).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import grain
import numpy as np

UNREADABLE_KEY = "unreadable_images"
MAX_TRIES = 64  # neighbours tried before giving up: a stream that unreadable is an error
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """Stands in for an example whose image could not be read or decoded."""
  what: str
  reason: str


class TooManyUnreadable(RuntimeError):
  """MAX_TRIES consecutive records of the stream could not be read."""


class ReplaceUnreadable(grain.MapDataset):
  """parent[g], or the nearest readable parent[g +- t] when parent[g] is `Unreadable`; every
  element gains UNREADABLE_KEY: the unreadable records met while filling position g."""

  def __init__(self, parent: grain.MapDataset):
    super().__init__(parent)

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return "ReplaceUnreadable"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    ahead = len(self._parent) - 1 - index  # positions after this one
    met = 0
    for t in range(MAX_TRIES):
      g = index + t if t <= ahead else index - (t - ahead)
      if g < 0:
        break
      element = self._parent[g]
      if not isinstance(element, Unreadable):
        return {**element, UNREADABLE_KEY: np.int32(met)}
      met += 1
      logger.warning("unreadable image %s (%s) replaced by the next readable one",
                     element.what, element.reason)
    raise TooManyUnreadable(f"{met} records around stream position {index} are unreadable "
                            "(the last: see the warnings above); check the data source")


def unreadable_images(state_or_iterator) -> int:
  """Unreadable images met so far by this process's iterator (or in its saved state)."""
  state = state_or_iterator
  if isinstance(state, grain.DatasetIterator):
    state = state.get_state()
  if isinstance(state, Mapping):
    return int(state.get(UNREADABLE_KEY, 0))
  return 0
