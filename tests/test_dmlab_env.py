"""Tests of the DeepMind Lab adapter and level cache, against the test double."""

import os
import pickle
import threading
import time

import dm_env
import numpy as np
import pytest

from distral_tf.dmlab import cache as cache_lib
from distral_tf.dmlab import env as env_lib
from tests import dmlab_double
from tests.dmlab_double import lab_double_fixture  # noqa: F401  pylint: disable=unused-import

NO_CACHE = env_lib.EnvConfig(level_cache_dir=None)



def _cached(cache_dir):
  """The files of a level cache directory but its lock files' folder."""
  return [n for n in os.listdir(cache_dir) if n != cache_lib.LOCK_DIR]

def _env(level='nav_maze_static_01', seed=0, config=NO_CACHE,
         action_set=env_lib.DEFAULT_ACTION_SET, **settings):
  return env_lib.DmLabEnv(level, seed, config=config, action_set=action_set,
                          settings={k: str(v) for k, v in settings.items()})


STANDARD = {
    'forward': (0, 0, 0, 1, 0, 0, 0), 'backward': (0, 0, 0, -1, 0, 0, 0),
    'strafe_left': (0, 0, -1, 0, 0, 0, 0), 'strafe_right': (0, 0, 1, 0, 0, 0, 0),
    'look_left': (-20, 0, 0, 0, 0, 0, 0), 'look_right': (20, 0, 0, 0, 0, 0, 0),
    'look_left_forward': (-20, 0, 0, 1, 0, 0, 0),
    'look_right_forward': (20, 0, 0, 1, 0, 0, 0), 'fire': (0, 0, 0, 0, 1, 0, 0)}


def _rows(action_set):
  return np.stack([env_lib.lab_action(i, action_set)
                   for i in range(env_lib.num_actions(action_set))])


def test_action_set_is_the_standard_nine_actions():
  assert env_lib.DEFAULT_ACTION_SET == 'standard'
  assert env_lib.num_actions() == 9
  rows = _rows('standard')
  assert rows.dtype == np.intc and rows.shape == (9, 7)
  # Columns: look_lr, look_du, strafe, move, fire, jump, crouch.
  for i, name in enumerate(env_lib.action_names()):
    assert tuple(rows[i]) == STANDARD[name]
  assert len(set(map(tuple, rows))) == 9


def test_jump_set_is_the_standard_nine_and_jump():
  assert env_lib.num_actions('standard_jump') == 10
  rows = _rows('standard_jump')
  np.testing.assert_array_equal(rows[:9], _rows('standard'))
  assert env_lib.action_names('standard_jump')[9] == 'jump'
  assert tuple(rows[9]) == (0, 0, 0, 0, 0, 1, 0)
  assert env_lib.ACTION_COMPONENTS[5] == 'JUMP'
  with pytest.raises(ValueError, match='unknown action set'):
    env_lib.num_actions('jump_only')


def test_lab_is_built_with_observation_size_renderer_and_settings(lab_double):
  config = env_lib.EnvConfig(height=60, width=80, renderer='hardware',
                             level_cache_dir=None)
  env = _env('lt_chasm', config=config, botCount=2)
  lab = env.lab
  assert lab.level == 'lt_chasm'
  assert lab.config == {'height': '60', 'width': '80', 'botCount': '2'}
  assert lab.renderer == 'hardware'
  assert lab.level_cache is None
  assert env.observation_spec() == dm_env.specs.Array((60, 80, 3), np.uint8,
                                                      name='RGB_INTERLEAVED')
  assert env.reset().observation.shape == (60, 80, 3)


def test_specs_default_to_72_by_96_and_nine_actions(lab_double):
  env = _env()
  obs_spec, action_spec = env.observation_spec(), env.action_spec()
  assert obs_spec.shape == (72, 96, 3) and obs_spec.dtype == np.uint8
  assert isinstance(action_spec, dm_env.specs.DiscreteArray)
  assert action_spec.num_values == 9
  timestep = env.reset()
  assert timestep.first()
  obs_spec.validate(timestep.observation)


@pytest.mark.parametrize('action_set', sorted(env_lib.ACTION_SETS))
def test_each_action_reaches_lab_as_its_intc_row_repeated_four_times(lab_double,
                                                                     action_set):
  env = _env(action_set=action_set)
  count = env_lib.num_actions(action_set)
  assert env.action_spec().num_values == count
  env.reset()
  for a in range(count):
    env.step(a)
  calls = env.lab.step_calls
  assert len(calls) == count
  for a, (action, num_steps) in enumerate(calls):
    assert action.dtype == np.intc and action.shape == (7,)
    np.testing.assert_array_equal(action, env_lib.lab_action(a, action_set))
    assert num_steps == 4
  assert env.lab.num_steps() == 4 * count
  with pytest.raises(ValueError):
    env.step(count)


def test_rewards_are_summed_over_the_repeated_frames(lab_double):
  env = _env(config=env_lib.EnvConfig(action_repeat=3, level_cache_dir=None))
  env.reset()
  assert env.step(0).reward == 3.0    # forward: +1 per frame
  assert env.step(1).reward == -3.0   # backward: -1 per frame
  assert env.step(8).reward == 30.0   # fire: +10 per frame
  assert env.step(4).reward == 0.0
  frames = dmlab_double.decode_frame(env.step(2).observation)
  assert frames == 15 == env.lab.num_steps()


def test_episode_ends_when_lab_stops_running(lab_double):
  env = _env(doubleEpisodeFrames=10)  # 10 frames: 2 full steps, then a partial one.
  first = env.reset()
  assert first.first() and first.reward is None
  mid = [env.step(0) for _ in range(2)]
  assert all(t.mid() and t.discount == 1.0 for t in mid)
  last = env.step(0)
  assert last.last() and last.discount == 0.0
  assert last.reward == 2.0  # only the 2 frames left of the episode
  assert not env.lab.is_running()
  # The last observation is the last one Lab could give (frame 8), not a new read.
  np.testing.assert_array_equal(last.observation, mid[-1].observation)
  assert dmlab_double.decode_frame(last.observation) == 8
  # Stepping after the end starts a new episode with a fresh seed.
  again = env.step(0)
  assert again.first()
  assert env.lab.reset_seeds[-1] != env.lab.reset_seeds[-2]
  assert dmlab_double.decode_frame(again.observation) == 0


def test_observations_are_copies_that_later_steps_do_not_change(lab_double):
  env = _env()
  first = env.reset().observation
  before = first.copy()
  env.step(0)
  np.testing.assert_array_equal(first, before)


def test_invalid_actions_are_rejected(lab_double):
  env = _env()
  env.reset()
  for bad in (-1, 9, 2.5):
    with pytest.raises(ValueError):
      env.step(bad)
  assert env.step(np.int64(3)).mid()
  assert env.step(np.array(5)).mid()


def test_double_rejects_what_the_real_lab_rejects(lab_double):
  lab = dmlab_double.Lab('lt_chasm', ['RGB_INTERLEAVED'], {'width': '8', 'height': '6'})
  with pytest.raises(TypeError):
    dmlab_double.Lab('lt_chasm', ['RGB_INTERLEAVED'], {'width': 8})
  lab.reset(seed=1)
  with pytest.raises(ValueError):
    lab.step(np.zeros(7, np.int64))
  with pytest.raises(ValueError):
    lab.step(np.zeros(6, np.intc))
  with pytest.raises(ValueError):
    lab.step(np.array([0, 0, 0, 2, 0, 0, 0], np.intc))
  lab.step(np.zeros(7, np.intc), num_steps=100)
  assert not lab.is_running()
  with pytest.raises(RuntimeError):
    lab.observations()
  with pytest.raises(RuntimeError):
    lab.step(np.zeros(7, np.intc))


def test_episode_seeds_are_deterministic_per_seed(lab_double):
  def seeds(seed, salt=()):
    env = env_lib.DmLabEnv('lt_chasm', seed, config=NO_CACHE, seed_salt=salt)
    observed = []
    for _ in range(5):
      observed.append(dmlab_double.decode_seed(env.reset().observation))
    assert observed == env.lab.reset_seeds
    return observed

  assert seeds(7) == seeds(7)
  assert seeds(7, (0, 1)) == seeds(7, (0, 1))
  assert len(set(seeds(7))) == 5
  # Distinct across workers (seed) and across tasks and runs (salt).
  streams = [seeds(7), seeds(8), seeds(7, (0, 1)), seeds(7, (0, 2)), seeds(7, (1, 1))]
  all_seeds = [s for stream in streams for s in stream]
  assert len(set(all_seeds)) == len(all_seeds)
  assert all(0 <= s < 2**31 - 1 for s in all_seeds)


def test_make_env_is_picklable_and_builds_the_level(lab_double):
  import functools  # pylint: disable=g-import-not-at-top
  make = functools.partial(env_lib.make_env, level='lt_chasm', config=NO_CACHE,
                           settings=(('botCount', '3'),), seed_salt=(0, 2))
  make = pickle.loads(pickle.dumps(make))
  env = make(5)
  assert env.level == 'lt_chasm'
  assert env.lab.config['botCount'] == '3'
  assert env.reset().first()
  env.close()
  assert env.lab is None


def test_config_rejects_bad_values():
  with pytest.raises(ValueError):
    env_lib.EnvConfig(renderer='opengl')
  with pytest.raises(ValueError):
    env_lib.EnvConfig(action_repeat=0)
  with pytest.raises(ValueError):
    env_lib.EnvConfig(height=0)


# -- level cache ---------------------------------------------------------------


def test_procedural_maps_are_compiled_once_across_environments(lab_double, tmp_path):
  config = env_lib.EnvConfig(level_cache_dir=str(tmp_path / 'cache'))
  level = 'contributed/dmlab30/explore_goal_locations_small'
  first = env_lib.DmLabEnv(level, 3, config=config)
  first_seeds = []
  for _ in range(3):
    first_seeds.append(dmlab_double.decode_seed(first.reset().observation))
  assert first.lab.maps_compiled == 3 and first.lab.maps_fetched == 0
  assert first.lab.level_cache.writes == 3
  assert len(_cached(tmp_path / 'cache')) == 3
  # Another worker with the same seed meets the same maps: all cache hits.
  second = env_lib.DmLabEnv(level, 3, config=config)
  for _ in range(3):
    second.reset()
  assert second.lab.reset_seeds == first_seeds
  assert second.lab.maps_compiled == 0 and second.lab.maps_fetched == 3
  assert second.lab.level_cache.hits == 3


def test_fixed_maps_of_our_own_levels_hit_the_cache_every_reset(lab_double, tmp_path):
  config = env_lib.EnvConfig(level_cache_dir=str(tmp_path))
  env = env_lib.DmLabEnv('distral_maze', 0, config=config,
                         settings={'mazeLayout': 'a'})
  for _ in range(4):
    env.reset()
  assert env.lab.maps_compiled == 1 and env.lab.maps_fetched == 3


def test_cache_off_compiles_every_time(lab_double):
  env = env_lib.DmLabEnv('distral_maze', 0, config=NO_CACHE, settings={'mazeLayout': 'b'})
  for _ in range(3):
    env.reset()
  assert env.lab.level_cache is None and env.lab.maps_compiled == 3


def test_cache_fetch_and_write(tmp_path):
  cache = cache_lib.LevelCache(str(tmp_path / 'c'))
  src, dst = tmp_path / 'src.pk3', tmp_path / 'dst.pk3'
  src.write_bytes(dmlab_double.pk3_bytes('m', b'map one'))
  assert not cache.fetch('abc123', str(dst)) and not dst.exists()
  cache.write('abc123', str(src))
  src.write_bytes(dmlab_double.pk3_bytes('m', b'map two'))
  cache.write('abc123', str(src))  # The first writer wins; no rewrite.
  assert cache.fetch('abc123', str(dst))
  assert dst.read_bytes() == dmlab_double.pk3_bytes('m', b'map one')
  assert (cache.hits, cache.misses, cache.writes) == (1, 1, 1)
  assert _cached(tmp_path / 'c') == ['abc123.pk3']  # No temporary files left.


def test_cache_keys_that_are_not_file_names_are_hashed(tmp_path):
  cache = cache_lib.LevelCache(str(tmp_path))
  path = cache.path('../../etc/passwd')
  assert os.path.dirname(path) == str(tmp_path)
  assert cache.path('a/b') != cache.path('a_b')


def test_cache_write_failure_is_not_fatal(tmp_path):
  cache = cache_lib.LevelCache(str(tmp_path / 'c'))
  cache.write('k', str(tmp_path / 'missing.pk3'))  # Source missing: a warning.
  assert cache.writes == 0 and _cached(tmp_path / 'c') == []


def test_a_map_being_written_stays_invisible_until_complete(tmp_path):
  cache = cache_lib.LevelCache(str(tmp_path / 'c'))
  source = tmp_path / 'compiling.pk3'
  os.mkfifo(source)  # The writer's copy blocks until we finish the map.
  dst = tmp_path / 'dst.pk3'
  writer = threading.Thread(target=cache.write, args=('k1', str(source)))
  writer.start()
  pk3 = dmlab_double.pk3_bytes('m', b'x' * 4096 + b'y' * 4096)
  with open(source, 'wb') as f:
    f.write(pk3[:4096])
    f.flush()
    time.sleep(0.2)  # The writer has copied the first half by now.
    assert not cache.fetch('k1', str(dst))
    assert not os.path.exists(cache.path('k1'))
    f.write(pk3[4096:])
  writer.join(timeout=10)
  assert cache.fetch('k1', str(dst))
  assert dst.read_bytes() == pk3
  assert _cached(tmp_path / 'c') == ['k1.pk3']


def test_an_unusable_cache_directory_costs_recompilation_not_the_run(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  cache = cache_lib.LevelCache(str(blocker / 'cache'))  # Cannot be created.
  src, dst = tmp_path / 'src.pk3', tmp_path / 'dst.pk3'
  src.write_bytes(b'map')
  cache.write('k', str(src))
  assert not cache.fetch('k', str(dst))
  assert (cache.hits, cache.misses, cache.writes) == (0, 1, 0)
