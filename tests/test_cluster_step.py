"""A gradient step on the cluster equals the same step of the local learner.

Runs in its own process (a process joins one cluster only): variables split
over 2 ps tasks, unrolls put into the worker's own queue (as its actor host
does) and taken there by the step, reads cached per step, the shared RMSProp
on the ps; a step that finds the queue empty changes nothing; the policy the
step leaves in the worker's policy queue is the one it read; the chief's copy
of the policy pulled back from the ps.
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
from distral_tf.distributed import actor_rpc, host_queue, local_cluster, remote, steps, topology

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
  pull = remote.PolicyMirror(on_ps.network, copy, on_ps.optimizer.iterations)
  run_id = 'test'
  K = steps.UNROLLS_PER_CALL
  scheduler = steps.StepScheduler(on_ps, strategy, coordinator, 1, TASKS, run_id,
                                  actor_rpc.unroll_structure(copy), T)
  variables = remote.variables_in_order(copy)
  queues = host_queue.HostQueues('grpc://' + cluster.workers[0], 0, run_id,
                                 host_queue.policy_spec(variables))
  rng = np.random.default_rng(0)
  losses, lags, offered, numbers = [], [], [], []
  for task in (0, 1, 0):
    batch = learner_lib.Unroll(
        observations=tf.constant(rng.normal(size=(T + 1, B, OBS)), tf.float32),
        first=tf.constant(rng.random((T + 1, B)) < 0.2),
        actions=tf.constant(rng.integers(ACTIONS, size=(T, B)), tf.int32),
        rewards=tf.constant(rng.normal(size=(T, B)), tf.float32),
        discounts=tf.constant(rng.random((T, B)) > 0.1, tf.float32),
        initial_state=local.network.initial_state(B),
        behaviour_logits=tf.constant(rng.normal(size=(T, B, ACTIONS)), tf.float32),
        final_values=tf.zeros([T, B]))
    sizes = tuple(B if t == task else 0 for t in range(TASKS))
    before = [v.numpy() for v in remote.variables_in_order(local.network)]
    element = host_queue.unroll_element(7, len(lags) + 1, 0, batch)
    spec = host_queue.ElementSpec.of(element)
    empty_first = scheduler.train_step(sizes, spec)  # Its queue is still empty.
    assert [r.status for r in empty_first] == [steps.EMPTY] * K, empty_first
    assert queues.put(sizes, element, timeout=10.0)
    result, *rest = scheduler.train_step(sizes, spec)  # One unroll: one step.
    assert result.status == steps.TRAINED, result
    assert [r.status for r in rest] == [steps.EMPTY] * (K - 1), rest
    lags.append(result.lag)
    numbers.append((result.incarnation, result.number))
    policy = queues.take_policy(timeout=10.0)
    offered.append([policy[0], max(float(np.max(np.abs(a - b)))
                                   for a, b in zip(policy[1], before))])
    local_metrics = local.train_step(sizes, batch)
    losses.append((result.metrics['total'], float(local_metrics['total'])))
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
      split=split, stats=scheduler.worker_stats(),       lags=lags, numbers=numbers, offered=offered, version=pull.version,
      trained_steps=scheduler.trained_steps.tolist(), K=K)))
  queues.close()  # Its session would keep the process from exiting.
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
  assert out['stats']['steps'] == [3] and out['stats']['calls'] == 6
  assert out['stats']['empty_steps'] == 3 * out['K'] + 3 * (out['K'] - 1)
  assert out['stats']['policy_offers'] == 3
  # Unrolls acted with policy 0, trained after 0, 1 and 2 updates.
  assert out['lags'] == [0, 1, 2]
  assert out['numbers'] == [[7, 1], [7, 2], [7, 3]]  # Each step says what it took.
  # Each step left the parameters it read (before its update) and their number.
  assert [v for v, _ in out['offered']] == [0, 1, 2]
  assert max(d for _, d in out['offered']) < 1e-5, out['offered']
  assert out['version'] == 3
  assert out['trained_steps'] == [2 * 6 * 3, 6 * 3]
