"""Tests of the throughput benchmark (distral_tf/bench.py): it runs and reports.

The benchmark's figures are measurements, not test assertions; these tests check
that one short run produces both measurements and their ratio.
"""

import os
import re
import subprocess
import sys

import numpy as np

from distral_tf import bench
from distral_tf.envs import level_sets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'distral_tf.bench', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_short_run_prints_both_rates_and_their_ratio_last():
  proc = _bench('--level_set=minigrid', '--num_tasks=1', '--workers_per_task=2',
                '--bench_seconds=3', '--bench_warmup_seconds=10')
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  env_fps = float(re.search(r'environment-only frames/s: ([\d,]+)', proc.stdout)
                  .group(1).replace(',', ''))
  train_fps = float(re.search(r'training frames/s \(kl_ent_2col\): ([\d,]+)',
                              proc.stdout).group(1).replace(',', ''))
  assert env_fps > 0 and train_fps > 0
  assert '1 tasks x 2 workers = 2 environment processes' in proc.stdout
  ratio = float(re.fullmatch(r'ratio: (\d+\.\d+)', lines[-1]).group(1))
  assert abs(ratio - train_fps / env_fps) < 0.01 + 0.002 * ratio


def test_tabular_algorithm_is_a_one_line_usage_error():
  proc = _bench('--level_set=two_rooms', '--algorithm=soft_q', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: the benchmark')


def test_env_only_counts_frames_of_every_environment():
  level_set = level_sets.make_level_set('two_rooms', 2)
  fps = bench.env_only_fps(level_set, workers_per_task=2, seed=0, seconds=0.5,
                           use_processes=False)
  # In-thread grid-world steps take microseconds: thousands of frames a second.
  assert np.isfinite(fps) and fps > 1000
