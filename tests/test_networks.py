"""Tests of the Sonnet networks: shapes, eqs. (7)-(8) with (11)-(12), resets."""

import numpy as np
import pytest
import tensorflow as tf
import tree

from distral_tf.agents import algorithms
from distral_tf.agents import networks

NUM_TASKS, NUM_ACTIONS, DIM = 2, 5, 6
PIXEL_SHAPE = (36, 40, 3)  # Small frames: conv1 -> 8x9, conv2 -> 3x3.


def _network(name, kind='vector', alpha=None, num_tasks=NUM_TASKS):
  algo = algorithms.ALGORITHMS[name]
  alpha = algo.alpha if alpha is None else alpha
  net = networks.DistralNetwork(algo, num_tasks, NUM_ACTIONS, kind, alpha)
  if kind == 'vector':
    net.build((DIM,), tf.float32)
  else:
    net.build(PIXEL_SHAPE, tf.uint8)
  return net


def _observations(t, b, kind='vector', seed=0):
  rng = np.random.default_rng(seed)
  if kind == 'vector':
    return tf.constant(rng.normal(size=(t, b, DIM)), tf.float32)
  return tf.constant(rng.integers(0, 256, size=(t, b) + PIXEL_SHAPE), tf.uint8)


def _random_state(net, b, seed):
  rng = np.random.default_rng(seed)
  return tree.map_structure(
      lambda s: tf.constant(rng.normal(size=s.shape), tf.float32),
      net.initial_state(b))


@pytest.mark.parametrize('kind', ['vector', 'pixels'])
@pytest.mark.parametrize('name', list(algorithms.ALGORITHMS))
def test_output_shapes(name, kind):
  net = _network(name, kind)
  t, b = 3, 2
  obs = _observations(t, b, kind)
  first = tf.zeros((t, b), tf.bool)
  algo = algorithms.ALGORITHMS[name]
  for task in range(NUM_TASKS):
    state = net.initial_state(b)
    out, new_state = net.unroll(task, obs, first, state)
    assert out.logits.shape == (t, b, NUM_ACTIONS)
    assert out.values.shape == (t, b)
    tree.assert_same_structure(new_state, state)
    tree.assert_same_structure(state, net.initial_state(b))
    if algo.has_pi0:
      assert out.pi0_logits.shape == (t, b, NUM_ACTIONS)
      assert out.pi0_values.shape == (t, b)
    else:
      assert out.pi0_logits is None and out.pi0_values is None
  if algo.has_pi0 or algo.architecture == 'shared':
    logits, s = net.pi0_unroll(obs, first, net.pi0_initial_state(b))
    assert logits.shape == (t, b, NUM_ACTIONS)
    tree.assert_same_structure(s, net.pi0_initial_state(b))
  else:
    with pytest.raises(ValueError):
      net.pi0_unroll(obs, first, None)


@pytest.mark.parametrize('name', list(algorithms.ALGORITHMS))
def test_unroll_tasks_equals_each_task_unrolled_on_its_block(name):
  net = _network(name, 'pixels', num_tasks=3)
  sizes = (2, 0, 3)  # Task 1 has no environment in this batch.
  t, b = 2, sum(sizes)
  obs = _observations(t, b, 'pixels', seed=1)
  first = tf.constant(np.random.default_rng(2).random((t, b)) < 0.3)
  state = _random_state(net, b, seed=3)
  output, new_state = net.unroll_tasks(sizes, obs, first, state)
  expected, expected_states, offset = [], [], 0
  for task, n in enumerate(sizes):
    if n:
      block = lambda x, a=offset, n=n: x[a:a + n]
      out, s = net.unroll(task, obs[:, offset:offset + n], first[:, offset:offset + n],
                          tree.map_structure(block, state))
      expected.append(out)
      expected_states.append(s)
    offset += n
  for field in output._fields:  # logits, values, and pi_0's logits and values.
    want = [getattr(out, field) for out in expected]
    if want[0] is None:
      assert getattr(output, field) is None
    else:
      np.testing.assert_allclose(getattr(output, field), tf.concat(want, axis=1),
                                 atol=1e-5)
  tree.map_structure(
      lambda got, *want: np.testing.assert_allclose(got, tf.concat(want, 0), atol=1e-5),
      new_state, *expected_states)


@pytest.mark.parametrize('alpha', [0.5, 1.0, 0.2])
def test_two_column_logits_are_eq_8(alpha):
  """pi_i = pi_0^alpha exp(beta A_i) / Z with A_i from eq. (7), f = beta A."""
  net = _network('kl_ent_2col', alpha=alpha)
  beta = 7.0  # Any beta: f stands for beta times the soft advantage.
  t, b = 4, 3
  obs = _observations(t, b, seed=1)
  first = tf.constant(np.random.default_rng(2).random((t, b)) < 0.3)
  task = 1
  state = _random_state(net, b, seed=3)
  out, _ = net.unroll(task, obs, first, state)
  f, _, _ = net.columns[task].unroll(obs, first, state[0])
  h, _, _ = net.pi0.unroll(obs, first, state[1])
  f, h = f.numpy().astype(np.float64), h.numpy().astype(np.float64)
  log_pi0 = h - np.log(np.exp(h).sum(-1, keepdims=True))
  pi0 = np.exp(log_pi0)
  f_orig = f / beta  # Eqs. (11)-(12): the network's f is beta * f_orig.
  # Eq. (7).
  adv = f_orig - np.log(
      (pi0 ** alpha * np.exp(beta * f_orig)).sum(-1, keepdims=True)) / beta
  unnormalised = pi0 ** alpha * np.exp(beta * adv)
  # A is the soft advantage: the normaliser Z is already 1.
  np.testing.assert_allclose(unnormalised.sum(-1), 1.0, rtol=1e-6)
  pi_net = tf.nn.softmax(out.logits).numpy()
  np.testing.assert_allclose(pi_net, unnormalised, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(out.pi0_logits, h, rtol=1e-6)


def test_a3c_2col_logits_are_h_plus_f():
  net = _network('a3c_2col')
  obs = _observations(2, 2)
  first = tf.zeros((2, 2), tf.bool)
  state = net.initial_state(2)
  out, _ = net.unroll(0, obs, first, state)
  f, _, _ = net.columns[0].unroll(obs, first, state[0])
  np.testing.assert_allclose(out.logits, out.pi0_logits + f, rtol=1e-6)


def test_1col_task_logits_do_not_involve_pi0():
  net = _network('kl_1col')
  obs = _observations(2, 2)
  first = tf.zeros((2, 2), tf.bool)
  state = net.initial_state(2)
  out, _ = net.unroll(1, obs, first, state)
  f, v, _ = net.columns[1].unroll(obs, first, state[0])
  h, v0, _ = net.pi0.unroll(obs, first, state[1])
  np.testing.assert_allclose(out.logits, f, rtol=1e-6)
  np.testing.assert_allclose(out.values, v, rtol=1e-6)
  np.testing.assert_allclose(out.pi0_logits, h, rtol=1e-6)
  np.testing.assert_allclose(out.pi0_values, v0, rtol=1e-6)
  pi0_logits, _ = net.pi0_unroll(obs, first, net.pi0_initial_state(2))
  np.testing.assert_allclose(pi0_logits, h, rtol=1e-6)


@pytest.mark.parametrize('name', ['a3c', 'kl_ent_2col'])
def test_state_reset_where_first(name):
  """One unroll over two episodes equals two separate unrolls."""
  net = _network(name)
  b = 2
  obs = _observations(6, b, seed=4)
  first = np.zeros((6, b), bool)
  first[0] = True
  first[3, 0] = True  # Batch element 0: a new episode starts at step 3.
  stale = _random_state(net, b, seed=5)  # Must be ignored: first[0] is True.
  out, _ = net.unroll(0, obs, tf.constant(first), stale)
  fresh = net.initial_state(b)
  out_a, state_a = net.unroll(0, obs[:3], tf.constant(first[:3]), fresh)
  out_b, _ = net.unroll(0, obs[3:], tf.constant(first[3:]), fresh)
  # Element 0: two episodes; element 1: one episode carried on.
  out_c, _ = net.unroll(0, obs[3:], tf.constant(first[3:]), state_a)
  for field in ('logits', 'values'):
    whole = getattr(out, field).numpy()
    np.testing.assert_allclose(whole[:3], getattr(out_a, field), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(whole[3:, 0], getattr(out_b, field)[:, 0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole[3:, 1], getattr(out_c, field)[:, 1],
                               rtol=1e-5, atol=1e-6)
  # Sanity: without the reset the state matters, so the test can fail.
  carried, _ = net.unroll(0, obs[3:], tf.zeros((3, b), tf.bool), state_a)
  assert np.abs(carried.values.numpy()[:, 0] - out_b.values.numpy()[:, 0]
                ).max() > 1e-4
  no_reset, _ = net.unroll(0, obs[:1], tf.zeros((1, b), tf.bool), stale)
  assert np.abs(no_reset.values.numpy() - out_a.values.numpy()[:1]
                ).max() > 1e-4


def test_unknown_length_inside_tf_function():
  net = _network('a3c_multitask')
  obs = _observations(4, 2, seed=6)
  first = tf.constant([[True, True], [False, True], [False, False],
                       [True, False]])
  state = net.initial_state(2)
  eager, _ = net.unroll(0, obs, first, state)
  spec = [tf.TensorSpec([None, 2, DIM], tf.float32),
          tf.TensorSpec([None, 2], tf.bool)]
  fn = tf.function(lambda o, f: net.unroll(0, o, f, state)[0],
                   input_signature=spec)
  graph = fn(obs, first)
  np.testing.assert_allclose(graph.logits, eager.logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(graph.values, eager.values, rtol=1e-5, atol=1e-6)


def test_separate_columns_per_task():
  net = _network('a3c')
  obs = _observations(2, 1)
  first = tf.ones((2, 1), tf.bool)
  out0, _ = net.unroll(0, obs, first, net.initial_state(1))
  out1, _ = net.unroll(1, obs, first, net.initial_state(1))
  assert np.abs(out0.values.numpy() - out1.values.numpy()).max() > 1e-4
  ids0 = {v.ref() for v in net.task_variables(0)}
  ids1 = {v.ref() for v in net.task_variables(1)}
  assert not ids0 & ids1
  assert ids0 | ids1 == {v.ref() for v in net.trainable_variables}


def test_shared_network_for_all_tasks():
  net = _network('a3c_multitask')
  obs = _observations(2, 1)
  first = tf.ones((2, 1), tf.bool)
  out0, _ = net.unroll(0, obs, first, net.initial_state(1))
  out1, _ = net.unroll(1, obs, first, net.initial_state(1))
  np.testing.assert_array_equal(out0.logits, out1.logits)
  assert ([v.ref() for v in net.task_variables(0)] ==
          [v.ref() for v in net.task_variables(1)])
  assert len(net.columns) == 1


@pytest.mark.parametrize('name', ['kl_1col', 'kl_2col', 'a3c_2col'])
def test_pi0_variables_shared_by_tasks(name):
  net = _network(name, num_tasks=3)
  pi0 = {v.ref() for v in net.pi0_variables()}
  assert pi0
  per_task = [{v.ref() for v in net.task_variables(t)} for t in range(3)]
  for t in range(3):
    for u in range(t + 1, 3):
      assert per_task[t] & per_task[u] == pi0
  assert set.union(*per_task) == {v.ref() for v in net.trainable_variables}


def test_build_creates_every_variable():
  net = _network('kl_ent_1col', num_tasks=3)
  # Four columns (three tasks and pi_0) of 2 torso + 2 fc + 3 LSTM + 4 head
  # variables each.
  assert len(net.trainable_variables) == 4 * 11
  names = {v.name.split('/')[1] for v in net.trainable_variables}
  assert names == {'task_0', 'task_1', 'task_2', 'pi0'}


def test_pixel_torso_is_the_a3c_convnet():
  net = _network('a3c', kind='pixels', num_tasks=1)
  shapes = {v.name.split('/', 2)[2]: tuple(v.shape)
            for v in net.trainable_variables}
  assert shapes['conv1/w:0'] == (8, 8, 3, 16)
  assert shapes['conv2/w:0'] == (4, 4, 16, 32)
  assert shapes['fc/w:0'] == (3 * 3 * 32, 256)
  assert shapes['lstm/w_h:0'] == (256, 4 * 256)
  assert shapes['policy/w:0'] == (256, NUM_ACTIONS)
  assert shapes['value/w:0'] == (256, 1)


def test_task_out_of_range():
  net = _network('a3c')
  with pytest.raises(ValueError, match='task'):
    net.task_variables(NUM_TASKS)


@pytest.mark.parametrize('kind', ['vector', 'pixels'])
def test_lstm_skip_adds_the_fc_output_to_the_lstm_output(kind):
  """Read-outs of ``lstm_skip``: linear(LSTM output + fc output) at every step."""
  t, b = 4, 3
  obs = _observations(t, b, kind, seed=3)
  first = tf.constant(np.eye(t, b, dtype=bool))
  columns = {}
  for skip in (True, False):
    column = networks.Column(NUM_ACTIONS, kind, hidden_size=8, lstm_skip=skip)
    state = column.initial_state(b)
    columns[skip] = (column, column.unroll(obs, first, state))
  plain, skipped = columns[False][0], columns[True][0]
  for src, dst in zip(plain.variables, skipped.variables):
    dst.assign(src)  # Same weights: the outputs differ only by the skip.
  logits_plain, values_plain, _ = plain.unroll(obs, first, plain.initial_state(b))
  logits_skip, values_skip, state_skip = skipped.unroll(obs, first, skipped.initial_state(b))
  _, _, state_plain = plain.unroll(obs, first, plain.initial_state(b))
  frames = tf.reshape(obs, [t * b] + obs.shape[2:].as_list())
  fc = tf.reshape(plain._embed(frames), [t, b, 8])  # pylint: disable=protected-access
  policy_w = plain._policy.w  # pylint: disable=protected-access
  value_w = plain._value.w  # pylint: disable=protected-access
  np.testing.assert_allclose(logits_skip - logits_plain,
                             tf.einsum('tbh,ha->tba', fc, policy_w), atol=1e-5)
  np.testing.assert_allclose(values_skip - values_plain,
                             tf.einsum('tbh,ha->tba', fc, value_w)[..., 0], atol=1e-5)
  tree.map_structure(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
                     state_skip, state_plain)  # The LSTM itself is unchanged.
