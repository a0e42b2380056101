"""The random-policy baselines (distral_tf/experiments/random_baseline.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distral_tf.envs import level_sets
from distral_tf.envs import two_rooms
from distral_tf.experiments import random_baseline
from distral_tf.experiments import random_returns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_random_returns_match_the_exact_expectation_on_two_rooms():
  level_set = level_sets.make_level_set('two_rooms', 2, 0)
  lines = []
  played = random_baseline.play(level_set, seed=3, episodes=300, workers_per_task=2,
                                report=lines.append, report_secs=0.5)
  assert lines and lines[-1].startswith('episodes ') and '/600  frames ' in lines[-1]
  assert list(played) == list(level_set.task_names)
  for task in level_set.tasks:
    p = played[task.name]
    assert len(p['returns']) == 300 and len(p['frames']) == 300
    assert max(p['frames']) <= two_rooms.DEFAULTS.step_limit
    stats = random_baseline.summarise(p['returns'], p['frames'])
    exact = two_rooms.random_policy_return(two_rooms.DEFAULTS, task.make_env(0).goal_cell)
    # Within 4 standard errors of the finite-horizon value of the uniform policy.
    assert abs(stats['mean'] - exact) < 4 * stats['sem'], (task.name, stats, exact)
    assert stats['sem'] == pytest.approx(stats['std'] / np.sqrt(300))


def test_records_merge_per_level_set_and_are_read_back(tmp_path):
  path = str(tmp_path / 'random_returns.json')
  assert random_returns.random_return('mazes', 'a', path) is None
  stat = random_baseline.summarise([1.0, 3.0], [8, 8])
  random_returns.write_records('mazes', {'a': stat}, seed=0, path=path)
  random_returns.write_records('mazes', {'b': dict(stat, mean=5.0)}, seed=1, path=path)
  random_returns.write_records('lasertag', {'c': stat}, seed=0, path=path)
  records = json.loads(open(path).read())
  assert sorted(records['mazes']) == ['a', 'b'] and records['mazes']['b']['seed'] == 1
  assert random_returns.random_return('mazes', 'a', path) == 2.0
  assert random_returns.random_return('mazes', 'b', path) == 5.0
  with open(path, 'w') as f:
    f.write('{not json')
  with pytest.raises(Exception, match='cannot be read'):
    random_returns.read_records(path)


def test_every_recorded_task_belongs_to_its_level_set():
  from distral_tf.dmlab import games  # pylint: disable=g-import-not-at-top
  records = random_returns.read_records()
  assert 'mazes' in records
  for name, tasks in records.items():
    assert set(tasks) <= {task[0] for task in games.LEVELS[name]}, name
    for stats in tasks.values():
      assert stats['episodes'] >= 10 and stats['min'] <= stats['mean'] <= stats['max']


def test_bad_arguments_are_one_line_errors():
  for args, message in ((['--episodes=0'], '--episodes must be >= 1'),
                        (['--level_set=nope'], 'nope')):
    proc = subprocess.run([sys.executable, '-m', 'distral_tf.experiments.random_baseline',
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and 'Traceback' not in proc.stderr


def test_one_episode_of_the_first_maze_on_the_real_deepmind_lab():
  pytest.importorskip('deepmind_lab')
  level_set = level_sets.make_level_set('mazes', 1, 0)
  played = random_baseline.play(level_set, seed=0, episodes=1, workers_per_task=1)
  (p,) = played.values()
  assert p['frames'] == [3600]  # 60 s at 60 frames/s, in steps of 4 frames.
  assert p['returns'][0] >= 0
