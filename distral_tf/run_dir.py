"""Whether a log directory can take a run: a writable place that holds no other run.

A log directory belongs to one run, defined by the flags in its ``config.json``.
Running the same command again reuses a finished run, resumes a deep run from
its checkpoint, or starts an unfinished tabular run afresh. Any other run is
refused (``errors.UsageError``), so that no trainer overwrites, mixes or
truncates another run's results.

While it runs, a process owns its directory (``hold``): an exclusive
``flock`` on ``LOCK_FILE`` in it, which the kernel drops when the process
ends however it ends. A second process given the same directory is refused,
naming the one that holds it; the commands that drive many runs (sweep,
transfer, reproduce) hold their own directories the same way.

The comparison leaves nothing out by default: every flag defined by this
project's trainer modules (``cli``, the agents, the level sets) must equal the
saved value, except the few that only say how, or how long, a run executes
(``EXECUTION_FLAGS``; the deep trainers may also be given a new budget,
``RESUMABLE_FLAGS``). Flags of the commands that drive trainers (experiments,
benchmarks, servers) and of libraries are not part of a run.

Everything here is plain Python, so ``cli`` checks before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from typing import Any, Iterable, Iterator, Mapping

from distral_tf import errors
from distral_tf import results

# Modules whose flags make up a run: this package's, except commands that start runs.
PROJECT_PACKAGE = 'distral_tf.'
COMMAND_MODULES = ('distral_tf.experiments.', 'distral_tf.bench',
                   'distral_tf.distributed.bench', 'distral_tf.distributed.server')

# Flags that may change between the attempts of a run: where and at what pace it
# executes, not what it computes.
EXECUTION_FLAGS = frozenset({
    'logdir', 'max_seconds', 'checkpoint_secs', 'log_interval_secs', 'tf_threads',
    'actor_threads', 'env_processes', 'env_niceness', 'dmlab_renderer',
    'dmlab_level_cache', 'dmlab_level_cache_dir'})
# A checkpointed (deep) run may also be resumed with a larger or smaller budget.
RESUMABLE_FLAGS = EXECUTION_FLAGS | {'env_steps_per_task'}

# Files whose presence means that a directory holds (part of) a run.
RUN_FILES = (results.CONFIG_FILE, results.EPISODES_FILE, results.SUMMARY_FILE,
             'checkpoints')
# How many differing flags an error message names.
_SHOWN_DIFFERENCES = 6
# Held (flock) by the process that owns the directory; it says who that is.
LOCK_FILE = '.distral_tf.lock'
# Subdirectories a run writes into, checked like the directory when they exist.
RUN_SUBDIRECTORIES = ('checkpoints', 'tensorboard', 'cluster')
# Flags every run's config.json has held since the first version: a file
# without them is not a run's configuration (or was emptied).
REQUIRED_FLAGS = ('level_set', 'algorithm', 'seed', 'num_tasks', 'env_steps_per_task',
                  'learning_rate', 'discount', 'alpha', 'entropy_cost')


def prepare(logdir: str, flag: str = 'logdir') -> None:
  """Creates ``logdir`` if needed and checks that a file can be written in it.

  Raises ``errors.UsageError`` for an empty path, a path that is a file or lies
  under one, a directory that cannot be created or written, and a full disk;
  its message names the path by ``--flag``.
  """
  if not logdir or not logdir.strip():
    raise errors.UsageError(f'--{flag} is empty; give the directory the run writes to')
  if os.path.exists(logdir) and not os.path.isdir(logdir):
    raise errors.UsageError(f'--{flag}={logdir} is a file, not a directory')
  file_above = _file_above(logdir)
  if file_above is not None:
    raise errors.UsageError(f'--{flag}={logdir} lies under {file_above}, which is a '
                            'file, not a directory')
  try:
    os.makedirs(logdir, exist_ok=True)
  except OSError as e:
    raise errors.UsageError(f'cannot create --{flag}={logdir}: {e.strerror}') from None
  _check_writable(logdir, f'--{flag}={logdir}')
  for name in RUN_SUBDIRECTORIES:
    path = os.path.join(logdir, name)
    if os.path.isdir(path):
      _check_writable(path, f'--{flag}={logdir}: its {name}/')


def _check_writable(directory: str, shown: str) -> None:
  """Creates, writes and removes a file in ``directory``; raises ``errors.UsageError``.

  A directory that refuses new files (read-only mount, ``chattr +i``, no
  permission) would otherwise fail the run later, in native code, while it
  saves a checkpoint.
  """
  probe = os.path.join(directory, f'.write_check.{os.getpid()}')
  try:
    with open(probe, 'w') as f:
      f.write('distral_tf\n')
    os.remove(probe)
  except OSError as e:
    if errors.is_disk_full(e):
      raise errors.disk_full_error(directory) from None
    raise errors.UsageError(f'cannot write in {shown} ({e.strerror}); make it writable '
                            'or choose another directory') from None
  finally:
    if os.path.lexists(probe):
      try:
        os.remove(probe)
      except OSError:
        pass


def run_files_in(logdir: str) -> list[str]:
  """Which of ``RUN_FILES`` ``logdir`` holds: none unless it holds (part of) a run."""
  return [name for name in RUN_FILES if os.path.lexists(os.path.join(logdir, name))]


def _file_above(path: str) -> str | None:
  """The nearest existing ancestor of ``path`` if it is not a directory."""
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  return None if os.path.isdir(parent) else parent


def run_flags(flags_by_module: Mapping[str, Iterable[Any]],
              values: Mapping[str, Any]) -> dict[str, Any]:
  """The values of every flag that belongs to a run (JSON-normalised).

  ``flags_by_module``: the flags (with a ``name``) each module defines, as
  absl's ``flags_by_module_dict()`` gives them; ``values``: every flag's
  value by name (a configuration's, the level set's defaults merged).
  """
  names = [f.name for module, module_flags in flags_by_module.items()
           if module.startswith(PROJECT_PACKAGE) and
           not module.startswith(COMMAND_MODULES)
           for f in module_flags]
  return {name: _normalised(values[name]) for name in names}


def _normalised(value: Any) -> Any:
  """``value`` as ``config.json`` gives it back (tuples become lists and so on)."""
  return json.loads(json.dumps(value, default=str))


def differing_flags(saved: Mapping[str, Any], now: Mapping[str, Any],
                    may_differ: frozenset[str]) -> list[str]:
  """``--name=saved (now X)`` for every flag in both whose values differ.

  A flag missing on either side (added or removed since) is not compared.
  """
  out = []
  for name in sorted(set(saved) & set(now) - may_differ):
    old = _normalised(saved[name])
    if old != now[name]:
      out.append(f'--{name}={_shown(old)} (now {_shown(now[name])})')
  return out


def _shown(value: Any) -> str:
  if isinstance(value, list):
    return ','.join(str(v) for v in value)
  return str(value)


def saved_config(logdir: str) -> dict | None:
  """The run's ``config.json``, or None if there is none; unreadable is an error."""
  path = os.path.join(logdir, results.CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UsageError(f'{path} is unreadable ({e}); use another --logdir') from None
  if not isinstance(config, dict):
    raise errors.UsageError(f'{path} holds no flags; use another --logdir')
  return config


def check_same_run(logdir: str, now: Mapping[str, Any],
                   may_differ: frozenset[str]) -> dict | None:
  """Refuses a ``logdir`` that holds another run; returns its config if it is this run.

  ``now``: this run's flags, as ``run_flags`` gives them. Returns None when
  ``logdir`` holds no run yet. Raises ``errors.UsageError`` naming the
  differing flags when its ``config.json`` differs from ``now`` in anything
  but ``may_differ``, and when it holds results without a ``config.json``.
  """
  config = saved_config(logdir)
  if config is None:
    found = run_files_in(logdir)
    if found:
      raise errors.UsageError(
          f'{logdir} holds {", ".join(found)} but no {results.CONFIG_FILE}: results of '
          'an unknown run; choose another --logdir or remove them')
    return None
  missing = [name for name in REQUIRED_FLAGS if name in now and name not in config]
  if missing:
    raise errors.UsageError(
        f'{os.path.join(logdir, results.CONFIG_FILE)} lacks the flags of a run '
        f'({", ".join(missing)}): it is not the configuration of the results there; '
        'use another --logdir')
  differences = differing_flags(config, now, may_differ)
  if differences:
    shown = ', '.join(differences[:_SHOWN_DIFFERENCES])
    more = len(differences) - _SHOWN_DIFFERENCES
    if more > 0:
      shown += f' and {more} more'
    raise errors.UsageError(
        f'{logdir} holds another run: {shown}; run it with its own flags or choose '
        'another --logdir')
  return config


# -- ownership while a process runs ----------------------------------------------

class DirectoryInUse(errors.UsageError):
  """Another process holds the directory (``hold``)."""


# Directories this process holds: real path -> (descriptor, path) of its lock file.
_held: dict[str, tuple[int, str]] = {}


def _holder_description() -> str:
  """Who holds a lock: this process's id, host, start time and command line."""
  started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  command = shlex.join(getattr(sys, 'orig_argv', sys.argv))
  return json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=started,
                         command=command))


def _describe_holder(lock_path: str, attempts: int = 20) -> str:
  """What the holder of ``lock_path`` wrote about itself, as a phrase.

  A holder writes it just after it takes the lock: an empty file is read again.
  """
  for _ in range(attempts):
    try:
      with open(lock_path, encoding='utf-8', errors='replace') as f:
        holder = json.loads(f.read())
      return (f'pid {holder["pid"]} on {holder["host"]}, started {holder["started"]}: '
              f'{" ".join(str(holder["command"]).split())}')
    except (OSError, ValueError, KeyError, TypeError):
      time.sleep(0.05)
  return 'another process'


def try_hold(directory: str) -> int | None:
  """Takes ``directory`` for this process; returns the lock's descriptor, or None.

  None when another process (or another descriptor of this one) holds it.
  The lock file is created if needed; its content names the holder.
  """
  path = os.path.join(directory, LOCK_FILE)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
        return None
      raise
    try:
      current = os.stat(path)
    except FileNotFoundError:
      current = None
    mine = os.fstat(fd)
    if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev,
                                                                    mine.st_ino):
      break
    os.close(fd)  # Its holder removed the file as we opened it: take a new one.
  os.ftruncate(fd, 0)
  os.pwrite(fd, (_holder_description() + '\n').encode('utf-8'), 0)
  return fd


def hold(directory: str, flag: str = 'logdir') -> None:
  """Owns ``directory`` until ``release`` or the end of this process.

  Holding it again in the same process is a no-op. The directory must exist
  (``prepare``).

  Raises:
    DirectoryInUse: another process holds it; the message names that process
      (pid, host, start and command line).
    errors.UsageError: the lock file cannot be written.
  """
  key = os.path.realpath(directory)
  if key in _held:
    return
  try:
    fd = try_hold(directory)
  except OSError as e:
    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      print(f'warning: --{flag}={directory}: its file system takes no locks '
            f'({e.strerror}); nothing stops a second run from using it',
            file=sys.stderr, flush=True)
      return
    if errors.is_disk_full(e):
      raise errors.disk_full_error(directory) from None
    raise errors.UsageError(f'cannot write in --{flag}={directory} ({e.strerror})'
                            ) from None
  if fd is None:
    holder = _describe_holder(os.path.join(directory, LOCK_FILE))
    raise DirectoryInUse(f'--{flag}={directory} is in use by {holder}; wait for it to '
                         'end or stop it, or choose another directory')
  _held[key] = (fd, os.path.abspath(os.path.join(directory, LOCK_FILE)))


def release(directory: str) -> None:
  """Gives ``directory`` up (removing its lock file) if this process holds it."""
  fd, lock_path = _held.pop(os.path.realpath(directory), (None, ''))
  if fd is None:
    return
  try:  # Removed while still locked: a process that opened it then takes a new file.
    os.remove(lock_path)
  except OSError:
    pass
  os.close(fd)


@contextlib.contextmanager
def held(directories: Mapping[str, str]) -> Iterator[None]:
  """Within: every directory of ``{flag: directory}`` prepared and held.

  Directories already held by this process stay held afterwards.
  """
  taken = []
  try:
    for flag, directory in directories.items():
      prepare(directory, flag)
      if os.path.realpath(directory) not in _held:
        hold(directory, flag)
        taken.append(directory)
    yield
  finally:
    for directory in reversed(taken):
      release(directory)
