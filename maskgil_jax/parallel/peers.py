"""Saying which process of a job was lost, in one `error:` line, before JAX's runtime aborts.

When a process of a multi-process job dies, the survivors' next collective fails (CPU gloo) or
waits (NCCL, TPU interconnect). JAX's coordination service notices the silence after
`heartbeat_timeout_s` and then aborts every survivor natively (SIGABRT and a C++ stack trace,
without saying which process went). A `PeerWatch` runs beside the work: a daemon thread ticks
this process's counter in the coordination service's key-value store and reads the others'; a
peer whose counter has not moved for `LOST_FRACTION` of the heartbeat timeout is lost, and the
watch prints one `error:` line naming it and ends this process with status 2, ahead of the
native abort. A process that ends normally marks itself done (at exit), so a peer that finishes
a little later is never mistaken for a survivor of a crash.
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time

KEY_PREFIX = "maskgil_jax/alive/"
LOST_FRACTION = 0.6  # of the heartbeat timeout: the watch speaks before JAX's abort
DONE = "done"
EXIT_CODE = 2

_watch: PeerWatch | None = None


class PeerWatch:
  """Ticks this process's counter and reads the others'; `lost()` names silent peers."""

  def __init__(self, client, index: int, count: int, heartbeat_s: float):
    self.client, self.index, self.count = client, index, count
    self.limit = LOST_FRACTION * heartbeat_s
    # one read of all counters per period; larger jobs read less often (the coordinator
    # answers every process), never slower than a third of the limit
    self.period = min(max(0.2, heartbeat_s / 20, count / 500), self.limit / 3)
    self.ticks = 0
    self.host = socket.gethostname()
    self.seen: dict[int, tuple[str, float]] = {}  # peer -> (last value, when it last changed)
    self.started = time.monotonic()
    self.stopped = threading.Event()

  def tick(self) -> None:
    self.ticks += 1
    self.client.key_value_set(f"{KEY_PREFIX}{self.index}", f"{self.ticks} {self.host}",
                              allow_overwrite=True)

  def read(self, now: float) -> None:
    for key, value in self.client.key_value_dir_get(KEY_PREFIX):
      peer = int(key.rsplit("/", 1)[-1])
      if self.seen.get(peer, (None,))[0] != value:
        self.seen[peer] = (value, now)

  def lost(self, now: float) -> list[tuple[int, str, float]]:
    """(process, host, seconds silent) of each peer silent for longer than the limit."""
    found = []
    for peer in range(self.count):
      if peer == self.index:
        continue
      value, since = self.seen.get(peer, ("", self.started))
      if value.startswith(DONE):
        continue
      if now - since > self.limit:
        host = value.split(" ", 1)[1] if " " in value else "?"
        found.append((peer, host, now - since))
    return found

  def run(self) -> None:
    while not self.stopped.wait(self.period):
      now = time.monotonic()
      try:
        self.tick()
        self.read(now)
      except Exception as e:  # the key-value store lives in process 0: it is gone
        if self.stopped.is_set():
          return
        if self.index != 0:
          report([(0, "the coordinator", now - self.started)], self.index, self.count,
                 detail=f"({' '.join(str(e).split())[:200]})")
        continue
      gone = self.lost(now)
      if gone:
        report(gone, self.index, self.count)

  def finish(self) -> None:
    """Marks this process done (a normal exit), so the others do not take it for lost."""
    self.stopped.set()
    try:
      self.client.key_value_set(f"{KEY_PREFIX}{self.index}", f"{DONE} {self.host}",
                                allow_overwrite=True)
    except Exception:  # the job is ending anyway
      pass


def report(gone, index: int, count: int, detail: str = "") -> None:
  """The `error:` line naming the lost processes; ends this process (status 2) at once,
  before the runtime's abort, without Python's clean-up (which would wait on the dead peer)."""
  names = ", ".join(f"process {p} of {count} (host {h}, silent for {s:.0f} s)"
                    for p, h, s in gone)
  line = (f"error: lost {names}{' ' + detail if detail else ''}; process {index} stops too "
          f"(see the lost process's log for why it ended; rerun the same command to resume "
          f"from the last checkpoint)")
  try:
    sys.stdout.flush()
  finally:
    print(line, file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def start(heartbeat_s: float) -> PeerWatch | None:
  """Starts the watch of this multi-process job (after `jax.distributed.initialize`)."""
  global _watch
  import jax
  from jax._src import distributed
  client = distributed.global_state.client
  if client is None or jax.process_count() == 1 or _watch is not None:
    return _watch
  _watch = PeerWatch(client, jax.process_index(), jax.process_count(), heartbeat_s)
  _watch.tick()
  threading.Thread(target=_watch.run, name="peer-watch", daemon=True).start()
  atexit.register(_watch.finish)  # runs before jax.distributed's own shutdown (registered first)
  return _watch


def await_verdict() -> None:
  """Called on an unexpected error in a multi-process job (a collective that failed because a
  peer is gone): gives the watch time to name the lost peer (it then ends the process);
  returns when no peer is lost, and the error is reported as it is."""
  if _watch is None:
    return
  deadline = time.monotonic() + _watch.limit + 3 * _watch.period
  while time.monotonic() < deadline and not _watch.stopped.is_set():
    time.sleep(_watch.period)
