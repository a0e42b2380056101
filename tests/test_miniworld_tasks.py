"""Tests of the ``miniworld`` 3D level set (distral_tf/envs/miniworld_tasks.py).

What renders runs in a fresh interpreter (``tests/miniworld_checks.py``):
MiniWorld cannot render in a process that has imported TensorFlow, as this one
has.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import tensorflow as tf  # The test process has TensorFlow, as the trainer has.

from distral_tf import cli
from distral_tf import errors
from distral_tf.envs import level_sets
from distral_tf.envs import miniworld_tasks

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS_DIR)
RENDERING_CHECKS = (
    'check_every_task_renders_conforming_frames_and_episodes',
    'check_reaching_the_box_terminates_with_miniworlds_reward',
    'check_step_limit_truncates_after_the_frames_of_the_task',
    'check_one_step_repeats_the_action_four_frames',
    'check_invalid_action_raises',
    'check_seeding_is_deterministic_and_seeds_differ',
    'check_runs_inside_an_env_process',
)


@pytest.mark.parametrize('check', RENDERING_CHECKS)
def test_rendering(check):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [_ROOT, _TESTS_DIR, os.environ.get('PYTHONPATH', '')]))
  proc = subprocess.run([sys.executable, '-m', 'miniworld_checks', check],
                        cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_checks_cover_every_check_function():
  with open(os.path.join(_TESTS_DIR, 'miniworld_checks.py')) as f:
    defined = {line.split('(')[0][4:] for line in f if line.startswith('def check_')}
  assert defined == set(RENDERING_CHECKS)


# -- the level set, without rendering ------------------------------------------------


def test_level_set_has_all_tasks_by_default():
  level_set = level_sets.make_level_set('miniworld')
  assert level_set.task_names == miniworld_tasks.TASK_NAMES
  assert len(level_set.task_names) == 8
  assert level_set.num_actions == 3
  assert level_set.frames_per_step == miniworld_tasks.ACTION_REPEAT == 4
  assert level_set.observation_kind == 'pixels'
  assert level_set.needs_env_processes


def test_smaller_num_tasks_takes_the_first_ones():
  level_set = level_sets.make_level_set('miniworld', 3)
  assert level_set.task_names == ('one_room', 'tmaze_left', 'tmaze_right')


@pytest.mark.parametrize('num_tasks', [0, 9])
def test_bad_num_tasks_is_a_one_line_usage_error(num_tasks):
  with pytest.raises(errors.UsageError, match='num_tasks'):
    level_sets.make_level_set('miniworld', num_tasks)


def test_unknown_task_is_a_usage_error():
  with pytest.raises(errors.UsageError, match='unknown miniworld task'):
    miniworld_tasks.make_environment('castle', 0)


def test_task_factories_are_picklable():
  for task in level_sets.make_level_set('miniworld').tasks:
    assert pickle.loads(pickle.dumps(task.make_env)).func is task.make_env.func


def test_building_an_environment_next_to_tensorflow_is_a_clear_error():
  assert tf.__version__
  with pytest.raises(errors.UsageError, match='imported TensorFlow'):
    miniworld_tasks.make_environment('one_room', 0)


def test_environments_outside_processes_are_refused(tmp_path):
  with pytest.raises(errors.UsageError, match='--env_processes=false is not supported'):
    cli.run_from_args(['--level_set=miniworld', '--num_tasks=1',
                       '--env_processes=false', f'--logdir={tmp_path}'])
