"""DeepMind Lab level sets of the paper: ``mazes``, ``navigation``, ``lasertag``.

The paper's levels were internal to DeepMind; each set here maps its tasks onto
levels of DeepMind Lab's public release (and two maze scripts of our own in
``lua/``). docs/dmlab.md sets the mapping beside the paper's description of the
tasks. This module imports without DeepMind Lab installed (``cli`` imports it
for its flags); ``make_level_set`` says how to get DeepMind Lab when it is
missing.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Mapping

from absl import flags

from distral_tf import errors
from distral_tf.dmlab import cache as cache_lib
from distral_tf.dmlab import env as env_lib
from distral_tf.envs import level_sets

LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lua')

_DMLAB30 = 'contributed/dmlab30/'

# Level set name -> (task name, DeepMind Lab level, extra Lab settings).
# Task names are the level names (our own maze scripts: distral_maze_a/b).
LEVELS = {
    # Fixed layouts; a goal collected again and again from different starts,
    # with apples as smaller rewards (paper, section 4.2 and table 2).
    'mazes': (
        ('nav_maze_static_01', 'nav_maze_static_01', ()),
        ('nav_maze_static_02', 'nav_maze_static_02', ()),
        ('nav_maze_static_03', 'nav_maze_static_03', ()),
        ('nav_maze_random_goal_01', 'nav_maze_random_goal_01', ()),
        ('nav_maze_random_goal_02', 'nav_maze_random_goal_02', ()),
        ('nav_maze_random_goal_03', 'nav_maze_random_goal_03', ()),
        ('distral_maze_a', 'distral_maze', (('levelDirectory', LUA_DIR),
                                            ('mazeLayout', 'a'))),
        ('distral_maze_b', 'distral_maze', (('levelDirectory', LUA_DIR),
                                            ('mazeLayout', 'b'))),
    ),
    # Maps generated anew every episode; in the paper's order of tasks.
    'navigation': (
        ('explore_object_rewards_few', _DMLAB30 + 'explore_object_rewards_few', ()),
        ('explore_object_locations_small',
         _DMLAB30 + 'explore_object_locations_small', ()),
        ('explore_goal_locations_small', _DMLAB30 + 'explore_goal_locations_small', ()),
        ('explore_obstructed_goals_small',
         _DMLAB30 + 'explore_obstructed_goals_small', ()),
    ),
    # Fixed maps (lt_*) and generated maps and bots (dmlab30 lasertag_*).
    'lasertag': (
        ('lt_chasm', 'lt_chasm', ()),
        ('lt_hallway_slope', 'lt_hallway_slope', ()),
        ('lt_horseshoe_color', 'lt_horseshoe_color', ()),
        ('lt_space_bounce_hard', 'lt_space_bounce_hard', ()),
        ('lasertag_one_opponent_small', _DMLAB30 + 'lasertag_one_opponent_small', ()),
        ('lasertag_three_opponents_small',
         _DMLAB30 + 'lasertag_three_opponents_small', ()),
        ('lasertag_one_opponent_large', _DMLAB30 + 'lasertag_one_opponent_large', ()),
        ('lasertag_three_opponents_large',
         _DMLAB30 + 'lasertag_three_opponents_large', ()),
    ),
}
LEVEL_SET_NAMES = tuple(LEVELS)
# Level set name -> its discrete action set (env.ACTION_SETS). Lasertag adds
# JUMP to the standard 9 actions, as its tasks differ in "complexity of agent
# behaviour (e.g. learning to jump in some tasks)" in the paper; the
# mazes and navigation tasks are solved without jumping.
ACTION_SETS = {
    'mazes': 'standard',
    'navigation': 'standard',
    'lasertag': 'standard_jump',
}
# Sets whose figures normalise returns by the best A3C score per task (B.2).
NORMALISED_BY_A3C = ('navigation', 'lasertag')
# Level set name -> DeepMind Lab frames/s on one core (software renderer, 96x72,
# action repeat 4), measured in docs/dmlab.md ("The level cache"): mazes by
# nav_maze_static_01, navigation by explore_goal_locations_small, lasertag by
# the slowest level measured, lt_chasm. ``distributed.bench`` projects with them.
FRAMES_PER_CORE = {'mazes': 5_700, 'navigation': 6_200, 'lasertag': 2_270}

_HOW_TO_GET = ('DeepMind Lab is built from source: see the "DeepMind Lab" section of '
               'docs/dmlab.md, or run launch/build_dmlab.sh')

# The ``--dmlab_*`` flags' defaults, also those of options that do not give them.
OPTION_DEFAULTS = dict(
    dmlab_height=env_lib.DEFAULT_HEIGHT, dmlab_width=env_lib.DEFAULT_WIDTH,
    dmlab_action_repeat=env_lib.DEFAULT_ACTION_REPEAT,
    dmlab_renderer=env_lib.DEFAULT_RENDERER, dmlab_level_cache=True,
    dmlab_level_cache_dir=cache_lib.DEFAULT_CACHE_DIR)

flags.DEFINE_integer('dmlab_height', OPTION_DEFAULTS['dmlab_height'],
                     'Height of DeepMind Lab observations in pixels.')
flags.DEFINE_integer('dmlab_width', OPTION_DEFAULTS['dmlab_width'],
                     'Width of DeepMind Lab observations in pixels.')
flags.DEFINE_integer('dmlab_action_repeat', OPTION_DEFAULTS['dmlab_action_repeat'],
                     'DeepMind Lab frames per agent step (the action repeat).')
flags.DEFINE_enum('dmlab_renderer', OPTION_DEFAULTS['dmlab_renderer'], env_lib.RENDERERS,
                  'DeepMind Lab renderer: software (OSMesa) or hardware (EGL).')
flags.DEFINE_boolean('dmlab_level_cache', OPTION_DEFAULTS['dmlab_level_cache'],
                     'Share compiled DeepMind Lab maps between workers and runs '
                     'through a cache on disk.')
flags.DEFINE_string('dmlab_level_cache_dir', OPTION_DEFAULTS['dmlab_level_cache_dir'],
                    'Directory of the DeepMind Lab level cache.')


def config_from_options(options: Mapping[str, Any] | None) -> env_lib.EnvConfig:
  """The environment settings the ``--dmlab_*`` values in ``options`` select.

  ``options``: flag values by name (``level_sets.make_level_set``); the
  defaults where absent or None.
  """
  values = dict(OPTION_DEFAULTS)
  values.update({k: v for k, v in (options or {}).items() if k in OPTION_DEFAULTS})
  for name in ('dmlab_height', 'dmlab_width', 'dmlab_action_repeat'):
    if values[name] < 1:
      raise errors.UsageError(f'--{name} must be >= 1, got {values[name]}')
  cache_dir = None
  if values['dmlab_level_cache']:
    cache_dir = os.path.expanduser(values['dmlab_level_cache_dir'])
  return env_lib.EnvConfig(height=values['dmlab_height'], width=values['dmlab_width'],
                           action_repeat=values['dmlab_action_repeat'],
                           renderer=values['dmlab_renderer'],
                           level_cache_dir=cache_dir)


def check_lab_module(lab_module: str = 'deepmind_lab') -> None:
  """Raises ``errors.UsageError`` (one line) when ``lab_module`` cannot be imported."""
  try:
    importlib.import_module(lab_module)
  except ImportError as e:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise errors.UsageError(
        f'the DeepMind Lab Python module {lab_module!r} cannot be imported ({reason}); '
        f'{_HOW_TO_GET}') from None


def build_level_set(name: str,
                    num_tasks: int | None,
                    seed: int,
                    config: env_lib.EnvConfig,
                    lab_module: str = 'deepmind_lab') -> level_sets.LevelSet:
  """The level set ``name`` with explicit settings (``make_level_set``: from options).

  Task ``i``'s environments mix ``(seed, i)`` into the seed the trainer gives
  each of them, so episodes differ between runs, tasks and workers.
  """
  if name not in LEVELS:
    raise errors.UsageError(f'unknown DeepMind Lab level set {name!r}; valid '
                            f'choices: {", ".join(LEVEL_SET_NAMES)}')
  levels = LEVELS[name]
  if num_tasks is None:
    num_tasks = len(levels)
  if not 1 <= num_tasks <= len(levels):
    raise errors.UsageError(f'--num_tasks for {name} must be in [1, {len(levels)}], '
                            f'got {num_tasks}')
  if seed < 0:
    raise errors.UsageError(f'--seed must be >= 0, got {seed}')
  check_lab_module(lab_module)
  action_set = ACTION_SETS[name]
  tasks = []
  for index, (task_name, level, settings) in enumerate(levels[:num_tasks]):
    make = functools.partial(env_lib.make_env, level=level, config=config,
                             settings=settings, seed_salt=(seed, index),
                             lab_module=lab_module, action_set=action_set)
    tasks.append(level_sets.Task(task_name, make))
  return level_sets.LevelSet(
      name=name, tasks=tuple(tasks), num_actions=env_lib.num_actions(action_set),
      frames_per_step=config.action_repeat, observation_kind='pixels',
      normalise_by_a3c=name in NORMALISED_BY_A3C,
      action_names=env_lib.action_names(action_set))


def make_level_set(name: str, num_tasks: int | None = None, seed: int = 0,
                   options: Mapping[str, Any] | None = None) -> level_sets.LevelSet:
  """``level_sets.make_level_set`` for mazes, navigation and lasertag."""
  return build_level_set(name, num_tasks, seed, config_from_options(options))
