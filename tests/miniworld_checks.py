"""Checks of the ``miniworld`` level set that render, run by test_miniworld_tasks.py.

Each ``check_*`` function runs in a fresh interpreter: MiniWorld cannot render in
a process that has imported TensorFlow, as the test process has. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import math
import sys

import dm_env
import numpy as np
import pytest

from distral_tf.envs import level_sets
from distral_tf.envs import miniworld_tasks
from distral_tf.envs import process

LEFT, RIGHT, FORWARD = range(3)
REPEAT = miniworld_tasks.ACTION_REPEAT


def _env(task: str, seed: int = 0) -> miniworld_tasks.MiniWorldEnvironment:
  env = miniworld_tasks.make_environment(task, seed)
  env.reset()
  return env


def _heading_error(game) -> float:
  """Signed angle (radians) from the agent's heading to the box; > 0: turn left."""
  dx, _, dz = np.subtract(game.box.pos, game.agent.pos)
  delta = math.atan2(-dz, dx) - game.agent.dir
  return (delta + math.pi) % (2 * math.pi) - math.pi


def _walk_to_box(env, max_steps: int = 200) -> list[dm_env.TimeStep]:
  """Turns towards the box and walks to it (rooms without obstacles)."""
  steps = []
  game = env.miniworld_env
  while len(steps) < max_steps:
    error = _heading_error(game)
    action = FORWARD if abs(error) < math.radians(35) else (LEFT if error > 0 else RIGHT)
    steps.append(env.step(action))
    if steps[-1].last():
      break
  return steps


def check_every_task_renders_conforming_frames_and_episodes():
  for task in miniworld_tasks.TASK_NAMES:
    _check_task(task)


def _check_task(task: str) -> None:
  env = miniworld_tasks.make_environment(task, seed=1)
  try:
    assert env.observation_spec().shape == (72, 96, 3)
    assert env.action_spec().num_values == 3
    first = env.reset()
    assert first.first() and first.reward is None
    env.observation_spec().validate(first.observation)
    assert first.observation.std() > 0  # A picture, not a blank frame.
    rng = np.random.default_rng(0)
    for _ in range(30):
      timestep = env.step(int(rng.integers(3)))
      env.observation_spec().validate(timestep.observation)
      if timestep.first():
        continue
      assert timestep.reward >= 0.0
      assert timestep.discount == (0.0 if timestep.last() and
                                   timestep.reward > 0 else 1.0)
  finally:
    env.close()

def check_reaching_the_box_terminates_with_miniworlds_reward():
  for task in ('one_room', 'hallway'):
    env = _env(task, seed=3)
    steps = _walk_to_box(env)
    last = steps[-1]
    assert last.last() and last.discount == 0.0, task
    game = env.miniworld_env
    # MiniWorld counts frames: the reward is 1 - 0.2 * frames / max frames.
    expected = 1.0 - 0.2 * game.step_count / game.max_episode_steps
    assert last.reward == pytest.approx(expected)
    assert all(s.reward == 0.0 for s in steps[:-1])
    # Action repeat: the episode took between 4 (n - 1) + 1 and 4 n frames.
    assert REPEAT * (len(steps) - 1) < game.step_count <= REPEAT * len(steps)
    assert env.step(FORWARD).first()  # The next step starts a new episode.


def check_step_limit_truncates_after_the_frames_of_the_task():
  env = _env('tmaze_left', seed=0)
  steps = []
  while not (steps and steps[-1].last()):
    steps.append(env.step(LEFT))  # Spinning on the spot never reaches the box.
  assert steps[-1].discount == 1.0 and steps[-1].reward == 0.0
  assert len(steps) * REPEAT == env.miniworld_env.max_episode_steps == 280


def check_one_step_repeats_the_action_four_frames():
  repeated = _env('hallway', seed=5)
  single = miniworld_tasks.MiniWorldEnvironment(
      miniworld_tasks.make_environment('hallway', 5).miniworld_env, seed=5,
      action_repeat=1)
  single.reset()
  np.testing.assert_allclose(repeated.miniworld_env.agent.pos,
                             single.miniworld_env.agent.pos)
  for action in (FORWARD, LEFT, FORWARD):
    after = repeated.step(action)
    for _ in range(REPEAT):
      single_after = single.step(action)
    np.testing.assert_allclose(repeated.miniworld_env.agent.pos,
                               single.miniworld_env.agent.pos)
    assert np.array_equal(after.observation, single_after.observation)
  assert repeated.miniworld_env.step_count == 3 * REPEAT

def check_invalid_action_raises():
  env = _env('one_room')
  with pytest.raises(ValueError, match='outside'):
    env.step(3)

def check_seeding_is_deterministic_and_seeds_differ():
  a, b, c = _env('one_room', 7), _env('one_room', 7), _env('one_room', 8)
  np.testing.assert_allclose(a.miniworld_env.box.pos, b.miniworld_env.box.pos)
  assert np.array_equal(a.step(LEFT).observation, b.step(LEFT).observation)
  assert not np.allclose(a.miniworld_env.box.pos, c.miniworld_env.box.pos)

def check_runs_inside_an_env_process():
  task = level_sets.make_level_set('miniworld', 2).tasks[1]
  env = process.EnvProcess(task.make_env, seed=4, name=task.name)
  try:
    local = task.make_env(4)
    assert np.array_equal(env.reset().observation, local.reset().observation)
    for action in (FORWARD, RIGHT, FORWARD):
      assert np.array_equal(env.step(action).observation,
                            local.step(action).observation)
  finally:
    env.close()


if __name__ == '__main__':
  assert 'tensorflow' not in sys.modules
  globals()[sys.argv[1]]()
