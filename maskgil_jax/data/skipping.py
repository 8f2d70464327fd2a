"""Skipping unreadable examples without ending the run, and counting them.

The per-example transform returns an `Unreadable` marker instead of raising; this iterator
drops the markers before batching (so batches keep their static shape), logs each one with
its name and reason, and keeps the running count in its checkpointable state, so the count
survives a resume. With worker processes every worker counts its own share:
`skipped_images(iterator)` adds them all up from the iterator state.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grain

SKIPPED_KEY = "skipped_unreadable"
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """Stands in for an example whose image could not be read or decoded."""
  what: str
  reason: str


class SkipUnreadableIterDataset(grain.IterDataset):
  def __iter__(self) -> _SkipUnreadableIterator:
    return _SkipUnreadableIterator(self._parent.__iter__())

  def __str__(self) -> str:
    return "SkipUnreadableIterDataset"


class _SkipUnreadableIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self._skipped = 0

  def __next__(self):
    while True:
      element = next(self._parent)
      if not isinstance(element, Unreadable):
        return element
      self._skipped += 1
      logger.warning("skipped unreadable image %s (%s); %d skipped so far in this reader",
                     element.what, element.reason, self._skipped)

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), SKIPPED_KEY: self._skipped}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._skipped = state[SKIPPED_KEY]


def skipped_images(state_or_iterator) -> int:
  """Unreadable images skipped so far, summed over every reader in an iterator (or its state)."""
  state = state_or_iterator
  if isinstance(state, grain.DatasetIterator):
    state = state.get_state()
  if isinstance(state, Mapping):
    return sum(v if k == SKIPPED_KEY else skipped_images(v) for k, v in state.items())
  if isinstance(state, Sequence) and not isinstance(state, (str, bytes)):
    return sum(skipped_images(v) for v in state)
  return 0
