"""Ctrl-C and SIGTERM stop a run the same way.

Slurm and Kubernetes send SIGTERM before they kill a job; a terminal sends
SIGINT. Inside ``signals_as_interrupt`` both raise ``KeyboardInterrupt`` in
the main thread, which the trainers catch to checkpoint and leave with
``exit_status()`` (130 after SIGINT, 143 after SIGTERM). Inside ``deferred``
(while a checkpoint is written and the run shuts down) they are only
recorded, so that a second Ctrl-C cannot cut the saving short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


def _interrupt(signum, frame) -> None:
  del frame
  _received.append(signum)
  raise KeyboardInterrupt


def _record(signum, frame) -> None:
  del frame
  _received.append(signum)


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
  if not _in_main_thread():  # Signals reach only the main thread's handlers.
    yield
    return
  previous = {s: signal.getsignal(s) for s in _SIGNALS}
  for s in _SIGNALS:
    signal.signal(s, handler)
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def signals_as_interrupt() -> contextlib.AbstractContextManager:
  """Within: SIGINT and SIGTERM raise ``KeyboardInterrupt`` (main thread)."""
  _received.clear()
  return _handlers(_interrupt)


def deferred() -> contextlib.AbstractContextManager:
  """Within: SIGINT and SIGTERM are recorded and otherwise ignored."""
  return _handlers(_record)


def exit_status() -> int:
  """128 + the first signal received (130 for Ctrl-C, also when none was)."""
  return 128 + (_received[0] if _received else signal.SIGINT)
