"""A gradient step on the cluster equals the same step of the local learner.

Runs in its own process (a process joins one cluster only): variables split
over 2 ps tasks, steps on 1 worker with reads cached per step, the shared
RMSProp on the ps; the actors' copy of the policy pulled back from the ps.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import json, sys, tempfile
import numpy as np
import tensorflow as tf
from distral_tf.agents import algorithms, learner as learner_lib, networks
from distral_tf.distributed import local_cluster, remote, topology

OBS, T, B, TASKS, ACTIONS = 7, 6, 3, 2, 5
launcher = local_cluster.LocalCluster(topology.LocalRequest(2, 1), tempfile.mkdtemp())
cluster = launcher.start()
try:
  strategy, coordinator = remote.connect(cluster)
  algorithm = algorithms.ALGORITHMS['kl_ent_2col']
  coeffs = algorithms.coefficients(algorithm, 0.03)
  config = learner_lib.LearnerConfig(learning_rate=0.01, total_steps=1000)

  def network():
    net = networks.DistralNetwork(algorithm, TASKS, ACTIONS, 'vector', coeffs.alpha)
    net.build((OBS,), tf.float32)
    return net

  with strategy.scope():
    on_ps = learner_lib.Learner(network(), algorithm, coeffs, config)
  local = learner_lib.Learner(network(), algorithm, coeffs, config)
  remote.PolicyMirror(on_ps.network, local.network).refresh()  # Same start.
  initial = [v.numpy() for v in local.network.trainable_variables]
  copy = network()
  pull = remote.PolicyMirror(on_ps.network, copy)
  scheduler = remote.StepScheduler(on_ps, strategy, coordinator, 1, TASKS)
  rng = np.random.default_rng(0)
  losses = []
  for task in (0, 1, 0):
    batch = learner_lib.Unroll(
        observations=tf.constant(rng.normal(size=(T + 1, B, OBS)), tf.float32),
        first=tf.constant(rng.random((T + 1, B)) < 0.2),
        actions=tf.constant(rng.integers(ACTIONS, size=(T, B)), tf.int32),
        rewards=tf.constant(rng.normal(size=(T, B)), tf.float32),
        discounts=tf.constant(rng.random((T, B)) > 0.1, tf.float32),
        initial_state=local.network.initial_state(B))
    sizes = tuple(B if t == task else 0 for t in range(TASKS))
    remote_metrics = scheduler.train_step(sizes, batch)
    local_metrics = local.train_step(sizes, batch)
    losses.append((remote_metrics['total'], float(local_metrics['total'])))
  pull.refresh()
  diffs = [float(np.max(np.abs(a.numpy() - b.numpy())))
           for a, b in zip(copy.trainable_variables, local.network.trainable_variables)]
  moved = [float(np.max(np.abs(a.numpy() - b)))
           for a, b in zip(copy.trainable_variables, initial)]
  split = [v.name for v in on_ps.network.variables if '/part_1' in v.name]
  print(json.dumps(dict(
      losses=losses, max_diff=max(diffs), max_moved=max(moved),
      iterations=[int(on_ps.optimizer.iterations.numpy()),
                  int(local.optimizer.iterations.numpy())],
      steps_done=[int(on_ps.steps_done.numpy()), int(local.steps_done.numpy())],
      split=split, steps_per_worker=scheduler.worker_stats()['steps'])))
finally:
  launcher.stop()
'''


def test_cluster_step_matches_local_step(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  proc = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True,
                        text=True, env=env, cwd=tmp_path, timeout=400)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for on_cluster, on_host in out['losses']:
    assert abs(on_cluster - on_host) < 1e-4 * max(1.0, abs(on_host))
  assert out['max_diff'] < 1e-5, out
  assert out['max_moved'] > 1e-3, out  # The steps did change the parameters.
  assert out['iterations'] == [3, 3]
  assert out['steps_done'] == [3 * 6 * 3] * 2
  assert out['split'], 'no variable was split over the two ps tasks'
  assert out['steps_per_worker'] == [3]
