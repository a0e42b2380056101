"""Level sets: named lists of tasks, each a factory of ``dm_env.Environment``.

A level set is what ``--level_set`` names. Its tasks share one observation and
action space; task i is learned by policy pi_i. Factories are picklable (module
level functions bound with ``functools.partial``) so environments can be built
inside their own processes (``distral_tf.envs.process``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import dm_env

from distral_tf import errors


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a level set."""
  name: str
  # seed -> a fresh environment of this task. Must be picklable.
  make_env: Callable[[int], dm_env.Environment]


@dataclasses.dataclass(frozen=True)
class LevelSet:
  """A named set of tasks sharing observation and action spaces."""
  name: str
  tasks: tuple[Task, ...]
  num_actions: int
  # Environment frames per agent step (the action repeat). Budgets count frames.
  frames_per_step: int = 1
  # 'pixels' (uint8 HxWx3) or 'vector' (float32 [D]).
  observation_kind: str = 'pixels'
  # Whether figures normalise returns per task by the best A3C score (paper, B.2).
  normalise_by_a3c: bool = False
  # Whether every environment must run in its own process (an OpenGL context each).
  needs_env_processes: bool = False
  # (tasks, seed) -> an ``envs.batch.EnvBatch`` with one environment per entry
  # of ``tasks``, stepped together in the caller's process; None where the
  # level set has none. Used for cheap environments with --env_processes=false.
  make_batch: Callable[..., Any] | None = None
  # Names of the actions, by index; () where the level set names none.
  action_names: tuple[str, ...] = ()

  def check_env_processes(self, env_processes: bool) -> None:
    """Refuses ``--env_processes=false`` where environments need their own process."""
    if self.needs_env_processes and not env_processes:
      raise errors.UsageError(
          f'--level_set={self.name} runs every environment in its own process; '
          f'--env_processes=false is not supported')

  @property
  def task_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tasks)


# Level set name -> module providing ``make_level_set(name, num_tasks, seed,
# options)``. Each module defines its own flags; the entry points read them into
# ``options`` (flag name -> value), which the module reads.
LEVEL_SET_MODULES = {
    'two_rooms': 'distral_tf.envs.two_rooms_tasks',
    'minigrid': 'distral_tf.envs.minigrid_tasks',
    'miniworld': 'distral_tf.envs.miniworld_tasks',
    'mazes': 'distral_tf.dmlab.games',
    'navigation': 'distral_tf.dmlab.games',
    'lasertag': 'distral_tf.dmlab.games',
}
LEVEL_SET_NAMES = tuple(LEVEL_SET_MODULES)


def import_level_set_modules() -> None:
  """Imports every level-set module so that their flags are defined."""
  for module in sorted(set(LEVEL_SET_MODULES.values())):
    importlib.import_module(module)


def make_level_set(name: str, num_tasks: int | None = None, seed: int = 0,
                   options: Mapping[str, Any] | None = None) -> LevelSet:
  """Builds the level set ``name``; raises ``errors.UsageError`` for bad input.

  ``options``: the run's flag values by name (``DeepConfig.config_record``);
  the level set takes its own flags' values from it, their defaults where
  absent (or when None).
  """
  if name not in LEVEL_SET_MODULES:
    raise errors.UsageError(
        f'unknown level set {name!r}; valid choices: {", ".join(LEVEL_SET_NAMES)}')
  if num_tasks is not None and num_tasks < 1:
    raise errors.UsageError(f'--num_tasks must be >= 1, got {num_tasks}')
  module = importlib.import_module(LEVEL_SET_MODULES[name])
  return module.make_level_set(name, num_tasks, seed, options)


def first_tasks(level_set: str, module: str, name: str, task_names: tuple[str, ...],
                num_tasks: int | None) -> tuple[str, ...]:
  """The first ``num_tasks`` of ``task_names`` (default: all), checked.

  For modules providing one level set, ``level_set``; ``name`` is the one asked for.
  """
  if name != level_set:
    raise errors.UsageError(f'{module} provides level set {level_set!r}, not {name!r}')
  if num_tasks is None:
    num_tasks = len(task_names)
  if not 1 <= num_tasks <= len(task_names):
    raise errors.UsageError(
        f'--num_tasks must be in [1, {len(task_names)}] for --level_set={level_set} '
        f'({", ".join(task_names)}), got {num_tasks}')
  return task_names[:num_tasks]
