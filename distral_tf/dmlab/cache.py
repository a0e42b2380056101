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
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile

from absl import logging

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'distral_tf', 'dmlab_levels')
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

  @property
  def cache_dir(self) -> str:
    return self._dir

  def path(self, key: str) -> str:
    """The file that holds ``key``'s map (keys that are not plain names are hashed)."""
    if not _SAFE_KEY.match(key):
      key = hashlib.sha256(key.encode('utf-8')).hexdigest()
    return os.path.join(self._dir, key + '.pk3')

  def fetch(self, key: str, pk3_path: str) -> bool:
    """Copies ``key``'s map to ``pk3_path``; returns whether the cache had it."""
    try:
      shutil.copyfile(self.path(key), pk3_path)
    except FileNotFoundError:
      self.misses += 1
      return False
    except OSError as e:
      logging.warning('level cache: cannot read %s (%s); recompiling.', key, e)
      self.misses += 1
      return False
    self.hits += 1
    return True

  def write(self, key: str, pk3_path: str) -> None:
    """Stores the map at ``pk3_path`` under ``key`` (atomically; first writer wins)."""
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
