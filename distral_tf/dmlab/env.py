"""A ``dm_env.Environment`` over DeepMind Lab's Python API (``deepmind_lab.Lab``).

Observations are ``RGB_INTERLEAVED`` frames (uint8, height x width x 3; 72 x 96
by default). Actions are integers indexing a discrete action set
(``ACTION_SETS``): ``standard``, the 9 actions of the standard A3C/IMPALA
DeepMind Lab agents, or ``standard_jump``, the same 9 and JUMP (for levels that
need jumping). Each is repeated for ``action_repeat`` frames through
``Lab.step(action, num_steps=...)``, which returns the reward summed over those
frames.

An episode ends when ``Lab.is_running()`` turns False. DeepMind Lab's
observations may not be read after that, so the ``LAST`` time step carries the
last frame that could be read. Episodes end on a time limit, as a terminal
(discount 0) step, which is how the A3C baselines of the paper treat them.

Each environment draws the seed of every episode (``Lab.reset(seed=...)``) from
its own random generator, seeded with the seed it was built with and a salt
(the run's seed and the task's index), so that episodes are reproducible and
differ between runs, tasks and workers.

DeepMind Lab allows one instance per process: build each environment in its own
process (``distral_tf.envs.process.EnvProcess``) from ``make_env``, which is
picklable once its keyword arguments are bound with ``functools.partial``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
from typing import Mapping, Sequence

import dm_env
from dm_env import specs
import numpy as np

from distral_tf.dmlab import cache as cache_lib

OBSERVATION_NAME = 'RGB_INTERLEAVED'
DEFAULT_HEIGHT = 72
DEFAULT_WIDTH = 96
DEFAULT_ACTION_REPEAT = 4
RENDERERS = ('software', 'hardware')
DEFAULT_RENDERER = 'software'
# Seeds passed to Lab.reset are drawn from [0, MAX_EPISODE_SEED).
MAX_EPISODE_SEED = 2**31 - 1
# The software renderer (Mesa's llvmpipe) splits every frame among threads of
# its own, one per core by default. A 96x72 frame is too small to share: one
# DeepMind Lab process renders 12-20% more frames/s drawing it in its own thread
# (docs/dmlab.md, "Where the CPU goes"), and the cores are left to the other
# processes. A value the user set is kept.
RENDER_THREADS_VARIABLE = 'LP_NUM_THREADS'

# DeepMind Lab's 7 action components, in the order of Lab.action_spec().
ACTION_COMPONENTS = ('LOOK_LEFT_RIGHT_PIXELS_PER_FRAME',
                     'LOOK_DOWN_UP_PIXELS_PER_FRAME', 'STRAFE_LEFT_RIGHT',
                     'MOVE_BACK_FORWARD', 'FIRE', 'JUMP', 'CROUCH')

# The discrete action set of the standard DeepMind Lab A3C/IMPALA agents.
# Each entry: (name, (look_lr, look_du, strafe_lr, move_bf, fire, jump, crouch)).
STANDARD_ACTIONS = (
    ('forward', (0, 0, 0, 1, 0, 0, 0)),
    ('backward', (0, 0, 0, -1, 0, 0, 0)),
    ('strafe_left', (0, 0, -1, 0, 0, 0, 0)),
    ('strafe_right', (0, 0, 1, 0, 0, 0, 0)),
    ('look_left', (-20, 0, 0, 0, 0, 0, 0)),
    ('look_right', (20, 0, 0, 0, 0, 0, 0)),
    ('look_left_forward', (-20, 0, 0, 1, 0, 0, 0)),
    ('look_right_forward', (20, 0, 0, 1, 0, 0, 0)),
    ('fire', (0, 0, 0, 0, 1, 0, 0)),
)
JUMP = ('jump', (0, 0, 0, 0, 0, 1, 0))
# Action set name -> its actions; an environment's actions index one of them.
ACTION_SETS = {
    'standard': STANDARD_ACTIONS,
    'standard_jump': STANDARD_ACTIONS + (JUMP,),
}
DEFAULT_ACTION_SET = 'standard'


def action_names(action_set: str = DEFAULT_ACTION_SET) -> tuple[str, ...]:
  """The names of the actions of ``action_set``, by index."""
  return tuple(name for name, _ in _actions(action_set))


def num_actions(action_set: str = DEFAULT_ACTION_SET) -> int:
  """How many actions ``action_set`` has."""
  return len(_actions(action_set))


def lab_action(index: int, action_set: str = DEFAULT_ACTION_SET) -> np.ndarray:
  """The ``np.intc`` array of shape (7,) that DeepMind Lab takes for action ``index``."""
  return np.array(_actions(action_set)[index][1], dtype=np.intc)


def _actions(action_set: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
  if action_set not in ACTION_SETS:
    raise ValueError(f'unknown action set {action_set!r}; valid: {", ".join(ACTION_SETS)}')
  return ACTION_SETS[action_set]


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  """Settings shared by every DeepMind Lab environment of a run (picklable)."""
  height: int = DEFAULT_HEIGHT
  width: int = DEFAULT_WIDTH
  action_repeat: int = DEFAULT_ACTION_REPEAT
  renderer: str = DEFAULT_RENDERER
  # Directory of the shared level cache; None turns the cache off.
  level_cache_dir: str | None = None

  def __post_init__(self):
    if self.height < 1 or self.width < 1:
      raise ValueError(f'observation size must be positive, got '
                       f'{self.height}x{self.width}')
    if self.action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {self.action_repeat}')
    if self.renderer not in RENDERERS:
      raise ValueError(f'renderer must be one of {RENDERERS}, got {self.renderer!r}')


def import_lab_module(lab_module: str | types.ModuleType) -> types.ModuleType:
  """The module providing ``Lab``: ``lab_module`` itself, or imported by name."""
  if isinstance(lab_module, types.ModuleType):
    return lab_module
  return importlib.import_module(lab_module)


class DmLabEnv(dm_env.Environment):
  """One DeepMind Lab level as a ``dm_env.Environment`` with discrete actions."""

  def __init__(self,
               level: str,
               seed: int,
               config: EnvConfig = EnvConfig(),
               settings: Mapping[str, str] | None = None,
               seed_salt: Sequence[int] = (),
               lab_module: str | types.ModuleType = 'deepmind_lab',
               action_set: str = DEFAULT_ACTION_SET):
    """Builds the environment.

    Args:
      level: DeepMind Lab level script, e.g. ``'lt_chasm'`` or
        ``'contributed/dmlab30/explore_goal_locations_small'``.
      seed: seeds the generator of episode seeds; differs per task and worker.
      config: observation size, action repeat, renderer and level cache.
      settings: extra string settings for ``Lab`` (``levelDirectory``, or
        settings the level script reads).
      seed_salt: non-negative integers mixed into the seed (run seed, task).
      lab_module: the module providing ``Lab`` or its name.
      action_set: the name of the discrete action set (``ACTION_SETS``).
    """
    self._level = level
    self._config = config
    # Read by the renderer when Lab creates its context, below.
    os.environ.setdefault(RENDER_THREADS_VARIABLE, '0')
    lab = import_lab_module(lab_module)
    lab_config = {'height': str(config.height), 'width': str(config.width)}
    for key, value in (settings or {}).items():
      lab_config[key] = str(value)
    level_cache = None
    if config.level_cache_dir:
      level_cache = cache_lib.LevelCache(os.path.expanduser(config.level_cache_dir))
    self._lab = lab.Lab(level, [OBSERVATION_NAME], config=lab_config,
                        renderer=config.renderer, level_cache=level_cache)
    self._level_cache = level_cache
    self._rng = np.random.default_rng([int(seed), *(int(s) for s in seed_salt)])
    self._actions = tuple(lab_action(i, action_set)
                          for i in range(num_actions(action_set)))
    self._last_observation = None
    self._needs_reset = True
    self._episode_seed = None

  @property
  def level(self) -> str:
    return self._level

  @property
  def lab(self):
    """The underlying ``deepmind_lab.Lab``."""
    return self._lab

  def level_cache_counts(self) -> tuple[int, int, int, int] | None:
    """The level cache's (hits, misses, writes, waits for another worker); None
    without a cache."""
    cache = self._level_cache
    return None if cache is None else (cache.hits, cache.misses, cache.writes, cache.waited)

  @property
  def episode_seed(self) -> int | None:
    """The seed the current episode was reset with."""
    return self._episode_seed

  def _observation(self) -> np.ndarray:
    observation = np.array(self._lab.observations()[OBSERVATION_NAME], dtype=np.uint8)
    self._last_observation = observation
    return observation

  def reset(self) -> dm_env.TimeStep:
    self._episode_seed = int(self._rng.integers(MAX_EPISODE_SEED))
    self._lab.reset(seed=self._episode_seed)
    self._needs_reset = False
    return dm_env.restart(self._observation())

  def step(self, action) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    index = int(action)
    if not 0 <= index < len(self._actions) or index != action:
      raise ValueError(f'action must be an integer in [0, {len(self._actions)}), '
                       f'got {action!r}')
    reward = float(self._lab.step(self._actions[index],
                                  num_steps=self._config.action_repeat))
    if not self._lab.is_running():
      self._needs_reset = True
      return dm_env.termination(reward, self._last_observation)
    return dm_env.transition(reward, self._observation())

  def observation_spec(self) -> specs.Array:
    return specs.Array((self._config.height, self._config.width, 3), np.uint8,
                       name=OBSERVATION_NAME)

  def action_spec(self) -> specs.DiscreteArray:
    return specs.DiscreteArray(len(self._actions), name='action')

  def close(self) -> None:
    if self._lab is not None:
      self._lab.close()
      self._lab = None


def make_env(seed: int,
             *,
             level: str,
             config: EnvConfig = EnvConfig(),
             settings: tuple[tuple[str, str], ...] = (),
             seed_salt: tuple[int, ...] = (),
             lab_module: str = 'deepmind_lab',
             action_set: str = DEFAULT_ACTION_SET) -> DmLabEnv:
  """``Task.make_env``: bind everything but ``seed`` with ``functools.partial``."""
  return DmLabEnv(level, seed, config=config, settings=dict(settings),
                  seed_salt=seed_salt, lab_module=lab_module, action_set=action_set)
