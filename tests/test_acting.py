"""Acting: actions are drawn from the policy the actors report (pi_i and pi_0)."""

import numpy as np
import tensorflow as tf

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import algorithms
from distral_tf.agents import networks

NUM_ENVS, NUM_ACTIONS = 20_000, 5


def _network() -> networks.DistralNetwork:
  algorithm = algorithms.ALGORITHMS['kl_ent_2col']
  tf.random.set_seed(3)
  network = networks.DistralNetwork(algorithm, num_tasks=1, num_actions=NUM_ACTIONS,
                                    observation_kind='vector', alpha=0.5, hidden_size=8)
  network.build((6,), tf.float32)
  # Logits far from uniform, so that a wrong sampler shows.
  for bias in [v for v in network.trainable_variables if 'policy/b' in v.name]:
    bias.assign(2.0 * tf.random.normal(bias.shape))
  return network


def _frequencies(actions: np.ndarray) -> np.ndarray:
  return np.bincount(actions, minlength=NUM_ACTIONS) / len(actions)


def test_task_actions_follow_the_returned_logits():
  network = _network()
  act = actor_lib.make_act_fn(network, [NUM_ENVS])
  obs = tf.ones([NUM_ENVS, 6])  # One observation: one policy for every column.
  actions, logits, _, _ = act(obs, tf.ones([NUM_ENVS], tf.bool),
                              network.initial_state(NUM_ENVS))
  probs = tf.nn.softmax(logits[0]).numpy()
  assert probs.max() > 0.4  # Not uniform.
  # 4 standard errors of a frequency from 20,000 draws.
  np.testing.assert_allclose(_frequencies(actions.numpy()), probs,
                             atol=4 * np.sqrt(0.25 / NUM_ENVS))


def test_pi0_actions_follow_pi0():
  network = _network()
  act = actor_lib.make_pi0_act_fn(network)
  obs = tf.ones([NUM_ENVS, 6])
  actions, _ = act(obs, tf.ones([NUM_ENVS], tf.bool), network.pi0_initial_state(NUM_ENVS))
  logits, _ = network.pi0_unroll(obs[tf.newaxis], tf.ones([1, NUM_ENVS], tf.bool),
                                 network.pi0_initial_state(NUM_ENVS))
  probs = tf.nn.softmax(logits[0, 0]).numpy()
  assert probs.max() > 0.4
  np.testing.assert_allclose(_frequencies(actions.numpy()), probs,
                             atol=4 * np.sqrt(0.25 / NUM_ENVS))
