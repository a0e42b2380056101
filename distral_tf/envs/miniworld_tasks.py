"""The ``miniworld`` level set: first-person 3D navigation without DeepMind Lab.

Eight MiniWorld worlds (the ``miniworld`` package on PyPI, rendered with
OpenGL) in which the agent must walk to a red box: a small room, T- and Y-mazes
with the box in the left or the right arm, a hallway, four rooms and a 3x3
maze. Like the DeepMind Lab sets they are seen from the agent's eyes as 72x96
RGB frames and stepped with action repeat 4: one agent step is four rendered
frames, and budgets count frames.

Actions index ``ACTION_NAMES``: turn left, turn right, move forward (MiniWorld's
first three actions, the action space of all eight worlds). The reward is
MiniWorld's: ``1 - 0.2 * frames / max_frames`` on reaching the box
(``dm_env.termination``), 0 otherwise; running out of frames is a
``dm_env.truncation``. An environment draws its layouts from a generator seeded
once with its seed.

Rendering is headless (pyglet with EGL): it needs the Mesa EGL and DRI system
libraries, ``apt-get install libegl1 libgl1-mesa-dri`` on Debian and Ubuntu.
MiniWorld is imported only when first needed, in the process that renders;
every environment runs in its own process, one that has not imported
TensorFlow (Mesa's software renderer and TensorFlow each bring their own LLVM,
and rendering crashes when both are loaded).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import sys
from typing import Any, Mapping

import dm_env
from dm_env import specs
import numpy as np

from distral_tf import errors
from distral_tf.envs import level_sets

LEVEL_SET_NAME = 'miniworld'

OBSERVATION_SHAPE = (72, 96, 3)  # Height, width, RGB: DeepMind Lab's frames.
ACTION_REPEAT = 4
ACTION_NAMES = ('turn_left', 'turn_right', 'move_forward')
NUM_ACTIONS = len(ACTION_NAMES)

_INSTALL_HINT = ('pip install miniworld; rendering needs the system libraries of '
                 'Mesa EGL: apt-get install libegl1 libgl1-mesa-dri')

# Task name -> (MiniWorld class, what it is), easiest first: a smaller
# --num_tasks takes the first ones.
TASKS = {
    'one_room': ('OneRoomS6', '6x6 room, box anywhere (100 frames)'),
    'tmaze_left': ('TMazeLeft', 'T-maze, box at the end of the left arm (280 frames)'),
    'tmaze_right': ('TMazeRight', 'T-maze, box at the end of the right arm (280 frames)'),
    'ymaze_left': ('YMazeLeft', 'Y-maze, box in the left arm (280 frames)'),
    'ymaze_right': ('YMazeRight', 'Y-maze, box in the right arm (280 frames)'),
    'hallway': ('Hallway', 'a 12 m hallway, box at the far end (250 frames)'),
    'four_rooms': ('FourRooms', 'four rooms, box and start anywhere (250 frames)'),
    'maze_s3': ('MazeS3', '3x3 maze, box and start anywhere (216 frames)'),
}
TASK_NAMES = tuple(TASKS)


def _import_miniworld() -> Any:
  """Imports MiniWorld for headless rendering; failures are the user's to fix."""
  os.environ.setdefault('PYGLET_HEADLESS', 'True')
  # Mesa's software renderer (llvmpipe) otherwise starts one drawing thread per
  # core in every environment process; with many processes per core, rendering
  # in the calling thread is faster (measured: 1.8x with 16 processes, 2 cores).
  os.environ.setdefault('LP_NUM_THREADS', '0')
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      import miniworld  # pylint: disable=g-import-not-at-top
      import miniworld.envs  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise errors.UsageError(
        f'--level_set={LEVEL_SET_NAME} needs the miniworld package ({_INSTALL_HINT}): '
        f'{e}') from e
  return miniworld


class MiniWorldEnvironment(dm_env.Environment):
  """A MiniWorld world as a ``dm_env.Environment`` with action repeat."""

  def __init__(self, env: Any, seed: int, action_repeat: int = ACTION_REPEAT,
               name: str = LEVEL_SET_NAME):
    """Wraps ``env`` (a ``MiniWorldEnv``); its first reset is seeded with ``seed``."""
    if action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {action_repeat}')
    self._env = env
    self._seed = seed
    self._seeded = False
    self._action_repeat = action_repeat
    self._reset_next_step = True
    self.name = name

  @property
  def miniworld_env(self) -> Any:
    """The wrapped ``MiniWorldEnv`` (agent position, box; for inspection)."""
    return self._env

  def reset(self) -> dm_env.TimeStep:
    seed = None if self._seeded else self._seed
    self._seeded = True
    observation, _ = self._env.reset(seed=seed)
    self._reset_next_step = False
    return dm_env.restart(observation)

  def step(self, action: Any) -> dm_env.TimeStep:
    """Repeats ``action`` for up to ``action_repeat`` frames, summing rewards."""
    if self._reset_next_step:
      return self.reset()
    index = int(action)
    if not 0 <= index < NUM_ACTIONS:
      raise ValueError(f'action {action} is outside [0, {NUM_ACTIONS})')
    reward = 0.0
    for _ in range(self._action_repeat):
      observation, r, terminated, truncated, _ = self._env.step(index)
      reward += float(r)
      if terminated:
        self._reset_next_step = True
        return dm_env.termination(reward, observation)
      if truncated:
        self._reset_next_step = True
        return dm_env.truncation(reward, observation)
    return dm_env.transition(reward, observation)

  def observation_spec(self) -> specs.BoundedArray:
    return specs.BoundedArray(OBSERVATION_SHAPE, np.uint8, minimum=0, maximum=255,
                              name='pixels')

  def action_spec(self) -> specs.DiscreteArray:
    return specs.DiscreteArray(NUM_ACTIONS, dtype=np.int32, name='action')

  def close(self) -> None:
    self._env.close()


def make_environment(task: str, seed: int,
                     action_repeat: int = ACTION_REPEAT) -> MiniWorldEnvironment:
  """A fresh environment of ``task`` whose layouts are drawn with ``seed``."""
  if task not in TASKS:
    raise errors.UsageError(
        f'unknown miniworld task {task!r}; valid: {", ".join(TASK_NAMES)}')
  if 'tensorflow' in sys.modules:
    # Mesa's software renderer and TensorFlow each bring their own LLVM; in one
    # process, rendering crashes. The trainer builds environments in EnvProcess.
    raise errors.UsageError(
        'miniworld environments cannot be built in a process that has imported '
        'TensorFlow; build them in their own process (distral_tf.envs.process)')
  miniworld = _import_miniworld()
  env_class = getattr(miniworld.envs, TASKS[task][0])
  height, width, _ = OBSERVATION_SHAPE
  try:
    # Creating the OpenGL context prints pyglet's multisampling fallbacks.
    with contextlib.redirect_stdout(io.StringIO()):
      env = env_class(obs_width=width, obs_height=height)
  except Exception as e:  # pylint: disable=broad-except
    # pyglet raises its own types when no EGL display or driver can be opened.
    raise errors.UsageError(
        f'cannot render the miniworld level set ({_INSTALL_HINT}): '
        f'{type(e).__name__}: {e}') from e
  return MiniWorldEnvironment(env, seed, action_repeat, name=task)


def make_level_set(name: str, num_tasks: int | None = None, seed: int = 0,
                   options: Mapping[str, Any] | None = None) -> level_sets.LevelSet:
  """The ``miniworld`` level set: its first ``num_tasks`` tasks (default: all).

  ``seed`` is unused: every environment is seeded when it is built; the level
  set has no ``options``.
  """
  del seed, options
  task_names = level_sets.first_tasks(LEVEL_SET_NAME, __name__, name, TASK_NAMES,
                                      num_tasks)
  # A missing package is reported here, not in a child process. Only looked up:
  # importing it would load OpenGL into the trainer's process too.
  if importlib.util.find_spec('miniworld') is None:
    raise errors.UsageError(
        f'--level_set={LEVEL_SET_NAME} needs the miniworld package ({_INSTALL_HINT})')
  tasks = tuple(
      level_sets.Task(name=task, make_env=functools.partial(make_environment, task))
      for task in task_names)
  return level_sets.LevelSet(name=LEVEL_SET_NAME, tasks=tasks,
                             num_actions=NUM_ACTIONS,
                             frames_per_step=ACTION_REPEAT,
                             observation_kind='pixels', needs_env_processes=True)
