"""Tests of the learner: shared RMSProp, per-task updates, annealing, clipping."""

import numpy as np
import pytest
import tensorflow as tf

from distral_tf.agents import algorithms
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import networks

NUM_TASKS, NUM_ACTIONS, DIM = 2, 3, 4
T, B = 5, 4


def _make(name, num_tasks=NUM_TASKS, entropy_cost=0.01, **config):
  algo = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algo, entropy_cost)
  net = networks.DistralNetwork(algo, num_tasks, NUM_ACTIONS, 'vector',
                                coeffs.alpha)
  net.build((DIM,), tf.float32)
  config.setdefault('learning_rate', 1e-3)
  config.setdefault('total_steps', 10**6)
  return learner_lib.Learner(net, algo, coeffs,
                             learner_lib.LearnerConfig(**config))


def _batch(net, seed=0, t=T, b=B):
  rng = np.random.default_rng(seed)
  first = rng.random((t + 1, b)) < 0.2
  discounts = np.ones((t, b), np.float32)
  discounts[first[1:]] = 0.0  # An episode ends right before each first.
  return learner_lib.Unroll(
      observations=tf.constant(rng.normal(size=(t + 1, b, DIM)), tf.float32),
      first=tf.constant(first),
      actions=tf.constant(rng.integers(0, NUM_ACTIONS, (t, b)), tf.int32),
      rewards=tf.constant(rng.normal(size=(t, b)), tf.float32),
      discounts=tf.constant(discounts),
      initial_state=net.initial_state(b))


def _only(task, b=B, num_tasks=NUM_TASKS):
  """``task_sizes`` of a batch whose ``b`` environments all belong to ``task``."""
  return tuple(b if t == task else 0 for t in range(num_tasks))


def _values(variables):
  return [v.numpy().copy() for v in variables]


def _changed(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_one_optimizer_with_slots_for_every_task():
  learner = _make('kl_ent_2col')
  net = learner.network
  slots = {v.name: tuple(v.shape) for v in learner.optimizer.variables
           if v.name.startswith('velocity/')}
  expected = {'velocity/' + v.name: tuple(v.shape)
              for v in net.trainable_variables}
  assert slots == expected
  for task in range(NUM_TASKS):
    for v in net.task_variables(task):
      assert 'velocity/' + v.name in slots
  assert isinstance(learner.learning_rate, tf.Variable)
  assert learner.steps_done.dtype == tf.int64
  assert set(learner.checkpoint_items()) == {
      'network', 'optimizer', 'learning_rate', 'steps_done'}


def test_step_touches_only_its_task_and_pi0():
  learner = _make('kl_1col')
  net = learner.network
  task0, task1 = net.columns[0].trainable_variables, net.columns[1].trainable_variables
  pi0 = net.pi0_variables()
  before = [_values(task0), _values(task1), _values(pi0)]
  metrics = learner.train_step(_only(0), _batch(net))  # Compiled.
  assert all(_changed(before[0], task0))
  assert not any(_changed(before[1], task1))
  assert all(_changed(before[2], pi0))
  for key in ('total', 'policy_loss/0', 'value_loss/0', 'distill_loss/0', 'entropy/0',
              'kl/0', 'value_l2/0', 'mean_return/0', 'value_error/0', 'rho/0',
              'behaviour_kl/0', 'grad_norm', 'learning_rate'):
    assert metrics[key].shape == ()
    assert np.isfinite(metrics[key].numpy())
  assert float(metrics['grad_norm']) > 0


def test_step_on_task1_in_two_column_updates_shared_column():
  learner = _make('kl_2col')
  net = learner.network
  task0, pi0 = net.columns[0].trainable_variables, net.pi0_variables()
  before0, before_pi0 = _values(task0), _values(pi0)
  learner.update(_only(1), _batch(net))  # Eager: the same step, not compiled.
  assert not any(_changed(before0, task0))
  assert any(_changed(before_pi0, pi0))


def test_linear_annealing_reaches_zero():
  lr0 = 0.01
  learner = _make('a3c', learning_rate=lr0, total_steps=3 * T * B)
  net = learner.network
  batch = _batch(net)
  used = [float(learner.update(_only(0), batch)['learning_rate'])
          for _ in range(3)]
  np.testing.assert_allclose(used, [lr0, lr0 * 2 / 3, lr0 / 3], rtol=1e-5)
  assert float(learner.learning_rate.numpy()) == 0.0
  assert int(learner.steps_done.numpy()) == 3 * T * B
  before = _values(net.trainable_variables)
  metrics = learner.update(_only(1), _batch(net, seed=1))
  assert float(metrics['learning_rate']) == 0.0
  assert not any(_changed(before, net.trainable_variables))
  # Past total_steps the rate stays at 0 (never negative).
  assert float(learner.learning_rate.numpy()) == 0.0
  assert int(learner.steps_done.numpy()) == 4 * T * B


def test_constant_schedule_keeps_the_rate():
  learner = _make('a3c', learning_rate=0.01, total_steps=T * B, lr_schedule='constant')
  for _ in range(3):
    assert float(learner.update(_only(0), _batch(learner.network))['learning_rate']) == (
        pytest.approx(0.01))
  assert float(learner.learning_rate.numpy()) == pytest.approx(0.01)


@pytest.mark.parametrize('name', ['kl_ent_2col', 'a3c_multitask', 'kl_1col'])
def test_a_step_on_several_tasks_sums_their_losses(name):
  """One batch of two tasks' environments: the loss is the sum of each task's
  loss on its own environments, and so is the gradient."""
  learner = _make(name)
  net = learner.network
  b0, b1 = 3, 2
  batch = _batch(net, seed=5, b=b0 + b1)
  part = lambda a, b: learner_lib.Unroll(
      observations=batch.observations[:, a:b], first=batch.first[:, a:b],
      actions=batch.actions[:, a:b], rewards=batch.rewards[:, a:b],
      discounts=batch.discounts[:, a:b],
      initial_state=tf.nest.map_structure(lambda x: x[a:b], batch.initial_state))
  variables = net.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    both, metrics = learner.loss((b0, b1), batch)
    alone0, _ = learner.loss((b0, 0), part(0, b0))
    alone1, _ = learner.loss((0, b1), part(b0, b0 + b1))
  np.testing.assert_allclose(float(both), float(alone0) + float(alone1), rtol=1e-5)
  assert float(metrics['total']) == pytest.approx(float(both))
  for g, g0, g1 in zip(tape.gradient(both, variables), tape.gradient(alone0, variables),
                       tape.gradient(alone1, variables)):
    want = sum(x.numpy() for x in (g0, g1) if x is not None)
    got = 0 if g is None else g.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  common, per_task = learner_lib.split_metrics(
      {k: float(v) for k, v in learner.update((b0, b1), batch).items()})
  assert set(per_task) == {0, 1} and {'grad_norm', 'learning_rate', 'total'} <= set(common)


def test_clipping_bounds_the_update():
  lr, clip, rho, eps = 0.5, 0.01, 0.99, 0.1
  learner = _make('a3c', learning_rate=lr, grad_clip_norm=clip,
                  rmsprop_decay=rho, rmsprop_epsilon=eps)
  net = learner.network
  batch = _batch(net, seed=2)
  variables = net.task_variables(0)
  with tf.GradientTape() as tape:
    loss, _ = learner.loss(_only(0), batch)
  grads = [g.numpy() for g in tape.gradient(loss, variables)]
  norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
  assert norm > 10 * clip  # Clipping is active.
  before = _values(variables)
  metrics = learner.update(_only(0), batch)
  np.testing.assert_allclose(float(metrics['grad_norm']), norm, rtol=1e-4)
  # First RMSProp step on the clipped gradient: ms = (1 - rho) g^2,
  # delta = -lr g / sqrt(ms + eps).
  for b, v, g in zip(before, variables, grads):
    g_clipped = g * (clip / norm)
    delta = -lr * g_clipped / np.sqrt((1 - rho) * g_clipped ** 2 + eps)
    np.testing.assert_allclose(v.numpy() - b, delta, rtol=1e-3, atol=1e-7)
  # The whole update's norm is bounded by lr * clip / sqrt(eps).
  total = np.sqrt(sum(((v.numpy() - b) ** 2).sum()
                      for b, v in zip(before, variables)))
  assert total <= lr * clip / np.sqrt(eps) * (1 + 1e-4)


def test_freeze_keeps_pi0_fixed():
  learner = _make('kl_ent_1col')
  net = learner.network
  learner.freeze(net.pi0_variables())
  pi0, task0 = net.pi0_variables(), net.columns[0].trainable_variables
  before_pi0, before0 = _values(pi0), _values(task0)
  learner.update(_only(0), _batch(net, seed=3))
  assert not any(_changed(before_pi0, pi0))
  assert all(_changed(before0, task0))


@pytest.mark.parametrize('name', ['kl_ent_1col', 'kl_ent_2col'])
def test_a_fixed_prior_drops_the_value_l2_term(name):
  """With pi_0 frozen, V_0 no longer pulls on the task's value (``freeze_prior``)."""
  batch_seed = 4
  grads = {}
  for case, cost in (('frozen', 0.5), ('no_l2', 0.0), ('l2', 0.5)):
    tf.random.set_seed(0)
    learner = _make(name, value_l2_cost=cost)
    if case == 'frozen':
      learner.freeze_prior()
    variables = learner.network.columns[0].trainable_variables
    batch = _batch(learner.network, seed=batch_seed)
    with tf.GradientTape() as tape:
      total, metrics = learner.loss(_only(0), batch)
    grads[case] = [g.numpy() for g in tape.gradient(total, variables)]
    if case == 'frozen':
      assert float(metrics['value_l2/0']) == 0.0
      before = _values(learner.network.pi0_variables())
      learner.update(_only(0), batch)
      assert not any(_changed(before, learner.network.pi0_variables()))
  for frozen, no_l2, l2 in zip(grads['frozen'], grads['no_l2'], grads['l2']):
    np.testing.assert_allclose(frozen, no_l2, rtol=1e-5, atol=1e-7)
  # The term does reach the task's column when pi_0 learns.
  assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-6)
             for a, b in zip(grads['l2'], grads['no_l2']))


def test_checkpoint_restores_everything(tmp_path):
  learner = _make('kl_ent_2col')
  for task in (0, 1):
    learner.update(_only(task), _batch(learner.network, seed=task))
  ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
  path = ckpt.write(str(tmp_path / 'ckpt'))
  fresh = _make('kl_ent_2col')
  tf.train.Checkpoint(**fresh.checkpoint_items()).read(path).assert_consumed()
  for a, b in zip(learner.optimizer.variables, fresh.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  for a, b in zip(learner.network.trainable_variables,
                  fresh.network.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert int(fresh.steps_done.numpy()) == 2 * T * B
  assert float(fresh.learning_rate.numpy()) == pytest.approx(
      float(learner.learning_rate.numpy()))


def _bandit(learner, task, steps, seed):
  """Every step is a one-step episode; action 0 pays 1, the others 0."""
  net = learner.network
  rng = np.random.default_rng(seed)
  obs = tf.ones((T + 1, B, DIM), tf.float32)
  first = tf.ones((T + 1, B), tf.bool)
  zeros = tf.zeros((T, B), tf.float32)
  state = net.initial_state(B)

  def probs():
    out, _ = net.unroll(task, obs[:1, :1], first[:1, :1], net.initial_state(1))
    pi0 = None if out.pi0_logits is None else tf.nn.softmax(out.pi0_logits[0, 0])
    return tf.nn.softmax(out.logits[0, 0]), pi0

  for _ in range(steps):
    pi, _ = probs()
    pi = pi.numpy().astype(np.float64)
    actions = rng.choice(NUM_ACTIONS, size=(T, B), p=pi / pi.sum())
    rewards = (actions == 0).astype(np.float32)
    learner.train_step(_only(task, num_tasks=net.num_tasks), learner_lib.Unroll(
        obs, first, tf.constant(actions, tf.int32), tf.constant(rewards),
        zeros, state))
  return probs()


@pytest.mark.parametrize('name', ['a3c', 'kl_1col'])
def test_bandit_policy_moves_to_rewarded_action(name):
  tf.random.set_seed(0)
  # A large enough c_KL = alpha/beta that distillation shows within the test.
  learner = _make(name, num_tasks=1, learning_rate=3e-3, entropy_cost=0.2)
  pi, pi0 = _bandit(learner, 0, steps=0, seed=0)
  assert 0.2 < float(pi[0]) < 0.5  # Near uniform at first.
  pi, pi0 = _bandit(learner, 0, steps=150, seed=1)
  assert float(pi[0]) > 0.9
  if pi0 is not None:  # Distillation pulls pi_0 toward pi_1 (eq. 10).
    assert float(pi0[0]) > 0.6
