"""The ``minigrid`` level set: pixel navigation tasks that need no DeepMind Lab.

Seven small MiniGrid worlds in which the agent must reach a green goal square:
open rooms, rooms split by walls with gaps, a lava wall with a gap, rooms joined
by closed doors. All share one action space and one observation: the egocentric
7x7-cell view ahead of the agent as a uint8 RGB image (56x56 with the default
8-pixel tiles); cells hidden behind walls are black.

Actions index ``ACTIONS``: turn left, turn right, forward, toggle (opens doors).
One agent step is one frame. Rewards and step limits are MiniGrid's: reaching
the goal gives ``1 - 0.9 * steps / max_steps`` (``dm_env.termination``), lava
ends the episode with 0 (a termination too), running out of steps is a
``dm_env.truncation``. An environment draws its layouts from a generator seeded
once with its seed. MiniGrid (with pygame) is imported only when first needed.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Mapping

import dm_env
from dm_env import specs
import numpy as np
from absl import flags

from distral_tf import errors
from distral_tf.envs import level_sets
from distral_tf.envs import minigrid_view

LEVEL_SET_NAME = 'minigrid'

DEFAULT_TILE_SIZE = 8
MIN_TILE_SIZE = 4
MAX_TILE_SIZE = 32
VIEW_SIZE = 7  # Cells along each side of the agent's view (MiniGrid's default).

flags.DEFINE_integer(
    'minigrid_tile_size', DEFAULT_TILE_SIZE,
    f'Pixels per grid cell in the minigrid level set; observations are '
    f'{VIEW_SIZE}*tile_size pixels square.')

# Our action i is MiniGrid's action ACTIONS[i] (left, right, forward, toggle).
ACTION_NAMES = ('left', 'right', 'forward', 'toggle')
ACTIONS = (0, 1, 2, 5)
NUM_ACTIONS = len(ACTIONS)

_MISSION = 'get to the green goal square'


def _import_minigrid() -> Any:
  """Imports MiniGrid (quietly); a missing package is the user's to fix."""
  os.environ.setdefault('PYGAME_HIDE_SUPPORT_PROMPT', '1')
  try:
    import minigrid  # pylint: disable=g-import-not-at-top
    import minigrid.envs  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise errors.UsageError(
        f'--level_set={LEVEL_SET_NAME} needs the minigrid package '
        f'(pip install minigrid): {e}') from e
  return minigrid


# -- dm_env adapter --------------------------------------------------------------


class MiniGridEnvironment(dm_env.Environment):
  """A MiniGrid world as a ``dm_env.Environment`` with pixel observations."""

  def __init__(self, env: Any, seed: int, tile_size: int = DEFAULT_TILE_SIZE,
               name: str = LEVEL_SET_NAME):
    """Wraps ``env`` (a ``MiniGridEnv``); its first reset is seeded with ``seed``."""
    self._env = env
    self._seed = seed
    self._seeded = False
    self._renderer = minigrid_view.ViewRenderer(env.agent_view_size, tile_size)
    self._view = minigrid_view.EgocentricView(env.agent_view_size)
    # MiniGrid's step() and reset() call gen_obs(); ours returns the same.
    env.gen_obs = self._gen_obs
    self._reset_next_step = True
    self.name = name

  @property
  def minigrid_env(self) -> Any:
    """The wrapped ``MiniGridEnv`` (agent position, grid; for inspection)."""
    return self._env

  def _gen_obs(self) -> dict[str, Any]:
    env = self._env
    return {'image': self._view.image(env), 'direction': env.agent_dir,
            'mission': env.mission}

  def reset(self) -> dm_env.TimeStep:
    seed = None if self._seeded else self._seed
    self._seeded = True
    obs, _ = self._env.reset(seed=seed)
    self._reset_next_step = False
    return dm_env.restart(self._renderer.render(obs['image']))

  def step(self, action: Any) -> dm_env.TimeStep:
    if self._reset_next_step:
      return self.reset()
    index = int(action)
    if not 0 <= index < NUM_ACTIONS:
      raise ValueError(f'action {action} is outside [0, {NUM_ACTIONS})')
    obs, reward, terminated, truncated, _ = self._env.step(ACTIONS[index])
    observation = self._renderer.render(obs['image'])
    reward = float(reward)
    if terminated:
      self._reset_next_step = True
      return dm_env.termination(reward, observation)
    if truncated:
      self._reset_next_step = True
      return dm_env.truncation(reward, observation)
    return dm_env.transition(reward, observation)

  def facing(self) -> str:
    """What the cell in front of the agent holds: 'empty', 'wall', 'goal', 'lava',
    'closed door', 'open door', 'locked door', ... (MiniGrid's object types)."""
    cell = self._env.grid.get(*self._env.front_pos)
    if cell is None:
      return 'empty'
    if cell.type == 'door':
      return 'open door' if cell.is_open else ('locked door' if cell.is_locked
                                               else 'closed door')
    return cell.type

  def observation_spec(self) -> specs.BoundedArray:
    return specs.BoundedArray(self._renderer.shape, np.uint8, minimum=0,
                              maximum=255, name='pixels')

  def action_spec(self) -> specs.DiscreteArray:
    return specs.DiscreteArray(NUM_ACTIONS, dtype=np.int32, name='action')

  def close(self) -> None:
    self._env.close()


# -- our own layouts ---------------------------------------------------------------


def _mission() -> str:
  return _MISSION


@functools.cache
def _layout_env_class() -> type:
  """A ``MiniGridEnv`` drawn by a layout function (defined on first use)."""
  minigrid = _import_minigrid()

  class LayoutEnv(minigrid.minigrid_env.MiniGridEnv):
    """A walled square grid; ``layout(env)`` fills it in."""

    def __init__(self, layout: Callable[[Any], None], size: int):
      self._layout = layout
      super().__init__(
          mission_space=minigrid.core.mission.MissionSpace(mission_func=_mission),
          grid_size=size, max_steps=4 * size**2, see_through_walls=False)

    def _gen_grid(self, width: int, height: int) -> None:
      self.grid = minigrid.core.grid.Grid(width, height)
      self.grid.wall_rect(0, 0, width, height)
      self._layout(self)
      self.mission = _MISSION

  return LayoutEnv


def _layout_random_goal(env: Any) -> None:
  """An open room; the goal and the agent anywhere."""
  env.place_obj(_import_minigrid().core.world_object.Goal())
  env.place_agent()


def _layout_four_rooms(env: Any) -> None:
  """Four rooms around a cross of walls, one gap at random in each arm."""
  grid, rng, width, height = env.grid, env.np_random, env.width, env.height
  mid_x, mid_y = width // 2, height // 2
  grid.vert_wall(mid_x, 0)
  grid.horz_wall(0, mid_y)
  grid.set(mid_x, int(rng.integers(1, mid_y)), None)
  grid.set(mid_x, int(rng.integers(mid_y + 1, height - 1)), None)
  grid.set(int(rng.integers(1, mid_x)), mid_y, None)
  grid.set(int(rng.integers(mid_x + 1, width - 1)), mid_y, None)
  env.place_obj(_import_minigrid().core.world_object.Goal())
  env.place_agent()


def _layout_door(env: Any) -> None:
  """Two rooms joined by a closed door; the agent left, the goal right."""
  minigrid = _import_minigrid()
  objects, rng = minigrid.core.world_object, env.np_random
  width, height, wall_x = env.width, env.height, env.width // 2
  env.grid.vert_wall(wall_x, 0)
  color = str(rng.choice(minigrid.core.constants.COLOR_NAMES))
  env.put_obj(objects.Door(color, is_open=False), wall_x,
              int(rng.integers(1, height - 1)))
  env.place_obj(objects.Goal(), top=(wall_x + 1, 0),
                size=(width - wall_x - 1, height))
  env.place_agent(top=(0, 0), size=(wall_x, height))


# -- tasks -------------------------------------------------------------------------

# Task name -> what it is, in level-set order: a smaller --num_tasks takes the
# first ones, so the easiest come first.
TASK_DESCRIPTIONS = {
    'empty_6x6': 'MiniGrid-Empty-Random-6x6: open room, goal in the far corner',
    'random_goal_7x7': 'open 7x7 room, goal and start anywhere',
    'four_rooms_9x9': '9x9 four rooms, random gaps, goal and start anywhere',
    'door_7x7': 'two rooms joined by a closed door, goal behind it',
    'crossing_s9n1': 'MiniGrid-SimpleCrossingS9N1: a wall with one gap',
    'lava_gap_s6': 'MiniGrid-LavaGapS6: a lava wall with one gap',
    'multiroom_n2_s4': 'MiniGrid-MultiRoom-N2-S4: two small rooms and a door',
}
TASK_NAMES = tuple(TASK_DESCRIPTIONS)


def _new_minigrid_env(task: str) -> Any:
  """A new ``MiniGridEnv`` of ``task``."""
  minigrid = _import_minigrid()
  envs, layout_env = minigrid.envs, _layout_env_class()
  match task:
    case 'empty_6x6':
      return envs.EmptyEnv(size=6, agent_start_pos=None)
    case 'random_goal_7x7':
      return layout_env(_layout_random_goal, 7)
    case 'four_rooms_9x9':
      return layout_env(_layout_four_rooms, 9)
    case 'door_7x7':
      return layout_env(_layout_door, 7)
    case 'crossing_s9n1':
      return envs.CrossingEnv(size=9, num_crossings=1,
                              obstacle_type=minigrid.core.world_object.Wall)
    case 'lava_gap_s6':
      return envs.LavaGapEnv(size=6)
    case 'multiroom_n2_s4':
      return envs.MultiRoomEnv(minNumRooms=2, maxNumRooms=2, maxRoomSize=4)
  raise errors.UsageError(
      f'unknown minigrid task {task!r}; valid: {", ".join(TASK_NAMES)}')


def make_environment(task: str, seed: int,
                     tile_size: int = DEFAULT_TILE_SIZE) -> MiniGridEnvironment:
  """A fresh environment of ``task`` whose layouts are drawn with ``seed``."""
  return MiniGridEnvironment(_new_minigrid_env(task), seed, tile_size, name=task)


def make_level_set(name: str, num_tasks: int | None = None, seed: int = 0,
                   options: Mapping[str, Any] | None = None) -> level_sets.LevelSet:
  """The ``minigrid`` level set: its first ``num_tasks`` tasks (default: all).

  ``seed`` is unused: every environment is seeded when it is built.
  ``options``: flag values by name (``level_sets.make_level_set``), of which
  ``minigrid_tile_size`` (default ``DEFAULT_TILE_SIZE``).
  """
  del seed
  task_names = level_sets.first_tasks(LEVEL_SET_NAME, __name__, name, TASK_NAMES,
                                      num_tasks)
  tile_size = (options or {}).get('minigrid_tile_size', DEFAULT_TILE_SIZE)
  if not MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE:
    raise errors.UsageError(f'--minigrid_tile_size must be in [{MIN_TILE_SIZE}, '
                            f'{MAX_TILE_SIZE}], got {tile_size}')
  _import_minigrid()  # A missing package is reported here, not in a child process.
  tasks = tuple(
      level_sets.Task(name=task,
                      make_env=functools.partial(make_environment, task,
                                                 tile_size=tile_size))
      for task in task_names)
  return level_sets.LevelSet(name=LEVEL_SET_NAME, tasks=tasks,
                             num_actions=NUM_ACTIONS, frames_per_step=1,
                             observation_kind='pixels', action_names=ACTION_NAMES)


def measure_frames_per_second(
    task: str, num_frames: int = 20_000, seed: int = 0,
    tile_size: int = DEFAULT_TILE_SIZE,
    clock: Callable[[], float] = time.perf_counter) -> float:
  """Environment-only frames/s of ``task``: one process, uniform random actions.

  Resets at episode ends are included, as in training. ``time.process_time``
  as ``clock`` counts only this process's CPU time (steadier on a busy machine).
  """
  env = make_environment(task, seed, tile_size)
  actions = np.random.default_rng(seed).integers(NUM_ACTIONS, size=num_frames)
  env.reset()
  start = clock()
  for action in actions:
    env.step(action)
  elapsed = clock() - start
  env.close()
  return num_frames / elapsed
