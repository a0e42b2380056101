"""Sample efficiency and the learning check (distral_tf/experiments/sample_efficiency.py).

Runs are given as records of finished runs, so nothing trains: the command
restores them, skips them as finished, and reports from their episodes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from distral_tf import results
from distral_tf.experiments import random_returns
from distral_tf.experiments import run_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = 'nav_maze_static_01'


def _finished_run(logdir, returns, frames_per_episode=3600):
  os.makedirs(logdir)
  writer = results.EpisodeWriter(logdir, 'a3c', 0)
  for i, value in enumerate(returns):
    writer.write(TASK, (i + 1) * frames_per_episode, value, frames_per_episode // 4)
  writer.close()
  results.write_json(os.path.join(logdir, 'config.json'), dict(
      algorithm='a3c', level_set='mazes', seed=0, num_tasks=1))
  results.write_json(os.path.join(logdir, 'summary.json'), dict(finished=True))


def test_thresholds_are_multiples_of_the_random_return_and_runs_come_from_records(
    tmp_path):
  random = random_returns.random_return('mazes', TASK)
  assert random is not None and random > 0
  # Seed 0 passes twice the random return; seed 1 never does.
  _finished_run(str(tmp_path / 'made' / '0'), [0.0] * 100 + [2.5 * random] * 100)
  _finished_run(str(tmp_path / 'made' / '1'), [1.5 * random] * 200)
  records = tmp_path / 'records'
  for seed in (0, 1):
    assert run_records.record(str(tmp_path / 'made' / str(seed)),
                              str(records / 'mazes' / 'a3c' / f'seed{seed}'))
  png = tmp_path / 'check.png'
  proc = subprocess.run(
      [sys.executable, '-m', 'distral_tf.experiments.sample_efficiency',
       '--level_set=mazes', '--algorithm=a3c', '--num_tasks=1', '--seeds=2',
       '--env_steps_per_task=720000', '--times_random=2', '--window=100',
       f'--out_dir={tmp_path / "runs"}', f'--records_dir={records}', f'--figure={png}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert '2 restored' in out and '2 already finished' in out
  rows = {m.group(1): m.group(2) for m in re.finditer(
      r'seed(\d)\s+' + TASK + r'\s+' + re.escape(f'{2 * random:.3f}') + r'\s+(\S+)', out)}
  # The window of episodes 81..180 is the first whose mean reaches 2 x random
  # (20 at 0, 80 at 2.5 x random).
  assert rows == {'0': f'{180 * 3600:,}', '1': 'never'}, out
  assert 'reached: 1 of 2' in out
  assert os.path.getsize(png) > 0


def test_a_task_without_a_recorded_random_return_is_a_one_line_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'distral_tf.experiments.sample_efficiency',
       '--level_set=two_rooms', '--num_tasks=1', '--seeds=1', '--times_random=2',
       '--env_steps_per_task=100', f'--out_dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'no random return recorded for two_rooms' in proc.stderr
  assert 'Traceback' not in proc.stderr
