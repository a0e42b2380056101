"""A level cache on disk, shared by every DeepMind Lab process of a machine.

DeepMind Lab compiles procedurally generated maps into ``.pk3`` archives, which
takes seconds per map. Given a ``level_cache`` object, ``Lab`` first asks it to
``fetch(key, pk3_path)`` a compiled map and, on a miss, compiles the map and
hands it to ``write(key, pk3_path)``. This cache keeps one file per key in a
directory.

Many workers share the directory, so writers never expose a partial file: a map
is copied to a temporary file in the same directory and renamed over the final
name with ``os.replace`` (atomic on POSIX). Readers copy the file out, so a map
replaced while it is read stays whole. A cache failure (a full disk, a
read-only directory) costs a recompilation, never the run.

Workers that start together ask for the same map together. So that it is
compiled once, a worker that misses takes an exclusive lock on the key
(``fcntl.flock`` on ``.locks/<key>.lock``) and holds it until it has stored the map;
the others wait on the lock (up to ``LOCK_WAIT_SECS``), then find the map in
the cache. The kernel drops the lock of a worker that dies while compiling,
and the next one compiles instead.

A map DeepMind Lab cannot load ends its process (``Didn't find map``, exit
status 1), so every fetched map is checked before DeepMind Lab sees it: a
``.pk3`` is a zip archive holding the map as ``maps/<name>.bsp``. A copy that
is not such an archive, or whose members fail their checksums (bytes
overwritten, a file cut short), is removed from the cache with a warning and
reported as a miss: DeepMind Lab compiles the map again and stores it anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
import zipfile

from absl import logging

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'distral_tf', 'dmlab_levels')
# Seconds a worker waits for another one compiling the same map before it
# compiles the map itself (compiling takes seconds; a stuck worker must not
# hold up the others for good).
LOCK_WAIT_SECS = 300.0
# The lock files, one per key, in this subdirectory of the cache directory.
LOCK_DIR = '.locks'
_SAFE_KEY = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$')


class LevelCache:
  """DeepMind Lab's ``level_cache`` protocol over a directory."""

  def __init__(self, cache_dir: str):
    self._dir = os.path.abspath(os.path.expanduser(cache_dir))
    try:
      os.makedirs(self._dir, exist_ok=True)
    except OSError as e:
      logging.warning('level cache: cannot create %s (%s); maps will be '
                      'compiled every time.', self._dir, e)
    self.hits = 0
    self.misses = 0
    self.writes = 0
    self.removed = 0  # Cached maps found damaged (also counted as misses).
    self.waited = 0  # Misses that waited for another worker compiling the map.
    self._locks: dict[str, int] = {}  # Key -> descriptor of its held lock file.

  @property
  def cache_dir(self) -> str:
    return self._dir

  def path(self, key: str) -> str:
    """The file that holds ``key``'s map (keys that are not plain names are hashed)."""
    if not _SAFE_KEY.match(key):
      key = hashlib.sha256(key.encode('utf-8')).hexdigest()
    return os.path.join(self._dir, key + '.pk3')

  def fetch(self, key: str, pk3_path: str) -> bool:
    """Copies ``key``'s map to ``pk3_path``; returns whether the cache had it.

    On a miss, takes the key's lock (``write`` releases it) after waiting for
    another worker that holds it, and looks again: the map that worker
    compiled meanwhile is a hit. A cached map that would not load
    (``map_problem``) is removed, from the cache and from ``pk3_path``, and
    counts as a miss (``self.removed``).
    """
    if self._copy(key, pk3_path):
      return True
    if self._lock(key) and self._copy(key, pk3_path):
      self.waited += 1
      self._unlock(key)
      return True
    self.misses += 1
    return False

  def _lock(self, key: str) -> bool:
    """Takes ``key``'s lock; returns whether another worker held it first."""
    if key in self._locks:
      return False
    try:
      lock_dir = os.path.join(self._dir, LOCK_DIR)
      os.makedirs(lock_dir, exist_ok=True)
      name = os.path.basename(self.path(key))[:-len('.pk3')] + '.lock'
      fd = os.open(os.path.join(lock_dir, name), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
      return False  # A cache that cannot be written: compile without a lock.
    deadline, waited = time.monotonic() + LOCK_WAIT_SECS, False
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        waited = True
        if time.monotonic() > deadline:
          logging.warning('level cache: %s has been compiling elsewhere for %.0f s; '
                          'compiling it here too.', key, LOCK_WAIT_SECS)
          os.close(fd)
          return False
        time.sleep(0.1)
    self._locks[key] = fd
    return waited

  def _unlock(self, key: str) -> None:
    fd = self._locks.pop(key, None)
    if fd is not None:
      os.close(fd)  # Closing the descriptor drops its flock.

  def _copy(self, key: str, pk3_path: str) -> bool:
    """Copies ``key``'s map to ``pk3_path`` if it is cached and loads (see ``fetch``)."""
    source = self.path(key)
    try:
      with open(source, 'rb') as src, open(pk3_path, 'wb') as out:
        cached = os.fstat(src.fileno())
        shutil.copyfileobj(src, out)
    except FileNotFoundError:
      return False
    except OSError as e:
      logging.warning('level cache: cannot read %s (%s); recompiling.', key, e)
      return False
    problem = map_problem(pk3_path)  # Checked on the copy: a map replaced meanwhile
    if problem is not None:          # is whole, and stays in the cache.
      logging.warning('level cache: the map %s in %s does not load (%s); removed, '
                      'compiling it again.', key, self._dir, problem)
      self._remove_if_same(source, cached)
      try:
        os.remove(pk3_path)
      except OSError:
        pass
      self.removed += 1
      return False
    self.hits += 1
    return True

  @staticmethod
  def _remove_if_same(path: str, cached: os.stat_result) -> None:
    """Removes ``path`` unless another worker has replaced it since it was read."""
    try:
      now = os.stat(path)
      if (now.st_dev, now.st_ino) == (cached.st_dev, cached.st_ino):
        os.remove(path)
    except OSError:
      pass  # Gone already, or not ours to remove: the next writer replaces it.

  def write(self, key: str, pk3_path: str) -> None:
    """Stores the map at ``pk3_path`` under ``key`` (atomically; first writer wins),
    then releases the key's lock."""
    try:
      self._store(key, pk3_path)
    finally:
      self._unlock(key)

  def _store(self, key: str, pk3_path: str) -> None:
    final = self.path(key)
    if os.path.exists(final):
      return
    tmp = None
    try:
      fd, tmp = tempfile.mkstemp(dir=self._dir, prefix='.' + os.path.basename(final),
                                 suffix='.tmp')
      with os.fdopen(fd, 'wb') as out, open(pk3_path, 'rb') as src:
        shutil.copyfileobj(src, out)
      os.replace(tmp, final)
      tmp = None
      self.writes += 1
    except OSError as e:
      logging.warning('level cache: cannot store %s (%s).', key, e)
    finally:
      if tmp is not None:
        try:
          os.unlink(tmp)
        except OSError:
          pass


def map_problem(pk3_path: str) -> str | None:
  """Why DeepMind Lab would not load the ``.pk3`` at ``pk3_path``; None if it would.

  A ``.pk3`` is a zip archive; the engine loads a map from its
  ``maps/<name>.bsp``. Every member is read back against its checksum.
  """
  try:
    with zipfile.ZipFile(pk3_path) as archive:
      damaged = archive.testzip()
      names = archive.namelist()
  except Exception as e:  # pylint: disable=broad-except
    # zipfile raises BadZipFile, but also zlib, EOF and value errors on bad data.
    return f'not a .pk3 archive: {e}'
  if damaged is not None:
    return f'{damaged} fails its checksum'
  if not any(n.startswith('maps/') and n.endswith('.bsp') for n in names):
    return 'it holds no maps/*.bsp'
  return None
