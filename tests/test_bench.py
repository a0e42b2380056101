"""Tests of the throughput benchmark (distral_tf/bench.py): it runs and reports.

The benchmark's figures are measurements, not test assertions; these tests check
that one short run produces both measurements and their ratio.
"""

import functools
import os
import re
import subprocess
import sys
import time

import dm_env
from dm_env import specs
import numpy as np

from distral_tf import bench
from distral_tf.agents import cpu_use
from distral_tf.envs import level_sets
from distral_tf.envs import process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'distral_tf.bench', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_short_run_prints_both_rates_and_their_ratio_last():
  proc = _bench('--level_set=minigrid', '--num_tasks=1', '--workers_per_task=2',
                # Progress lines at 10 and 20 s: when the environments were not
                # all stepping at the first (a loaded machine), the window from
                # the second still holds 10 s of training.
                '--bench_seconds=20', '--bench_warmup_seconds=10', '--bench_rounds=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  number = lambda pattern: [float(m.replace(',', ''))
                            for m in re.findall(pattern, proc.stdout)]
  env_rates = number(r'\nenvironment-only frames/s: ([\d,]+)')
  train_rates = number(r'training frames/s \(kl_ent_2col\): ([\d,]+)  \(mean')
  # Environment-only before and after the one training measurement.
  assert len(env_rates) == 2 and len(train_rates) == 1
  assert min(env_rates) > 0 and train_rates[0] > 0
  env_fps = number(r'mean environment-only frames/s: ([\d,]+)')[0]
  train_fps = number(r'mean training frames/s \(kl_ent_2col\): ([\d,]+)')[0]
  assert abs(env_fps - np.mean(env_rates)) <= 1 and train_fps == train_rates[0]
  # minigrid's environments are stepped in the actor thread by default.
  assert '1 tasks x 2 workers = 2 environments stepped in the actor threads' in proc.stdout
  ratio = float(re.fullmatch(r'ratio: (\d+\.\d+)', lines[-1]).group(1))
  assert abs(ratio - train_fps / env_fps) < 0.01 + 0.002 * ratio
  # Where the CPU went while training: every part, adding up to the cores' time.
  table = {line[:58].strip(): float(line[58:].split()[0]) for line in lines
           if line[:58].strip() in cpu_use.PARTS + ('all cores',)}
  assert set(table) == set(cpu_use.PARTS) | {'all cores'}
  assert abs(sum(table[p] for p in cpu_use.PARTS) - table['all cores']) < 0.01
  assert table[cpu_use.LEARNING] > 0 and table[cpu_use.INFERENCE] > 0
  assert 'environments (step and render) and network alone' in proc.stdout
  # TensorFlow's start-up lines are not shown.
  assert 'cuInit' not in proc.stderr and 'oneDNN' not in proc.stderr


def test_tabular_algorithm_is_a_one_line_usage_error():
  proc = _bench('--level_set=two_rooms', '--algorithm=soft_q', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: the benchmark')


def test_zero_rounds_is_a_one_line_usage_error():
  proc = _bench('--level_set=two_rooms', '--bench_rounds=0', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == 'error: --bench_rounds must be >= 1, got 0'


def test_a_run_too_short_for_a_steady_window_is_a_one_line_error():
  # The run ends 0.3 s into training. Either its first progress line (0.2 s)
  # comes before the actors' first step (a loaded machine: no steady window),
  # or the actors stepped and then wait for the learner, whose first step
  # (tracing its gradient) takes far longer than the run: no training frame
  # after the line. Both are the same one-line error.
  proc = _bench('--level_set=two_rooms', '--num_tasks=1', '--workers_per_task=1',
                '--env_processes=false', '--bench_warmup_seconds=0.2',
                '--bench_seconds=0.1', '--bench_rounds=1', timeout=240)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: no steady window: ')
  assert 'ratio' not in proc.stdout


def test_env_only_counts_frames_of_every_environment():
  level_set = level_sets.make_level_set('two_rooms', 2)
  fps, cpu = bench.env_only_fps(level_set, workers_per_task=2, seed=0, seconds=0.5,
                                use_processes=False)
  # In-thread grid-world steps take microseconds: thousands of frames a second.
  assert np.isfinite(fps) and fps > 1000
  assert cpu[cpu_use.MAIN] > 0  # The stepping loop, here the environments too.


class _Paced(dm_env.Environment):
  """Every step sleeps ``ms`` milliseconds; episodes of 5 steps; counts its steps."""

  def __init__(self, ms: float):
    self._ms = ms
    self._t = 0
    self._steps = 0

  def reset(self):
    self._t = 0
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    time.sleep(self._ms / 1e3)
    self._t += 1
    self._steps += 1
    if self._t == 5:
      return dm_env.termination(0.0, np.zeros(1, np.float32))
    return dm_env.transition(0.0, np.zeros(1, np.float32))

  def steps(self) -> int:
    return self._steps

  def observation_spec(self):
    return specs.Array((1,), np.float32)

  def action_spec(self):
    return specs.DiscreteArray(2)


def _make_paced(ms: float, seed: int) -> _Paced:
  del seed
  return _Paced(ms)


def test_environments_stepped_on_their_own_do_not_wait_for_the_slowest():
  envs = [process.EnvProcess(functools.partial(_make_paced, ms), 0, name=f'paced{ms}')
          for ms in (40, 2)]
  try:
    for env in envs:
      env.reset()
    steps = bench._step_independently(envs, 2, np.random.default_rng(0), 1.0)
    slow, fast = (env.call('steps') for env in envs)
  finally:
    for env in envs:
      env.close()
  assert slow + fast == steps + 2  # Every step counted, the last in flight of each too.
  # In lock step both would make the slow one's ~25 steps; alone, the fast one
  # makes many more (its episodes reset on the way).
  assert fast > 4 * slow, (slow, fast)


def test_network_mode_times_inference_and_learner_steps_of_the_trainers_sizes():
  proc = _bench('--level_set=two_rooms', '--num_tasks=2', '--workers_per_task=3',
                '--unroll_length=7', '--bench_network', '--bench_seconds=1',
                '--bench_rounds=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  rounds = re.findall(r'round \d: inference (\d+\.\d+) ms per step of 6 environments, '
                      r'learner (\d+\.\d+) ms per unroll of 7 steps', proc.stdout)
  assert len(rounds) == 2, proc.stdout
  timings = np.array(rounds, dtype=float)
  assert (timings > 0).all()
  inference = float(re.search(r'mean inference ms: (\d+\.\d+)', proc.stdout).group(1))
  learner = float(re.search(r'mean learner ms: (\d+\.\d+)', proc.stdout).group(1))
  assert abs(inference - timings[:, 0].mean()) <= 0.006
  assert abs(learner - timings[:, 1].mean()) <= 0.06
  assert 'training frames/s' not in proc.stdout  # The trainer never ran.
  # TensorFlow's start-up lines are not shown here either.
  assert 'cuda' not in proc.stderr and 'oneDNN' not in proc.stderr, proc.stderr
