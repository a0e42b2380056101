"""Acting: actions are drawn from the policy the actors report (pi_i and pi_0)."""

from typing import NamedTuple

import numpy as np
import pytest
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


class _State(NamedTuple):
  h: tf.Tensor
  c: tf.Tensor


def test_fixed_shape_function_equals_the_function_and_reads_variables_at_each_call():
  scale = tf.Variable(2.0)

  @tf.function
  def f(x, first, state):
    return x * scale, _State(state.h + tf.cast(first, tf.float32), state.c - x)

  fixed = actor_lib.FixedShapeFunction(f)
  x, first = np.arange(3, dtype=np.float32), np.array([True, False, True])
  state = _State(tf.ones([3]), tf.zeros([3]))
  for value in (2.0, -0.5):  # The actor's calls see the learner's updates.
    scale.assign(value)
    got, expected = fixed(x, first, state), f(x, first, state)
    assert isinstance(got[1], _State)
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  np.testing.assert_array_equal(got[0].numpy(), [0.0, -0.5, -1.0])


def test_fixed_shape_function_refuses_other_shapes_and_dtypes():
  fixed = actor_lib.FixedShapeFunction(tf.function(lambda x: x + 1))
  fixed(np.zeros(3, np.float32))
  with pytest.raises(ValueError, match='traced for'):
    fixed(np.zeros(4, np.float32))
  with pytest.raises(ValueError, match='traced for'):
    fixed(np.zeros(3, np.float64))
