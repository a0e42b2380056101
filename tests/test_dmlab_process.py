"""DeepMind Lab environments in their own processes: stepping, crashes, the cache.

Child processes use the test double by name (``lab_module='tests.dmlab_double'``).
"""

import functools
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from distral_tf.dmlab import cache as cache_lib
from distral_tf.dmlab import env as env_lib
from distral_tf.dmlab import games
from distral_tf.envs import process
from tests import dmlab_double

DOUBLE = 'tests.dmlab_double'
NO_CACHE = env_lib.EnvConfig(level_cache_dir=None)



def _cached(cache_dir):
  """The files of a level cache directory but its lock files' folder."""
  return [n for n in os.listdir(cache_dir) if n != cache_lib.LOCK_DIR]

def _factory(level='lt_chasm', config=NO_CACHE, **settings):
  return functools.partial(env_lib.make_env, level=level, config=config,
                           settings=tuple((k, str(v)) for k, v in settings.items()),
                           lab_module=DOUBLE)


def test_level_set_tasks_step_in_their_own_processes_with_distinct_seeds():
  level_set = games.build_level_set('lasertag', 2, seed=0, config=NO_CACHE,
                                    lab_module=DOUBLE)
  envs = [process.EnvProcess(task.make_env, seed=worker, name=f'{task.name}/{worker}')
          for task in level_set.tasks for worker in range(2)]
  try:
    pids = {env.pid for env in envs}
    assert len(pids) == 4 and os.getpid() not in pids
    first = process.reset_all(envs)
    seeds = [dmlab_double.decode_seed(t.observation) for t in first]
    assert len(set(seeds)) == 4  # Distinct per task and per worker.
    steps = process.step_all(envs, np.array([0, 1, 8, 3]))
    assert [t.reward for t in steps] == [4.0, -4.0, 40.0, 0.0]
    assert all(t.mid() and t.observation.shape == (72, 96, 3) for t in steps)
    assert all(dmlab_double.decode_frame(t.observation) == 4 for t in steps)
  finally:
    for env in envs:
      env.close()


def test_a_crashed_environment_is_restarted_and_the_worker_carries_on(tmp_path):
  marker = tmp_path / 'crashed'
  env = process.EnvProcess(
      _factory(doubleCrashAtFrame=10, doubleCrashMarker=marker, doubleEpisodeFrames=40),
      seed=11, name='crashy')
  try:
    first_pid = env.pid
    start = env.reset()
    seed_before = dmlab_double.decode_seed(start.observation)
    assert env.step(0).mid() and env.step(0).mid()  # Frames 4 and 8.
    interrupted = env.step(0)  # Reaches frame 10: the process dies.
    assert marker.exists()
    assert interrupted.first()  # FIRST where a MID was expected.
    assert env.restarts == 1 and env.pid != first_pid
    assert dmlab_double.decode_frame(interrupted.observation) == 0
    assert dmlab_double.decode_seed(interrupted.observation) != seed_before
    # The restarted environment runs whole episodes.
    kinds = [env.step(0).step_type for _ in range(10)]
    assert kinds == [process.dm_env.StepType.MID] * 9 + [process.dm_env.StepType.LAST]
    assert env.step(0).first() and env.restarts == 1
  finally:
    env.close()


def test_an_environment_that_keeps_dying_raises_after_a_few_restarts():
  env = process.EnvProcess(_factory(doubleCrashAtReset=1), seed=0, name='doomed')
  try:
    with pytest.raises(process.EnvError, match='died 3 times in a row'):
      env.reset()
    assert env.restarts == process.MAX_RESTART_ATTEMPTS
  finally:
    env.close()


def test_procedural_maps_compile_once_for_all_processes(tmp_path):
  config = env_lib.EnvConfig(level_cache_dir=str(tmp_path / 'cache'))
  make = _factory('contributed/dmlab30/lasertag_one_opponent_small', config)
  # Two workers with the same seed meet the same maps.
  first = process.EnvProcess(make, seed=5)
  first.reset()
  first.reset()
  first.close()
  maps = sorted(_cached(tmp_path / 'cache'))
  assert len(maps) == 2
  mtimes = [os.stat(tmp_path / 'cache' / m).st_mtime_ns for m in maps]
  second = process.EnvProcess(make, seed=5)
  second.reset()
  second.reset()
  second.close()
  assert sorted(_cached(tmp_path / 'cache')) == maps
  assert [os.stat(tmp_path / 'cache' / m).st_mtime_ns for m in maps] == mtimes


def test_a_damaged_map_in_the_cache_is_compiled_again_not_fatal(tmp_path):
  """Random bytes over a cached map (which the engine cannot load: it exits)."""
  config = env_lib.EnvConfig(level_cache_dir=str(tmp_path / 'cache'))
  make = _factory('contributed/dmlab30/lasertag_one_opponent_small', config)
  first = process.EnvProcess(make, seed=5)
  first.reset()
  first.close()
  [name] = _cached(tmp_path / 'cache')
  cached = tmp_path / 'cache' / name
  good = cached.read_bytes()
  cached.write_bytes(os.urandom(len(good)))
  second = process.EnvProcess(make, seed=5)
  try:
    second.reset()
    assert second.restarts == 0  # The map was compiled, not loaded from the cache.
  finally:
    second.close()
  assert cached.read_bytes() == good  # Stored anew.
  assert cache_lib.map_problem(str(cached)) is None


_PAYLOAD = 1 << 18
_KEYS = [f'key{i:02d}' for i in range(8)]


def _pk3(writer_id: int) -> bytes:
  """Writer ``writer_id``'s map: a .pk3 of ``_PAYLOAD`` bytes of its id."""
  return dmlab_double.pk3_bytes('m', bytes([writer_id]) * _PAYLOAD)


def _writer(cache_dir, work_dir, writer_id, start):
  cache = cache_lib.LevelCache(cache_dir)
  src = os.path.join(work_dir, f'src{writer_id}.bin')
  with open(src, 'wb') as f:
    f.write(_pk3(writer_id))
  start.wait()
  for key in _KEYS:
    cache.write(key, src)


def _reader(cache_dir, work_dir, reader_id, start, reads, failures):
  """Fetches every key until each was read 3 times, checking each copy is whole."""
  cache = cache_lib.LevelCache(cache_dir)
  dst = os.path.join(work_dir, f'read{reader_id}.bin')
  counts = dict.fromkeys(_KEYS, 0)
  start.wait()
  deadline = time.monotonic() + 30
  while min(counts.values()) < 3 and time.monotonic() < deadline:
    for key in _KEYS:
      if cache.fetch(key, dst):
        counts[key] += 1
        with open(dst, 'rb') as f:
          data = f.read()
        if data not in [_pk3(w) for w in (1, 2, 3, 4)]:
          failures.value += 1
  reads.value += sum(counts.values())


def test_concurrent_writers_and_readers_never_see_a_partial_map(tmp_path):
  # Fork: the children only copy files, and start in milliseconds.
  ctx = mp.get_context('fork')
  cache_dir, work_dir = str(tmp_path / 'shared'), str(tmp_path)
  start = ctx.Event()
  reads, failures = ctx.Value('i', 0), ctx.Value('i', 0)
  procs = [ctx.Process(target=_writer, args=(cache_dir, work_dir, i + 1, start))
           for i in range(4)]
  procs += [ctx.Process(target=_reader,
                        args=(cache_dir, work_dir, i, start, reads, failures))
            for i in range(2)]
  for p in procs:
    p.start()
  start.set()
  for p in procs:
    p.join(timeout=60)
  assert [p.exitcode for p in procs] == [0] * len(procs)
  assert failures.value == 0
  assert reads.value >= 2 * 3 * len(_KEYS)
  assert sorted(_cached(cache_dir)) == [k + '.pk3' for k in _KEYS]
  for key in _KEYS:
    with open(os.path.join(cache_dir, key + '.pk3'), 'rb') as f:
      data = f.read()
    assert data in [_pk3(w) for w in (1, 2, 3, 4)]
