"""Three learner steps of every algorithm on fixed inputs, and their recorded losses.

``tests/data/learner_steps.json`` holds the metrics of ``run_steps`` as computed
before the policies' distributions moved to TensorFlow Probability; the test
``test_learner_steps.py`` recomputes them and asserts they are unchanged. A
change of the math shows as a mismatch; after an intended change, rewrite
the file with ``python -m tests.learner_regression``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from distral_tf.agents import algorithms
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import networks

DATA = os.path.join(os.path.dirname(__file__), 'data', 'learner_steps.json')
# Inputs: (observation kind, shape, dtype, actions). The grid world's vector and
# a small pixel frame for every algorithm; the frames and action sets of the
# pixel level sets for KL+ent_2col, the default algorithm.
KINDS = {
    'vector': ('vector', (59,), np.float32, 5),        # two_rooms
    'pixels': ('pixels', (24, 24, 3), np.uint8, 4),
    'minigrid': ('pixels', (56, 56, 3), np.uint8, 4),
    'miniworld': ('pixels', (72, 96, 3), np.uint8, 3),
    'dmlab': ('pixels', (72, 96, 3), np.uint8, 9),      # mazes, navigation, lasertag
}
RUNS = tuple([f'{name}/{kind}' for name in algorithms.ALGORITHMS
              for kind in ('vector', 'pixels')] +
             [f'kl_ent_2col/{kind}' for kind in ('minigrid', 'miniworld', 'dmlab')])
NUM_TASKS, ENVS_PER_TASK, UNROLL, STEPS = 2, 2, 6, 3
METRICS = ('total', 'grad_norm', 'policy_loss/0', 'entropy_loss/0', 'value_loss/0',
           'distill_loss/0', 'value_l2/0', 'entropy/1', 'kl/1', 'rho/1',
           'behaviour_kl/1', 'mean_return/1')


def _batch(rng: np.random.Generator, network, shape, dtype, num_actions
           ) -> learner_lib.Unroll:
  batch = NUM_TASKS * ENVS_PER_TASK
  if dtype == np.uint8:
    obs = rng.integers(0, 256, size=(UNROLL + 1, batch, *shape)).astype(np.uint8)
  else:
    obs = rng.normal(size=(UNROLL + 1, batch, *shape)).astype(np.float32)
  first = rng.random((UNROLL + 1, batch)) < 0.15
  discounts = np.where(rng.random((UNROLL, batch)) < 0.1, 0.0, 1.0).astype(np.float32)
  return learner_lib.Unroll(
      observations=tf.constant(obs), first=tf.constant(first),
      actions=tf.constant(rng.integers(0, num_actions, (UNROLL, batch)), tf.int32),
      rewards=tf.constant(rng.normal(size=(UNROLL, batch)), tf.float32),
      discounts=tf.constant(discounts),
      initial_state=network.initial_state(batch),
      behaviour_logits=tf.constant(rng.normal(size=(UNROLL, batch, num_actions)),
                                   tf.float32),
      final_values=tf.constant(rng.normal(size=(UNROLL, batch)), tf.float32))


def run_steps(algorithm_name: str, kind: str) -> list[dict[str, float]]:
  """Metrics of ``STEPS`` learner steps from a seeded network on seeded inputs."""
  observation_kind, shape, dtype, num_actions = KINDS[kind]
  algorithm = algorithms.ALGORITHMS[algorithm_name]
  coeffs = algorithms.coefficients(algorithm, 0.05, None)
  tf.random.set_seed(1)
  network = networks.DistralNetwork(
      algorithm, num_tasks=NUM_TASKS, num_actions=num_actions,
      observation_kind=observation_kind,
      alpha=coeffs.alpha, hidden_size=16)
  network.build(shape, tf.as_dtype(dtype))
  learner = learner_lib.Learner(network, algorithm, coeffs, learner_lib.LearnerConfig(
      learning_rate=1e-3, total_steps=10_000, discount=0.9))
  rng = np.random.default_rng(7)
  rows = []
  for _ in range(STEPS):
    metrics = learner.train_step((ENVS_PER_TASK,) * NUM_TASKS,
                                 _batch(rng, network, shape, dtype, num_actions))
    rows.append({k: float(metrics[k]) for k in METRICS if k in metrics})
  return rows


def all_runs() -> dict[str, list[dict[str, float]]]:
  return {run: run_steps(*run.split('/')) for run in RUNS}


if __name__ == '__main__':
  with open(DATA, 'w') as f:
    json.dump(all_runs(), f, indent=1, sort_keys=True)
  print(f'wrote {DATA}')
