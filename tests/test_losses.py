"""Tests of the deep losses against eqs. (9)-(10) computed by hand in numpy."""

import numpy as np
import pytest
import tensorflow as tf

from distral_tf.agents import algorithms
from distral_tf.agents import losses
from distral_tf.agents import networks

T, B, A = 5, 3, 4
GAMMA = 0.9
VALUE_COST = 0.5
VALUE_L2_COST = 0.05


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _returns_loop(rewards, discounts, bootstrap):
  """G_t = r_t + d_t G_{t+1}, G_T = bootstrap, one element at a time."""
  out = np.zeros_like(rewards)
  for b in range(rewards.shape[1]):
    g = bootstrap[b]
    for t in reversed(range(rewards.shape[0])):
      g = rewards[t, b] + discounts[t, b] * g
      out[t, b] = g
  return out


def _inputs(seed):
  rng = np.random.default_rng(seed)
  return dict(
      h=rng.normal(size=(T + 1, B, A)),
      f=rng.normal(size=(T + 1, B, A)),
      v=rng.normal(size=(T + 1, B)),
      v0=rng.normal(size=(T + 1, B)),
      actions=rng.integers(0, A, size=(T, B)),
      rewards=rng.normal(size=(T, B)),
      # Environment discounts with a terminal step in the middle.
      env_discounts=(rng.random((T, B)) > 0.3).astype(np.float64),
  )


def _loss_and_grads(name, x, alpha=None, entropy_cost=0.2):
  """Autodiff gradients of distral_loss w.r.t. h, f, V and V_0."""
  algo = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algo, entropy_cost, alpha)
  h, f, v, v0 = (tf.Variable(x[k], dtype=tf.float32)
                 for k in ('h', 'f', 'v', 'v0'))
  with tf.GradientTape() as tape:
    if algo.architecture == 'two_column':
      logit_alpha = coeffs.alpha if algo.distilled else 1.0
      logits = logit_alpha * h + f
    else:
      logits = f * 1.0
    has_pi0 = algo.has_pi0
    output = networks.NetOutput(logits, v * 1.0, h * 1.0 if has_pi0 else None,
                                v0 * 1.0 if has_pi0 else None)
    loss, metrics = losses.distral_loss(
        output, tf.constant(x['actions'], tf.int32),
        tf.constant(x['rewards'], tf.float32),
        tf.constant(x['env_discounts'], tf.float32), coeffs, algo, GAMMA,
        VALUE_COST, VALUE_L2_COST)
  grads = tape.gradient(loss, [h, f, v, v0])
  grads = [np.zeros(var.shape) if g is None else g.numpy()
           for g, var in zip(grads, [h, f, v, v0])]
  return coeffs, metrics, dict(zip(('h', 'f', 'v', 'v0'), grads))


def _by_hand(name, x, coeffs):
  """Ascent directions of eqs. (9)-(10) and the value terms, in numpy.

  Returns d(loss)/d(h, f, V, V_0) for loss = -(objective), summed over time
  and averaged over the batch.
  """
  algo = algorithms.ALGORITHMS[name]
  two_col = algo.architecture == 'two_column'
  logit_alpha = (coeffs.alpha if algo.distilled else 1.0) if two_col else 0.0
  logits = logit_alpha * x['h'] + x['f']
  pi = _softmax(logits[:T])
  pi0 = _softmax(x['h'][:T])
  onehot = np.eye(A)[x['actions']]
  log_pi_a = np.log((pi * onehot).sum(-1))
  log_pi0_a = np.log((pi0 * onehot).sum(-1))
  if algo.entropy_bonus:
    rewards = x['rewards']
  else:  # R_reg of eq. (9).
    rewards = (x['rewards'] + coeffs.alpha / coeffs.beta * log_pi0_a
               - log_pi_a / coeffs.beta)
  returns = _returns_loop(rewards, GAMMA * x['env_discounts'], x['v'][T])
  adv = returns - x['v'][:T]
  # Eq. (9): grad log pi_i(a|s) * (R_reg return - baseline), w.r.t. logits.
  pg_logits = (onehot - pi) * adv[..., None]
  ascent_logits = pg_logits
  if algo.entropy_bonus:
    entropy = -(pi * np.log(pi)).sum(-1, keepdims=True)
    # d H / d z_j = -pi_j (log pi_j + H).
    ascent_logits = ascent_logits + coeffs.c_ent * (
        -pi * (np.log(pi) + entropy))
  # Eq. (10): first term through the two-column logits, second term
  # (alpha/beta) sum_a (pi_i - pi_0) grad h for distilled algorithms.
  ascent_h = logit_alpha * ascent_logits
  if algo.distilled:
    ascent_h = ascent_h + coeffs.alpha / coeffs.beta * (pi - pi0)
  grads = dict(h=np.zeros((T + 1, B, A)), f=np.zeros((T + 1, B, A)),
               v=np.zeros((T + 1, B)), v0=np.zeros((T + 1, B)))
  grads['f'][:T] = -ascent_logits / B
  if algo.has_pi0:
    grads['h'][:T] = -ascent_h / B
  grads['v'][:T] = -VALUE_COST * adv / B
  if algo.has_pi0:
    diff = x['v'][:T] - x['v0'][:T]
    grads['v'][:T] += 2 * VALUE_L2_COST * diff / B
    grads['v0'][:T] = -2 * VALUE_L2_COST * diff / B
  return grads, returns, pi, pi0


@pytest.mark.parametrize('name', ['kl_1col', 'kl_ent_1col', 'kl_2col',
                                  'kl_ent_2col'])
@pytest.mark.parametrize('seed', [0, 1])
def test_distral_gradients_match_eqs_9_10(name, seed):
  x = _inputs(seed)
  coeffs, metrics, grads = _loss_and_grads(name, x)
  expected, returns, pi, pi0 = _by_hand(name, x, coeffs)
  for key in ('h', 'f', 'v', 'v0'):
    np.testing.assert_allclose(grads[key], expected[key], atol=2e-5,
                               err_msg=f'{name} d/d{key}')
  # pi_0's gradient is non-trivial in every case.
  assert np.abs(grads['h']).max() > 1e-3
  np.testing.assert_allclose(metrics['mean_return'], returns.mean(), rtol=1e-5)
  kl = (pi * (np.log(pi) - np.log(pi0))).sum(-1).mean()
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-4)


def test_1col_pi0_gets_only_the_distillation_term():
  x = _inputs(3)
  coeffs, _, grads = _loss_and_grads('kl_ent_1col', x)
  pi = _softmax(x['f'][:T])
  pi0 = _softmax(x['h'][:T])
  expected = -(coeffs.alpha / coeffs.beta) * (pi - pi0) / B
  np.testing.assert_allclose(grads['h'][:T], expected, atol=1e-6)
  np.testing.assert_allclose(grads['h'][T], 0.0)


def test_distillation_vanishes_at_the_task_policy():
  """Eq. (10)'s second term is zero when pi_0 equals pi_i (one task)."""
  x = _inputs(4)
  x['h'] = x['f'].copy()
  _, metrics, grads = _loss_and_grads('kl_1col', x)
  np.testing.assert_allclose(grads['h'], 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics['kl'], 0.0, atol=1e-6)


def test_alpha_zero_override_turns_distillation_off():
  x = _inputs(5)
  _, _, grads = _loss_and_grads('kl_1col', x, alpha=0.0)
  np.testing.assert_allclose(grads['h'], 0.0, atol=1e-7)


@pytest.mark.parametrize('name', ['a3c', 'a3c_multitask', 'a3c_2col'])
def test_a3c_entropy_bonus_gradient(name):
  x = _inputs(6)
  coeffs, metrics, grads = _loss_and_grads(name, x, entropy_cost=0.3)
  assert coeffs.c_ent == pytest.approx(0.3)
  expected, returns, pi, _ = _by_hand(name, x, coeffs)
  for key in ('h', 'f', 'v', 'v0'):
    np.testing.assert_allclose(grads[key], expected[key], atol=2e-5,
                               err_msg=f'{name} d/d{key}')
  # A3C's returns use the raw rewards.
  np.testing.assert_allclose(
      returns, _returns_loop(x['rewards'], GAMMA * x['env_discounts'],
                             x['v'][T]), rtol=1e-6)
  entropy = -(pi * np.log(pi)).sum(-1)
  np.testing.assert_allclose(metrics['entropy'], entropy.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['entropy_loss'],
                             -0.3 * entropy.sum(0).mean(), rtol=1e-5)
  if name != 'a3c_2col':
    assert float(metrics['kl']) == 0.0
    assert float(metrics['value_l2']) == 0.0
  assert float(metrics['distill_loss']) == 0.0


def test_entropy_gradient_by_finite_differences():
  """The entropy bonus alone (zero advantages) against central differences."""
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(2, 1, A))
  algo = algorithms.ALGORITHMS['a3c']
  coeffs = algorithms.coefficients(algo, 0.5)

  def loss_of(z):
    out = networks.NetOutput(tf.convert_to_tensor(z, tf.float64),
                             tf.zeros((2, 1), tf.float64), None, None)
    loss, _ = losses.distral_loss(
        out, tf.zeros((1, 1), tf.int32), tf.zeros((1, 1), tf.float64),
        tf.zeros((1, 1), tf.float64), coeffs, algo, GAMMA, 0.0, 0.0)
    return loss

  z = tf.Variable(logits)
  with tf.GradientTape() as tape:
    loss = loss_of(z)
  grad = tape.gradient(loss, z).numpy()
  eps = 1e-6
  fd = np.zeros_like(logits)
  for j in range(A):
    d = np.zeros_like(logits)
    d[0, 0, j] = eps
    fd[0, 0, j] = (loss_of(logits + d) - loss_of(logits - d)) / (2 * eps)
  np.testing.assert_allclose(grad, fd, atol=1e-7)
  assert np.abs(grad).max() > 1e-3


def _loss_metrics_and_grads(name, x, **kwargs):
  """distral_loss's per-step policy-gradient weights and value targets, by autodiff."""
  algo = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algo, 0.2, None)
  h, f, v, v0 = (tf.Variable(x[k], dtype=tf.float32) for k in ('h', 'f', 'v', 'v0'))
  with tf.GradientTape() as tape:
    logits = coeffs.alpha * h + f if algo.architecture == 'two_column' else f * 1.0
    output = networks.NetOutput(logits, v * 1.0, h * 1.0 if algo.has_pi0 else None,
                                v0 * 1.0 if algo.has_pi0 else None)
    loss, metrics = losses.distral_loss(
        output, tf.constant(x['actions'], tf.int32),
        tf.constant(x['rewards'], tf.float32),
        tf.constant(x['env_discounts'], tf.float32), coeffs, algo, GAMMA,
        VALUE_COST, VALUE_L2_COST, **kwargs)
  grads = tape.gradient(loss, [f, v])
  return metrics, [g.numpy() for g in grads]


@pytest.mark.parametrize('name', ['a3c_2col', 'kl_ent_2col'])
def test_a_time_limit_cut_keeps_the_next_episode_out(name):
  """An unroll spanning a cut, then an episode of huge rewards: nothing before the cut moves."""
  x = _inputs(11)
  x['env_discounts'][:] = 1.0  # No terminal: the episode is cut after step 2.
  ends = np.zeros((T, B), bool)
  ends[2] = True
  final_values = np.where(ends, 0.7, 0.0).astype(np.float32)
  kwargs = dict(episode_ends=tf.constant(ends), final_values=tf.constant(final_values))
  _, before = _loss_metrics_and_grads(name, x, **kwargs)
  x['rewards'][3:] = 1e4
  x['v'][3:] = -1e4
  _, after = _loss_metrics_and_grads(name, x, **kwargs)
  for g_before, g_after in zip(before, after):  # Gradients w.r.t. f and V.
    np.testing.assert_allclose(g_after[:3], g_before[:3], rtol=1e-4, atol=1e-5)
    assert not np.allclose(g_after[3:T], g_before[3:T])
  # Without the cut the old behaviour leaks the huge rewards back.
  _, leaked = _loss_metrics_and_grads(name, x)
  assert np.abs(leaked[1][:3]).max() > 100 * np.abs(after[1][:3]).max()


def test_cut_bootstraps_from_the_final_observation():
  """Value target at a cut step = r + gamma * V(final observation)."""
  x = _inputs(12)
  x['env_discounts'][:] = 1.0
  ends = np.zeros((T, B), bool)
  ends[T - 1] = True
  final_values = np.full((T, B), 5.0, np.float32)
  _, (_, grad_v) = _loss_metrics_and_grads(
      'a3c', x, episode_ends=tf.constant(ends), final_values=tf.constant(final_values))
  # d(value loss)/dV_t = -value_cost (target - V_t) / B at the last step.
  target = x['rewards'][T - 1] + GAMMA * 5.0
  np.testing.assert_allclose(grad_v[T - 1], -VALUE_COST * (target - x['v'][T - 1]) / B,
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['a3c', 'kl_ent_2col'])
def test_behaviour_equal_to_the_current_policy_is_on_policy(name):
  x = _inputs(13)
  algo = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algo, 0.2, None)
  logits = coeffs.alpha * x['h'] + x['f'] if algo.architecture == 'two_column' else x['f']
  on, grads_on = _loss_metrics_and_grads(name, x)
  same, grads_same = _loss_metrics_and_grads(
      name, x, behaviour_logits=tf.constant(logits[:T], tf.float32))
  for a, b in zip(grads_on, grads_same):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(same['rho']), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(same['behaviour_kl']), 0.0, atol=1e-5)
  # Another behaviour policy changes the gradient, unless the correction is off.
  other = tf.constant(np.random.default_rng(0).normal(size=(T, B, A)), tf.float32)
  _, grads_other = _loss_metrics_and_grads(name, x, behaviour_logits=other)
  assert not np.allclose(grads_other[0], grads_on[0])
  _, grads_none = _loss_metrics_and_grads(name, x, behaviour_logits=other,
                                          off_policy_correction='none')
  np.testing.assert_allclose(grads_none[0], grads_on[0], rtol=1e-4, atol=1e-6)


def test_regularised_rewards():
  coeffs = algorithms.coefficients(algorithms.ALGORITHMS['kl_ent_2col'], 0.2)
  r = tf.constant([[1.0, -1.0]])
  log_pi0 = tf.Variable([[-0.5, -2.0]])
  log_pi = tf.Variable([[-0.1, -3.0]])
  with tf.GradientTape() as tape:
    reg = losses.regularised_rewards(r, log_pi0, log_pi, coeffs)
  # alpha/beta = 0.5 * 0.2 = 0.1; 1/beta = 0.2.
  np.testing.assert_allclose(
      reg, [[1.0 - 0.05 + 0.02, -1.0 - 0.2 + 0.6]], rtol=1e-6)
  assert all(g is None for g in tape.gradient(reg, [log_pi0, log_pi]))


def test_loss_inside_tf_function_matches_eager():
  x = _inputs(9)
  algo = algorithms.ALGORITHMS['kl_ent_2col']
  coeffs = algorithms.coefficients(algo, 0.1)

  def run(h, f, v, v0):
    out = networks.NetOutput(0.5 * h + f, v, h, v0)
    return losses.distral_loss(
        out, tf.constant(x['actions'], tf.int32),
        tf.constant(x['rewards'], tf.float32),
        tf.constant(x['env_discounts'], tf.float32), coeffs, algo, GAMMA,
        VALUE_COST, VALUE_L2_COST)[1]

  args = [tf.constant(x[k], tf.float32) for k in ('h', 'f', 'v', 'v0')]
  eager = run(*args)
  graph = tf.function(run)(*args)
  for key in eager:
    np.testing.assert_allclose(graph[key], eager[key], rtol=1e-5, atol=1e-6)
  parts = sum(float(eager[k]) for k in ('policy_loss', 'entropy_loss',
                                        'value_loss', 'distill_loss',
                                        'value_l2'))
  np.testing.assert_allclose(float(eager['total']), parts, rtol=1e-5)


@pytest.mark.parametrize('name', ['kl_1col', 'kl_ent_1col', 'kl_2col', 'kl_ent_2col'])
def test_expected_regulariser_has_the_same_expected_gradient(name):
  """E_a[grad of the 'expected' form] = E_a[grad of eq. (9) as written].

  One step (T = 1), every action a weighed by pi_i(a|s): the two estimators of
  the policy gradient agree in expectation, exactly, for the task logits and h.
  """
  rng = np.random.default_rng(3)
  batch, num_actions = 3, 4
  algorithm = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algorithm, 0.3)
  f = tf.Variable(rng.normal(size=(2, batch, num_actions)), dtype=tf.float32)
  h = tf.Variable(rng.normal(size=(2, batch, num_actions)), dtype=tf.float32)
  values = tf.constant(rng.normal(size=(2, batch)), tf.float32)
  pi0_values = tf.constant(rng.normal(size=(2, batch)), tf.float32)
  rewards = tf.constant(rng.normal(size=(1, batch)), tf.float32)
  discounts = tf.ones((1, batch))

  def policy_grads(action, form):
    with tf.GradientTape() as tape:
      logits = (coeffs.alpha * h + f if algorithm.architecture == 'two_column'
                else f)
      output = networks.NetOutput(logits, values, h, pi0_values)
      actions = tf.fill((1, batch), action)
      _, metrics = losses.distral_loss(
          output, actions, rewards, discounts, coeffs, algorithm, gamma=0.9,
          value_cost=0.0, value_l2_cost=0.0, regulariser_gradient=form)
      loss = metrics['policy_loss'] + metrics['entropy_loss']
    return [np.zeros((batch, num_actions)) if g is None else g.numpy()[0]
            for g in tape.gradient(loss, [f, h])]

  logits = (coeffs.alpha * h + f if algorithm.architecture == 'two_column' else f)
  pi = _softmax(logits.numpy()[0])  # [B, A]
  expectation = {}
  for form in ('sampled', 'expected'):
    total = [np.zeros((batch, num_actions)), np.zeros((batch, num_actions))]
    for a in range(num_actions):
      grads = policy_grads(a, form)
      for k in range(2):
        # Each batch element b took action a with probability pi[b, a]; the loss
        # averages over the batch, so weigh element b's gradient by pi[b, a].
        total[k] += pi[:, a:a + 1] * grads[k]
    expectation[form] = total
  for k in range(2):
    np.testing.assert_allclose(expectation['expected'][k], expectation['sampled'][k],
                               rtol=1e-4, atol=1e-5)
  # And the expected form really differs per sample (it is another estimator).
  assert not np.allclose(policy_grads(0, 'expected')[0], policy_grads(0, 'sampled')[0])
