"""The ``two_rooms`` level set: one task per goal in the right room (section 4.1).

The world itself (map, dynamics, the ``dm_env`` class and the batched copies)
is ``envs.two_rooms``; this module draws the tasks' goals, names them
(``goal_r<row>_c<col>``), reads the ``--two_rooms_*`` flags into a
``two_rooms.TwoRoomsConfig`` and builds the ``level_sets.LevelSet``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping, Sequence

import numpy as np
from absl import flags

from distral_tf import errors
from distral_tf.envs import level_sets
from distral_tf.envs import two_rooms

LEVEL_SET_NAME = 'two_rooms'

flags.DEFINE_integer('two_rooms_room_size', two_rooms.DEFAULTS.room_size,
                     'Side of each square room in cells (odd, >= 3).')
flags.DEFINE_integer('two_rooms_corridor_length', two_rooms.DEFAULTS.corridor_length,
                     'Length in cells of the corridor joining the two rooms (>= 1).')
flags.DEFINE_float('two_rooms_step_penalty', two_rooms.DEFAULTS.step_penalty,
                   'Reward of every ordinary step (a small penalty).')
flags.DEFINE_float('two_rooms_wall_penalty', two_rooms.DEFAULTS.wall_penalty,
                   'Reward of a step into a wall (replaces the step penalty).')
flags.DEFINE_float('two_rooms_goal_reward', two_rooms.DEFAULTS.goal_reward,
                   'Reward of the step reaching the goal; the episode then ends.')
flags.DEFINE_integer('two_rooms_step_limit', two_rooms.DEFAULTS.step_limit,
                     'Steps after which an episode is truncated.')
flags.DEFINE_integer('two_rooms_task_seed', None,
                     'Seed of the goal draw; default: the run\'s --seed.')


def make_env_batch(tasks: Sequence[level_sets.Task], seed: int
                   ) -> two_rooms.TwoRoomsEnvBatch:
  """One ``TwoRoomsEnvBatch`` copy per entry of ``tasks`` (``LevelSet.make_batch``)."""
  config, goals = _config_and_goals(tasks)
  return two_rooms.TwoRoomsEnvBatch(config, goals, seed)


def config_from_options(options: Mapping[str, Any]) -> two_rooms.TwoRoomsConfig:
  """The world the ``--two_rooms_*`` values in ``options`` select (defaults if absent).

  Raises ``errors.UsageError`` on bad values.
  """
  option = lambda field: options.get(f'two_rooms_{field}',
                                     getattr(two_rooms.DEFAULTS, field))
  config = two_rooms.TwoRoomsConfig(
      room_size=option('room_size'),
      corridor_length=option('corridor_length'),
      step_penalty=option('step_penalty'),
      wall_penalty=option('wall_penalty'),
      goal_reward=option('goal_reward'),
      step_limit=option('step_limit'))
  if config.room_size < 3 or config.room_size % 2 == 0:
    raise errors.UsageError(
        f'--two_rooms_room_size must be odd and >= 3, got {config.room_size}')
  if config.corridor_length < 1:
    raise errors.UsageError(
        f'--two_rooms_corridor_length must be >= 1, got {config.corridor_length}')
  if config.step_limit < 1:
    raise errors.UsageError(
        f'--two_rooms_step_limit must be >= 1, got {config.step_limit}')
  return config


def draw_goals(config: two_rooms.TwoRoomsConfig, num_tasks: int, seed: int) -> list[int]:
  """``num_tasks`` distinct goal cells drawn in the right room (the start room is the left)."""
  layout = two_rooms.layout_of(config)
  if not 1 <= num_tasks <= len(layout.goal_cells):
    raise errors.UsageError(
        f'--num_tasks must be in [1, {len(layout.goal_cells)}] for two_rooms '
        f'(one goal per right-room cell), got {num_tasks}')
  rng = np.random.default_rng(seed)
  return [int(c) for c in rng.choice(layout.goal_cells, size=num_tasks, replace=False)]


def task_name(layout: two_rooms.Layout, goal_cell: int) -> str:
  row, col = layout.cells[goal_cell]
  return f'goal_r{row}_c{col}'


def optimal_returns(options: Mapping[str, Any] | None,
                    task_names: Sequence[str]) -> dict[str, float]:
  """``optimal_return`` of each task named by ``task_name``, in the world of ``options``.

  Raises ``ValueError`` for a name that is not ``goal_r<row>_c<col>`` of a free cell.
  """
  config = config_from_options(options) if options is not None else two_rooms.DEFAULTS
  layout = two_rooms.layout_of(config)
  out = {}
  for name in task_names:
    match = re.fullmatch(r'goal_r(\d+)_c(\d+)', name)
    if match is None:
      raise ValueError(f'{name!r} is not a two_rooms task name')
    cell = layout.cell_index(int(match.group(1)), int(match.group(2)))
    out[name] = two_rooms.optimal_return(config, cell)
  return out


def make_level_set(name: str, num_tasks: int | None, seed: int,
                   options: Mapping[str, Any] | None = None) -> level_sets.LevelSet:
  """The ``two_rooms`` level set: one task per goal drawn from ``seed``.

  ``options``: flag values by name (``level_sets.make_level_set``); None: the
  defaults.
  """
  if name != LEVEL_SET_NAME:
    raise errors.UsageError(f'unknown level set {name!r} for the two-room world; '
                            f'valid choice: {LEVEL_SET_NAME}')
  config = config_from_options(options) if options is not None else two_rooms.DEFAULTS
  task_seed = seed
  if options is not None and options.get('two_rooms_task_seed') is not None:
    task_seed = options['two_rooms_task_seed']
  num_tasks = two_rooms.DEFAULTS.num_tasks if num_tasks is None else num_tasks
  layout = two_rooms.layout_of(config)
  tasks = []
  for cell in draw_goals(config, num_tasks, task_seed):
    row, col = (int(x) for x in layout.cells[cell])
    tasks.append(level_sets.Task(
        name=task_name(layout, cell),
        make_env=functools.partial(two_rooms.TwoRooms, goal=(row, col), config=config)))
  return level_sets.LevelSet(name=LEVEL_SET_NAME, tasks=tuple(tasks),
                             num_actions=two_rooms.NUM_ACTIONS, frames_per_step=1,
                             observation_kind='vector', make_batch=make_env_batch)


def _config_and_goals(tasks: Sequence[level_sets.Task]
                      ) -> tuple[two_rooms.TwoRoomsConfig, list[int]]:
  configs = {t.make_env.keywords['config'] for t in tasks}
  if len(configs) != 1:
    raise ValueError('tasks of one level set must share their config')
  config = configs.pop()
  layout = two_rooms.layout_of(config)
  return config, [layout.cell_index(*t.make_env.keywords['goal']) for t in tasks]


def goal_cells_of(level_set: level_sets.LevelSet
                  ) -> tuple[two_rooms.TwoRoomsConfig, list[int]]:
  """The config and goal cells of a ``two_rooms`` level set's tasks."""
  return _config_and_goals(level_set.tasks)
