"""Every level of every DeepMind Lab level set, stepped on the real ``deepmind_lab``.

Skipped where DeepMind Lab is not installed (see docs/dmlab.md, "DeepMind Lab").
Each level runs in a fresh process, as in training (one Lab per process).
"""

import concurrent.futures
import multiprocessing as mp

import numpy as np
import pytest

pytest.importorskip('deepmind_lab')

# pylint: disable=g-import-not-at-top,wrong-import-position
from distral_tf.dmlab import env as env_lib
from distral_tf.dmlab import games

AGENT_STEPS = 3
LEVELS = [(name, index) for name, levels in games.LEVELS.items()
          for index in range(len(levels))]


def _step_level(name, index, cache_dir):
  """Builds task ``index`` of level set ``name``; returns what its steps showed."""
  config = env_lib.EnvConfig(level_cache_dir=cache_dir)
  level_set = games.build_level_set(name, None, seed=0, config=config)
  env = level_set.tasks[index].make_env(0)
  try:
    spec = env.lab.action_spec()
    action_set = games.ACTION_SETS[name]
    within_spec = [
        [int(c['min']) <= int(v) <= int(c['max'])
         for v, c in zip(env_lib.lab_action(a, action_set), spec)]
        for a in range(level_set.num_actions)]
    observations = [env.reset().observation]
    frames, kinds = [], []
    for step in range(AGENT_STEPS):  # The last action (JUMP on lasertag) first.
      timestep = env.step((step - 1) % level_set.num_actions)
      observations.append(timestep.observation)
      kinds.append(int(timestep.step_type))
      frames.append(env.lab.num_steps())
    return ([(o.shape, str(o.dtype)) for o in observations], frames, kinds,
            level_set.frames_per_step, [str(c['name']) for c in spec], within_spec)
  finally:
    env.close()


@pytest.fixture(scope='module', name='pool')
def pool_fixture():
  with concurrent.futures.ProcessPoolExecutor(
      max_workers=1, mp_context=mp.get_context('spawn'),
      max_tasks_per_child=1) as pool:
    yield pool


@pytest.mark.parametrize('name,index', LEVELS,
                         ids=[f'{n}-{games.LEVELS[n][i][0]}' for n, i in LEVELS])
def test_level_steps_with_four_frames_per_agent_step(pool, tmp_path_factory, name, index):
  cache_dir = str(tmp_path_factory.getbasetemp() / 'dmlab_cache')
  shapes, frames, kinds, repeat, spec_names, within_spec = pool.submit(
      _step_level, name, index, cache_dir).result(timeout=300)
  assert repeat == 4
  assert tuple(spec_names) == env_lib.ACTION_COMPONENTS
  assert all(all(row) for row in within_spec)
  assert all(shape == ((72, 96, 3), 'uint8') for shape in shapes)
  assert kinds == [1] * AGENT_STEPS  # MID: no episode ends this early.
  assert frames == [4 * (k + 1) for k in range(AGENT_STEPS)]
  assert np.all(np.diff(frames) == 4)
