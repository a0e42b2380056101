"""Tests of the action probe (distral_tf/experiments/action_probe.py) on minigrid."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from distral_tf.agents import algorithms
from distral_tf.agents import networks
from distral_tf.envs import minigrid_tasks
from distral_tf.experiments import action_probe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe_cmd(*args):
  return subprocess.run([sys.executable, '-m', 'distral_tf.experiments.action_probe',
                         *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_facing_tells_a_closed_door_that_toggle_opens():
  env = minigrid_tasks.make_environment('door_7x7', seed=3)
  env.reset()
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(5000):
    seen.add(env.facing())
    if env.facing() == 'closed door':
      env.step(minigrid_tasks.ACTION_NAMES.index('toggle'))
      assert env.facing() == 'open door'
      break
    if env.step(int(rng.integers(3))).last():  # Turns and moves only.
      env.reset()
  else:
    raise AssertionError(f'no closed door faced in 5000 random steps; saw {seen}')
  assert 'wall' in seen or 'empty' in seen


@pytest.mark.parametrize('behaviour', ['random', 'task'])
def test_stepwise_probabilities_equal_one_unroll_over_the_same_steps(behaviour):
  # pi_i and pi_0 evaluated step by step, each carrying its state across steps
  # and resetting it where an episode starts, equal one unroll of the network
  # over the whole sequence (eq. 6: pi_0 = softmax(h), pi_i = softmax(alpha h + f)).
  env = minigrid_tasks.make_environment('empty_6x6', seed=1)
  network = networks.DistralNetwork(algorithms.ALGORITHMS['kl_ent_2col'], num_tasks=2,
                                    num_actions=minigrid_tasks.NUM_ACTIONS,
                                    observation_kind='pixels', alpha=0.5, hidden_size=16)
  network.build(env.observation_spec().shape, np.uint8)
  # 200 steps: at least one episode ends (MiniGrid cuts empty_6x6 at 144 steps).
  result = action_probe.probe(network, env, task=1, steps=200, behaviour=behaviour,
                              rng=np.random.default_rng(0))
  assert result['first'][0] and result['first'][1:].any()
  output, _ = network.unroll(1, tf.constant(result['observations'][:, None]),
                             tf.constant(result['first'][:, None]), network.initial_state(1))
  np.testing.assert_allclose(result['pi_i'], tf.nn.softmax(output.logits[:, 0]).numpy(),
                             atol=1e-5)
  np.testing.assert_allclose(result['pi_0'], tf.nn.softmax(output.pi0_logits[:, 0]).numpy(),
                             atol=1e-5)
  lines = action_probe.table(result, minigrid_tasks.ACTION_NAMES)
  assert lines[0].split()[-4:] == list(minigrid_tasks.ACTION_NAMES)
  rows = {(l.split()[0], l.split()[1]): l for l in lines[1:] if '(all)' in l}
  assert set(rows) == {('pi_i', '(all)'), ('pi_0', '(all)')}
  mean = [float(x) for x in rows['pi_i', '(all)'].split()[-4:]]
  np.testing.assert_allclose(mean, result['pi_i'].mean(axis=0), rtol=2e-3, atol=1e-5)


def test_probes_a_trained_run_and_refuses_bad_arguments(tmp_path):
  logdir = tmp_path / 'run'
  train = subprocess.run(
      [sys.executable, '-m', 'distral_tf.launch', '--level_set=minigrid',
       '--algorithm=kl_ent_2col', '--num_tasks=4', '--tasks=3', '--workers_per_task=1',
       '--hidden_size=16', '--env_steps_per_task=100', '--unroll_length=5',
       f'--logdir={logdir}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert train.returncode == 0, train.stderr[-3000:]
  proc = _probe_cmd(f'--logdir={logdir}', '--probe_steps=200')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'task door_7x7: 200 steps of uniformly random actions' in proc.stdout
  rows = re.findall(r'^(pi_[i0]) +(\(all\)|[a-z ]+?) +(\d+) +(.+)$', proc.stdout, re.M)
  groups = {(policy, label.strip()): int(n) for policy, label, n, _ in rows}
  assert groups['pi_i', '(all)'] == groups['pi_0', '(all)'] == 200
  per_label = sum(n for (policy, label), n in groups.items()
                  if policy == 'pi_i' and label != '(all)')
  assert per_label == 200  # Every step has one label.
  for *_, probs in rows:
    assert abs(sum(float(p) for p in probs.split()) - 1) < 0.01
  other = tmp_path / 'other'  # The run's checkpoint, a config.json of a wider network.
  shutil.copytree(logdir, other)
  config = json.loads((other / 'config.json').read_text())
  (other / 'config.json').write_text(json.dumps(dict(config, hidden_size=32)))
  for args, message in (
      ([f'--logdir={logdir}', '--probe_task=lava'], "--probe_task=lava: the run's tasks"),
      ([f'--logdir={tmp_path / "none"}'], '--logdir: no '),
      (['--probe_steps=5'], '--logdir is required'),
      ([f'--logdir={other}'], f'--logdir: the checkpoint {other}')):
    proc = _probe_cmd(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f'error: {message}'), proc.stderr
