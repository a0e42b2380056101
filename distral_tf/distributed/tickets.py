"""The chief's count of the unrolls its worker hosts hold, by shape and host.

A host reports each unroll it puts into its own queue (``actor_service``);
the chief's learner threads (``steps.StepThread``) claim them and schedule
calls that take them where they are. A host numbers its unrolls of a shape
1, 2, ... (afresh in every new process, its incarnation) and puts them into
its queue in that order, so what it holds is the highest number it reported
minus the highest a step took there.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from distral_tf.distributed import host_queue

# A host whose unrolls no step has found for this long, and which has not
# reported since, is taken for dead (``Tickets.silent_hosts``): the server of a
# worker that is gone for good, whom nobody restarts, takes no steps.
SILENT_HOST_SECS = 30.0

Key = tuple[int, ...]


class Tickets:
  """Unrolls the hosts hold that no step has taken yet, by shape and host.

  Each host numbers its unrolls of a shape 1, 2, ... (afresh in every new
  process, its incarnation) and puts them into its queue in that order, so
  what it holds is the highest number it reported (``add``) minus the highest
  a step took there (``taken``): two running maxima, right whatever the order
  in which reports and step results arrive, and whatever a step rerun after a
  lost worker took.
  """

  def __init__(self, num_hosts: int):
    self._num_hosts = num_hosts
    self._cond = threading.Condition()
    self._reported: dict[Key, np.ndarray] = {}  # key -> per host
    self._taken: dict[Key, np.ndarray] = {}
    self._claimed: dict[Key, int] = {}
    self._specs: dict[Key, host_queue.ElementSpec] = {}
    self._incarnations: list[int | None] = [None] * num_hosts
    self._heard = np.full(num_hosts, time.monotonic())  # Last report or take.

  def set_incarnation(self, host: int, incarnation: int | None) -> None:
    """The process now acting on ``host`` (steps on older ones are not counted)."""
    with self._cond:
      self._incarnations[host] = incarnation

  def add(self, host: int, key: Key, spec: host_queue.ElementSpec, number: int) -> None:
    with self._cond:
      if key not in self._reported:
        self._reported[key] = np.zeros(self._num_hosts, np.int64)
        self._taken[key] = np.zeros(self._num_hosts, np.int64)
        self._claimed[key] = 0
        self._specs[key] = spec
      self._reported[key][host] = max(self._reported[key][host], number)
      self._heard[host] = time.monotonic()
      self._cond.notify()

  def _waiting(self, key: Key) -> np.ndarray:
    return np.maximum(self._reported[key] - self._taken[key], 0)

  def _free(self, key: Key) -> int:
    return int(self._waiting(key).sum()) - self._claimed[key]

  def claim(self, timeout: float, most: int = 1
            ) -> tuple[Key, host_queue.ElementSpec, int] | None:
    """A shape with unrolls that no step is after yet, and how many of them
    (up to ``most``) are now claimed; or None."""
    deadline = time.monotonic() + timeout
    with self._cond:
      while True:
        free = [k for k in self._reported if self._free(k) > 0]
        if free:
          key = max(free, key=self._free)
          n = min(most, self._free(key))
          self._claimed[key] += n
          return key, self._specs[key], n
        left = deadline - time.monotonic()
        if left <= 0:
          return None
        self._cond.wait(left)

  def release(self, key: Key, n: int = 1) -> None:
    """The call for ``n`` claimed unrolls is over (what it took is ``taken``)."""
    with self._cond:
      self._claimed[key] -= n
      self._cond.notify()

  def taken(self, key: Key, host: int, incarnation: int, number: int) -> None:
    """A step took unroll ``number`` of ``key`` from ``host``'s process ``incarnation``."""
    with self._cond:
      if incarnation == self._incarnations[host]:
        self._taken[key][host] = max(self._taken[key][host], number)
        self._heard[host] = time.monotonic()
      self._cond.notify()

  def drop_host(self, host: int) -> dict[Key, int]:
    """``host``'s process is gone with what it held. Returns the counts lost."""
    with self._cond:
      lost = {k: int(self._waiting(k)[host]) for k in self._reported}
      for k in self._reported:
        self._reported[k][host] = self._taken[k][host] = 0
      return {k: n for k, n in lost.items() if n}

  def silent_hosts(self, secs: float | None = None) -> list[int]:
    """Hosts holding unrolls that neither reported nor had one taken for
    ``secs`` (default ``SILENT_HOST_SECS``)."""
    secs = SILENT_HOST_SECS if secs is None else secs
    with self._cond:
      if not self._reported:
        return []
      waiting = sum(self._waiting(k) for k in self._reported)
      silent = time.monotonic() - self._heard > secs
      return [int(h) for h in np.flatnonzero((waiting > 0) & silent)]

  def pending(self) -> int:
    with self._cond:
      return int(sum(self._waiting(k).sum() for k in self._reported))
