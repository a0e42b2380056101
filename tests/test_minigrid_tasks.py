"""Tests of the ``minigrid`` pixel level set (distral_tf/envs/minigrid_tasks.py)."""

from __future__ import annotations

import pickle

import dm_env
import numpy as np
import pytest

from distral_tf import errors
from distral_tf.envs import level_sets
from distral_tf.envs import minigrid_tasks
from distral_tf.envs import process

LEFT, RIGHT, FORWARD, TOGGLE = range(4)
# MiniGrid's agent directions as (dx, dy).
_DIRECTIONS = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}
_SIDE = minigrid_tasks.VIEW_SIZE * minigrid_tasks.DEFAULT_TILE_SIZE


def _env(task: str, seed: int = 0) -> minigrid_tasks.MiniGridEnvironment:
  env = minigrid_tasks.make_environment(task, seed)
  env.reset()
  return env


def _face(env, direction: int) -> list[dm_env.TimeStep]:
  steps = []
  while env.minigrid_env.agent_dir != direction:
    steps.append(env.step(LEFT))
  return steps


def _drive_to(env, target: tuple[int, int], y_first: bool = False
              ) -> list[dm_env.TimeStep]:
  """Walks to ``target`` along the axes (the path must be free)."""
  steps = []
  game = env.minigrid_env
  while tuple(int(v) for v in game.agent_pos) != target:
    dx, dy = np.subtract(target, game.agent_pos)
    if (y_first and dy) or not dx:
      move = (0, int(np.sign(dy)))
    else:
      move = (int(np.sign(dx)), 0)
    steps += _face(env, _DIRECTIONS[move])
    steps.append(env.step(FORWARD))
    assert not any(s.last() for s in steps[:-1])
    if steps[-1].last():
      break
  return steps


def _find(env, object_type: str) -> list[tuple[int, int]]:
  grid = env.minigrid_env.grid
  return [(i, j) for j in range(grid.height) for i in range(grid.width)
          if grid.get(i, j) is not None and grid.get(i, j).type == object_type]


# -- the level set -------------------------------------------------------------------


def test_level_set_has_all_tasks_by_default():
  level_set = level_sets.make_level_set('minigrid', None, 0)
  assert level_set.name == 'minigrid'
  assert level_set.task_names == minigrid_tasks.TASK_NAMES
  assert 4 <= len(level_set.tasks) <= 8
  assert level_set.num_actions == 4
  assert level_set.frames_per_step == 1
  assert level_set.observation_kind == 'pixels'


def test_smaller_num_tasks_takes_the_first_ones():
  level_set = minigrid_tasks.make_level_set('minigrid', 3, 0)
  assert level_set.task_names == minigrid_tasks.TASK_NAMES[:3]


@pytest.mark.parametrize('num_tasks', [len(minigrid_tasks.TASK_NAMES) + 1, 0])
def test_bad_num_tasks_is_a_one_line_usage_error(num_tasks):
  with pytest.raises(errors.UsageError, match='num_tasks') as e:
    minigrid_tasks.make_level_set('minigrid', num_tasks, 0)
  assert '\n' not in str(e.value)


def test_wrong_level_set_name_is_a_usage_error():
  with pytest.raises(errors.UsageError, match='mazes'):
    minigrid_tasks.make_level_set('mazes', None, 0)
  with pytest.raises(errors.UsageError, match='no_such_task'):
    minigrid_tasks.make_environment('no_such_task', 0)


def test_tile_size_flag_sets_the_observation_size():
  level_set = minigrid_tasks.make_level_set('minigrid', 1, 0,
                                            dict(minigrid_tile_size=4))
  observation = level_set.tasks[0].make_env(0).reset().observation
  assert observation.shape == (28, 28, 3)
  with pytest.raises(errors.UsageError, match='minigrid_tile_size'):
    minigrid_tasks.make_level_set('minigrid', 1, 0, dict(minigrid_tile_size=2))


def test_task_factories_are_picklable():
  for task in minigrid_tasks.make_level_set('minigrid', None, 0).tasks:
    make_env = pickle.loads(pickle.dumps(task.make_env))
    env = make_env(5)
    assert env.reset().first()
    env.close()


def test_all_tasks_share_conforming_specs():
  observation_specs, action_specs = set(), set()
  for task in minigrid_tasks.TASK_NAMES:
    env = minigrid_tasks.make_environment(task, 1)
    obs_spec, act_spec = env.observation_spec(), env.action_spec()
    assert obs_spec.shape == (_SIDE, _SIDE, 3) and obs_spec.dtype == np.uint8
    assert act_spec.num_values == 4 and act_spec.shape == ()
    observation_specs.add(repr(obs_spec))
    action_specs.add(repr(act_spec))
    obs_spec.validate(env.reset().observation)
    for action in range(4):
      obs_spec.validate(env.step(np.int32(action)).observation)
  assert len(observation_specs) == 1 and len(action_specs) == 1


def test_invalid_action_raises():
  env = _env('empty_6x6')
  with pytest.raises(ValueError, match='outside'):
    env.step(4)
  with pytest.raises(ValueError, match='outside'):
    env.step(-1)


# -- episodes ------------------------------------------------------------------------


@pytest.mark.parametrize('task', minigrid_tasks.TASK_NAMES)
def test_random_episodes_have_proper_step_types(task):
  env = minigrid_tasks.make_environment(task, 3)
  max_steps = env.minigrid_env.max_steps
  rng = np.random.default_rng(0)
  timestep, length, endings = env.reset(), 0, set()
  assert timestep.first() and timestep.reward is None and timestep.discount is None
  for _ in range(1500):
    timestep = env.step(rng.integers(4))
    if timestep.first():
      assert length == 0
      continue
    length += 1
    assert 0.0 <= timestep.reward <= 1.0
    if timestep.mid():
      assert timestep.discount == 1.0 and timestep.reward == 0.0
      assert length < max_steps
    else:
      if timestep.discount == 1.0:  # Truncated: exactly at the step limit.
        assert length == max_steps and timestep.reward == 0.0
        endings.add('truncation')
      else:
        assert timestep.discount == 0.0 and length <= max_steps
        endings.add('goal' if timestep.reward > 0 else 'lava')
      assert env.step(0).first()
      length = 0
  assert endings  # Every task ends some episodes within 1500 random steps.


def test_reaching_the_goal_terminates_with_minigrid_reward():
  env = _env('empty_6x6', seed=7)
  (goal,) = _find(env, 'goal')
  steps = _drive_to(env, goal)
  last = steps[-1]
  assert last.last() and last.discount == 0.0
  assert last.reward == pytest.approx(1 - 0.9 * len(steps) / 144)
  assert all(s.mid() for s in steps[:-1])
  assert env.step(FORWARD).first()


def test_lava_terminates_with_zero_reward():
  env = _env('lava_gap_s6', seed=2)
  # The agent starts at (1, 1); column 1 is free, so go down it, then east.
  steps = _drive_to(env, _find(env, 'lava')[-1], y_first=True)
  assert steps[-1].last() and steps[-1].discount == 0.0
  assert steps[-1].reward == 0.0


def test_step_limit_truncates():
  env = _env('multiroom_n2_s4', seed=1)
  steps = [env.step(LEFT) for _ in range(40)]
  assert all(s.mid() for s in steps[:-1])
  assert steps[-1].last() and steps[-1].discount == 1.0 and steps[-1].reward == 0.0
  assert env.step(LEFT).first()


def test_toggle_opens_the_door():
  env = _env('door_7x7', seed=4)
  (door,) = _find(env, 'door')
  _drive_to(env, (door[0] - 1, door[1]))
  _face(env, 0)
  before = env.step(FORWARD)  # The closed door blocks the way.
  assert tuple(env.minigrid_env.agent_pos) == (door[0] - 1, door[1])
  opened = env.step(TOGGLE)
  assert env.minigrid_env.grid.get(*door).is_open
  assert not np.array_equal(before.observation, opened.observation)
  env.step(FORWARD)
  assert tuple(env.minigrid_env.agent_pos) == door


# -- seeding ---------------------------------------------------------------------------


def _observations(task: str, seed: int, num_steps: int) -> list[np.ndarray]:
  env = minigrid_tasks.make_environment(task, seed)
  rng = np.random.default_rng(123)
  result = [env.reset().observation]
  result += [env.step(a).observation for a in rng.integers(4, size=num_steps)]
  return result


def _first_layouts(task: str, seed: int, num_episodes: int = 3) -> list[str]:
  env = minigrid_tasks.make_environment(task, seed)
  layouts = []
  for _ in range(num_episodes):
    env.reset()
    game = env.minigrid_env
    layouts.append(f'{game.grid.encode().tobytes()!r} {game.agent_pos} '
                   f'{game.agent_dir}')
  return layouts


@pytest.mark.parametrize('task', minigrid_tasks.TASK_NAMES)
def test_seeding_is_deterministic_and_seeds_differ(task):
  first, again = _observations(task, 11, 400), _observations(task, 11, 400)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert _first_layouts(task, 11) == _first_layouts(task, 11)
  assert _first_layouts(task, 11) != _first_layouts(task, 12)
  # Successive episodes of one environment differ too.
  assert len(set(_first_layouts(task, 11))) > 1


# -- the view ---------------------------------------------------------------------------


@pytest.mark.parametrize('task', minigrid_tasks.TASK_NAMES)
def test_view_matches_minigrids_own_rendering(task):
  env = _env(task, seed=5)
  game = env.minigrid_env
  tile = minigrid_tasks.DEFAULT_TILE_SIZE
  rng = np.random.default_rng(1)
  for action in rng.integers(4, size=300):
    observation = env.step(action).observation
    # Our view equals MiniGrid's own symbolic view...
    assert np.array_equal(game.gen_obs()['image'],
                          type(game).gen_obs(game)['image'])
    # ...and its pixels MiniGrid's own rendering of the cells in sight.
    _, visible = game.gen_obs_grid()
    in_sight = np.kron(visible.T, np.ones((tile, tile), bool))
    reference = game.get_pov_render(tile)
    assert np.array_equal(observation[in_sight], reference[in_sight])
    assert not observation[~in_sight].any()


def test_view_changes_when_turning_and_four_turns_come_back():
  env = minigrid_tasks.make_environment('random_goal_7x7', 0)
  start = env.reset().observation
  turns = [env.step(LEFT).observation for _ in range(4)]
  assert any(not np.array_equal(start, view) for view in turns[:3])
  assert np.array_equal(start, turns[3])


def test_forward_changes_the_view_unless_blocked():
  env = _env('empty_6x6', seed=3)
  game = env.minigrid_env
  _drive_to(env, (1, int(game.agent_pos[1])))
  position = tuple(game.agent_pos)
  view = _face(env, 2)[-1].observation  # West, into the outer wall.
  bumped = env.step(FORWARD).observation
  assert tuple(game.agent_pos) == position
  assert np.array_equal(view, bumped)
  env.step(LEFT)
  view = env.step(LEFT).observation  # East, into the room.
  moved = env.step(FORWARD).observation
  assert tuple(game.agent_pos) == (position[0] + 1, position[1])
  assert not np.array_equal(view, moved)


# -- processes and speed ------------------------------------------------------------------


def test_runs_inside_an_env_process():
  task = minigrid_tasks.make_level_set('minigrid', None, 0).tasks[-1]
  env = process.EnvProcess(task.make_env, seed=9, name=task.name)
  try:
    assert env.observation_spec().shape == (_SIDE, _SIDE, 3)
    local = task.make_env(9)  # The same seed, built here.
    first = env.reset()
    assert first.first()
    assert np.array_equal(first.observation, local.reset().observation)
    for action in (FORWARD, LEFT, TOGGLE):
      timestep = env.step(action)
      assert timestep.observation.shape == (_SIDE, _SIDE, 3)
      assert timestep.observation.dtype == np.uint8
      assert np.array_equal(timestep.observation, local.step(action).observation)
  finally:
    env.close()


def test_measure_frames_per_second_is_positive():
  assert minigrid_tasks.measure_frames_per_second('empty_6x6', 200) > 0
