"""Records of finished runs, kept beside the figures they produce.

A long reproduction outlives the machine it started on, and its figures should
be redrawn from the runs that made them. A run's *record* is what the figures,
tables and claims read from its log directory, without its checkpoints:
``config.json``, ``summary.json`` and ``episodes.csv`` (compressed with LZMA,
about 3 bytes per episode). Records live in a directory tree (``reproduce``:
``<--out>/runs``) that mirrors the runs' roots, one named subdirectory per root::

  <records>/reproduction/minigrid/a3c/ent0.001_lr0.0005/seed0/{config.json,
                                                             summary.json,
                                                             episodes.csv.xz}

``sync`` goes both ways: a finished run without a record is recorded, and a
record whose run directory holds no run is restored into it, so that a fresh
checkout skips (and draws) every recorded run. A record is written once and
never replaced. A run that a later run needs in full (a transfer run's
pretraining, whose checkpoint holds pi_0) is restored only when that later run
is finished or recorded too.
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import sys
from typing import Mapping, Sequence

from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.experiments import schedule

EPISODES_RECORD = results.EPISODES_FILE + '.xz'


@dataclasses.dataclass(frozen=True)
class Records:
  """Where records live: ``path``, and the name under it of each runs' root."""
  path: str
  roots: Mapping[str, str]  # Local root directory -> subdirectory of ``path``.

  def record_dir(self, logdir: str) -> str:
    """The record directory of the run in ``logdir`` (under one of ``roots``)."""
    logdir = os.path.abspath(logdir)
    deepest_first = sorted(((os.path.abspath(root), name) for root, name in self.roots.items()),
                           key=lambda r: -len(r[0]))
    for root, name in deepest_first:
      rel = os.path.relpath(logdir, root)
      if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
        return os.path.join(self.path, name, rel)
    raise ValueError(f'{logdir} lies under none of {", ".join(self.roots)}')


def is_recorded(record_dir: str) -> bool:
  """Whether ``record_dir`` holds a complete record (its summary is written last)."""
  return (schedule.is_finished(record_dir) and
          os.path.exists(os.path.join(record_dir, EPISODES_RECORD)))


def record(logdir: str, record_dir: str) -> bool:
  """Records the finished run in ``logdir``.

  Returns False (and writes nothing) for a run that is unfinished, has no
  episodes or is recorded already.
  """
  episodes = os.path.join(logdir, results.EPISODES_FILE)
  if (not schedule.is_finished(logdir) or not os.path.exists(episodes) or
      is_recorded(record_dir)):
    return False
  os.makedirs(record_dir, exist_ok=True)
  data = _read_bytes(episodes)
  _write_bytes(os.path.join(record_dir, EPISODES_RECORD),
               lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
  _copy_json_files(logdir, record_dir)
  return True


def record_or_warn(logdir: str, record_dir: str) -> bool:
  """``record``, but a record that cannot be written (a full disk) is a warning.

  The run itself is finished and stays where it is; the next ``sync`` records it.
  """
  try:
    return record(logdir, record_dir)
  except OSError as e:
    print(f'could not record the run in {logdir} into {record_dir}: '
          f'{e.strerror or e}; it is recorded when the command next runs',
          file=sys.stderr)
    return False


def restore(record_dir: str, logdir: str) -> bool:
  """Writes the record into ``logdir``; False without a record or if a run is there.

  A record that does not read (its ``summary.json`` or its compressed
  episodes damaged) is left out with a one-line warning on stderr naming it:
  False, and ``logdir`` is left as it was.

  Raises:
    errors.UsageError: the disk is full. What was written is removed, so the
      run directory holds no run and the next ``sync`` restores it again.
  """
  if run_dir.run_files_in(logdir):
    return False
  if not is_recorded(record_dir):
    if os.path.exists(os.path.join(record_dir, results.SUMMARY_FILE)):
      _warn_unreadable(record_dir, f'its {results.SUMMARY_FILE} does not read as a '
                       'finished run')
    return False
  path = os.path.join(record_dir, EPISODES_RECORD)
  try:
    episodes = lzma.decompress(_read_bytes(path))
  except (lzma.LZMAError, EOFError) as e:
    _warn_unreadable(record_dir, f'{EPISODES_RECORD} does not decompress ({e})')
    return False
  try:
    with errors.disk_full_is_usage_error(logdir):
      os.makedirs(logdir, exist_ok=True)
      _write_bytes(os.path.join(logdir, results.EPISODES_FILE), episodes)
      _copy_json_files(record_dir, logdir)
  except BaseException:
    for name in run_dir.run_files_in(logdir):  # None were there before: all are ours.
      os.remove(os.path.join(logdir, name))
    raise
  return True


def _warn_unreadable(record_dir: str, why: str) -> None:
  print(f'warning: the run record {record_dir} is left out: {why}; move it away '
        'to run and record that run again', file=sys.stderr, flush=True)


@dataclasses.dataclass
class SyncCount:
  restored: int = 0
  recorded: int = 0


def sync(specs: Sequence[schedule.RunSpec], records: Records) -> SyncCount:
  """Restores recorded runs that are absent, then records finished ones; see module doc."""
  count = SyncCount()
  needed_by: dict[str, list[str]] = {}
  for spec in specs:
    for required in spec.requires:
      needed_by.setdefault(required, []).append(spec.logdir)
  for spec in specs:
    later = needed_by.get(spec.logdir, [])
    if all(schedule.is_finished(d) or is_recorded(records.record_dir(d)) for d in later):
      count.restored += restore(records.record_dir(spec.logdir), spec.logdir)
  for spec in specs:
    count.recorded += record_or_warn(spec.logdir, records.record_dir(spec.logdir))
  return count


def describe(count: SyncCount, records: Records) -> str:
  """One line on what ``sync`` did."""
  return (f'run records in {records.path}: {count.restored} restored, '
          f'{count.recorded} recorded (a recorded run is not run again; move the '
          'records away to run it again)')


def _copy_json_files(source_dir: str, target_dir: str) -> None:
  """Copies ``config.json`` (if any), then ``summary.json``, which marks a whole copy."""
  for name in (results.CONFIG_FILE, results.SUMMARY_FILE):
    source = os.path.join(source_dir, name)
    if os.path.exists(source):
      _write_bytes(os.path.join(target_dir, name), _read_bytes(source))


def _read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def _write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file (a whole file or none)."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

