"""The level cache against a real DeepMind Lab build: a damaged map is compiled again.

DeepMind Lab allows one instance per process and ends its process when it
cannot load a map, so each environment is built in a process of its own.
"""

import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

pytest.importorskip('deepmind_lab')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600

# Our own maze (mazes task distral_maze_a): its map is generated and compiled
# the first time, and always the same, so the second environment meets it in
# the cache.
BUILD_AND_RESET = textwrap.dedent('''
    import sys
    from distral_tf.dmlab import env as env_lib
    from distral_tf.dmlab import games
    env = env_lib.DmLabEnv(
        'distral_maze', 0, config=env_lib.EnvConfig(level_cache_dir=sys.argv[1]),
        settings=dict(levelDirectory=games.LUA_DIR, mazeLayout='a'))
    env.reset()
    env.step(0)
    env.close()
    print('reset done', flush=True)
    ''')


def _build_and_reset(cache_dir) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-c', BUILD_AND_RESET, str(cache_dir)],
                        capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=TIMEOUT)


def _maps(cache_dir) -> list[str]:
  return sorted(n for n in os.listdir(cache_dir) if n.endswith('.pk3'))


def test_a_damaged_cached_map_is_removed_and_compiled_again(tmp_path):
  cache = tmp_path / 'levels'
  first = _build_and_reset(cache)
  assert first.returncode == 0 and 'reset done' in first.stdout, first.stderr[-3000:]
  [name] = _maps(cache)
  cached = cache / name
  with zipfile.ZipFile(cached) as archive:
    assert 'maps/distral_maze_a.bsp' in archive.namelist()
  good_size = cached.stat().st_size
  cached.write_bytes(os.urandom(good_size // 2))  # Random bytes, cut short.

  second = _build_and_reset(cache)
  assert second.returncode == 0 and 'reset done' in second.stdout, (
      second.stdout[-2000:] + second.stderr[-3000:])
  assert "Didn't find map" not in second.stderr
  assert 'does not load' in second.stderr  # The cache's warning, naming the map.
  assert _maps(cache) == [name]  # Compiled and stored again under its key.
  with zipfile.ZipFile(cached) as archive:
    assert archive.testzip() is None
    assert 'maps/distral_maze_a.bsp' in archive.namelist()


# Two workers of the same level, started together: one compiles the map, the
# other waits for it and loads it from the cache.
TWO_WORKERS = textwrap.dedent('''
    import sys
    from distral_tf.dmlab import games
    from distral_tf.dmlab import env as env_lib
    from distral_tf.envs import process
    config = env_lib.EnvConfig(level_cache_dir=sys.argv[1])
    level_set = games.build_level_set('mazes', None, seed=0, config=config)
    task = level_set.tasks[6]  # distral_maze_a
    envs = process.start_all([(task.make_env, seed, f'worker{seed}') for seed in (0, 1)])
    process.reset_all(envs)
    counts = [env.call('level_cache_counts') for env in envs]
    for env in envs:
      env.close()
    print('counts', sorted(counts), flush=True)
    ''')


def test_two_workers_started_together_compile_the_map_once(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  out = subprocess.run([sys.executable, '-c', TWO_WORKERS, str(tmp_path / 'levels')],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=TIMEOUT)
  assert out.returncode == 0, out.stderr[-3000:]
  line, = [l for l in out.stdout.splitlines() if l.startswith('counts')]
  # (hits, misses, writes, waited) of each worker: one compiled and stored the
  # map, the other waited for it and read it from the cache.
  assert line == 'counts [(0, 1, 1, 0), (1, 0, 0, 1)]'
  assert len(_maps(tmp_path / 'levels')) == 1
