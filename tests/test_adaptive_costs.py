"""Adaptive costs (docs/agents.md, "Adaptive costs"): the dual step and its two
rates, the annealed bound, the per-task losses and the uniform offset (eq. 9''),
checkpoints, the flags and a short real run."""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from distral_tf.agents import adaptive_costs
from distral_tf.agents import algorithms
from distral_tf.agents import config as config_lib
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import losses
from distral_tf.agents import networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TASKS, NUM_ACTIONS, DIM = 2, 5, 4
T, B = 6, 3  # B environments per task.
LOW, HIGH = adaptive_costs.COST_RANGE
RISE = adaptive_costs.COST_RISE_RATIO


def _learner(name='kl_ent_2col', entropy_cost=0.05, adaptive=True, network=None,
             target_entropy=0.5, rate=0.1, **config):
  algo = algorithms.ALGORITHMS[name]
  coeffs = algorithms.coefficients(algo, entropy_cost, config.pop('alpha', None))
  if network is None:
    network = networks.DistralNetwork(algo, NUM_TASKS, NUM_ACTIONS, 'vector',
                                      coeffs.alpha, hidden_size=16)
    network.build((DIM,), tf.float32)
  bound = config.pop('cost_bound', adaptive_costs.regulariser_bound(
      coeffs.alpha, target_entropy, NUM_ACTIONS))
  uniform = adaptive_costs.regulariser_bound(coeffs.alpha, 1.0, NUM_ACTIONS)
  return learner_lib.Learner(network, algo, coeffs, learner_lib.LearnerConfig(
      learning_rate=1e-3, total_steps=10**6, adaptive_costs=adaptive, cost_bound=bound,
      uniform_bound=uniform, cost_learning_rate=rate, **config))


def _batch(network, sizes=(B, B), seed=0):
  rng = np.random.default_rng(seed)
  b = sum(sizes)
  first = rng.random((T + 1, b)) < 0.15
  discounts = np.ones((T, b), np.float32)
  discounts[first[1:]] = 0.0
  return learner_lib.Unroll(
      observations=tf.constant(rng.normal(size=(T + 1, b, DIM)), tf.float32),
      first=tf.constant(first),
      actions=tf.constant(rng.integers(0, NUM_ACTIONS, (T, b)), tf.int32),
      rewards=tf.constant(rng.normal(size=(T, b)), tf.float32),
      discounts=tf.constant(discounts),
      initial_state=network.initial_state(b),
      behaviour_logits=tf.constant(rng.normal(size=(T, b, NUM_ACTIONS)), tf.float32))


# -- the dual step (D) -------------------------------------------------------------

def test_dual_step_is_its_closed_form_and_clips_at_the_range():
  costs = np.array([0.01, 0.05, 0.5, 1.02e-5, 0.9], np.float32)
  regs = np.array([-0.7, 0.1, 0.3, -1.0, 2.0], np.float32)
  bound, rate = -0.4, 0.1
  got = adaptive_costs.dual_step(tf.constant(costs), tf.constant(regs), bound,
                                 rate).numpy()
  log_new = np.log(costs.astype(np.float64)) + rate * (regs - bound)
  # Inside the range: log tau + eta (C - eps), exactly up to float32 rounding.
  np.testing.assert_allclose(np.log(got[:3]), log_new[:3], rtol=0, atol=2e-6)
  assert got[0] < costs[0] and got[1] > costs[1] and got[2] > costs[2]
  # Outside it: clipped to its bounds.
  assert log_new[3] < math.log(LOW) and got[3] == pytest.approx(LOW, rel=1e-6)
  assert log_new[4] > math.log(HIGH) and got[4] == pytest.approx(HIGH, rel=1e-6)


def test_dual_step_rises_at_its_own_rate_and_falls_at_the_full_one():
  costs = np.array([0.01, 0.01, 0.2, 0.2], np.float32)
  regs = np.array([-0.9, -0.1, 0.5, -0.45], np.float32)
  bound, rate, rise_rate = -0.4, 0.1, 0.01
  got = adaptive_costs.dual_step(tf.constant(costs), tf.constant(regs), bound, rate,
                                 rise_rate=rise_rate).numpy()
  violation = regs.astype(np.float64) - bound
  eta = np.where(violation > 0, rise_rate, rate)
  np.testing.assert_allclose(np.log(got), np.log(costs.astype(np.float64)) + eta * violation,
                             rtol=0, atol=2e-6)
  # The same violation moves a cost ten times less up than down.
  up = adaptive_costs.dual_step(tf.constant([0.1]), tf.constant([-0.3]), -0.4, rate,
                                rise_rate=rise_rate).numpy()[0]
  down = adaptive_costs.dual_step(tf.constant([0.1]), tf.constant([-0.5]), -0.4, rate,
                                  rise_rate=rise_rate).numpy()[0]
  assert math.log(up / 0.1) == pytest.approx(-0.1 * math.log(down / 0.1), rel=1e-4)


def test_regulariser_bound_is_a_fraction_of_the_largest_entropy():
  assert adaptive_costs.regulariser_bound(0.5, 0.2, 5) == pytest.approx(
      -0.5 * 0.2 * math.log(5))
  assert adaptive_costs.regulariser_bound(0.0, 0.3, 4) == pytest.approx(-0.3 * math.log(4))
  # kappa = 1: the regulariser alpha KL - (1 - alpha) H of a uniform pi_i (and pi_0).
  uniform = np.full(5, 0.2)
  assert adaptive_costs.regulariser_bound(0.5, 1.0, 5) == pytest.approx(
      -0.5 * -np.sum(uniform * np.log(uniform)))


def test_annealed_bound_is_linear_from_the_uniform_bound_to_the_target():
  uniform, target, k = -0.8, -0.2, 1000
  for steps, want in ((0, -0.8), (250, -0.65), (500, -0.5), (1000, -0.2), (5000, -0.2)):
    got = float(adaptive_costs.annealed_bound(tf.constant(steps, tf.int64), uniform,
                                              target, k))
    assert got == pytest.approx(want, abs=1e-6), steps
  # No anneal: the target at once.
  assert float(adaptive_costs.annealed_bound(tf.constant(0, tf.int64), uniform, target,
                                             0)) == pytest.approx(target)


def test_one_learner_step_moves_each_present_task_by_the_closed_form():
  learner = _learner(entropy_cost=0.05, target_entropy=0.5, rate=0.1)
  learner.entropy_costs.assign([0.05, 0.02])
  before = learner.entropy_costs.numpy().copy()
  metrics = learner.update((B, B), _batch(learner.network))
  after = learner.entropy_costs.numpy()
  bound = adaptive_costs.regulariser_bound(0.5, 0.5, NUM_ACTIONS)
  assert float(metrics['cost_bound']) == pytest.approx(bound)
  for task in range(NUM_TASKS):
    # The loss took the cost of the moment.
    assert float(metrics[f'entropy_cost/{task}']) == before[task]
    reg = 0.5 * float(metrics[f'kl/{task}']) - 0.5 * float(metrics[f'entropy/{task}'])
    expected = math.log(before[task]) + 0.1 * (reg - bound)
    assert math.log(after[task]) == pytest.approx(expected, abs=2e-6)
  # Near-uniform policies (fresh network): C - eps < 0, so the costs fall.
  assert np.all(after < before)
  # A task absent from the step keeps its cost, bit for bit.
  learner.update((0, B), _batch(learner.network, sizes=(0, B), seed=1))
  assert learner.entropy_costs.numpy()[0] == after[0]
  assert learner.entropy_costs.numpy()[1] != after[1]


def _step_and_check(learner, step, bound):
  """One update; asserts the bound it took and (D) with the rate of each sign."""
  before = learner.entropy_costs.numpy().copy()
  metrics = learner.update((B, B), _batch(learner.network, seed=step))
  assert float(metrics['cost_bound']) == pytest.approx(bound, abs=1e-6), step
  after = learner.entropy_costs.numpy()
  violations = []
  for task in range(NUM_TASKS):
    reg = 0.5 * float(metrics[f'kl/{task}']) - 0.5 * float(metrics[f'entropy/{task}'])
    eta = 0.1 * RISE if reg > bound else 0.1
    assert math.log(after[task]) == pytest.approx(
        math.log(before[task]) + eta * (reg - bound), abs=2e-6), (step, task)
    violations.append(reg - bound)
  return before, after, np.array(violations)


def test_learner_steps_on_the_annealed_bound():
  """With ``cost_anneal_steps`` K the step takes the bound of eq. (A) at the
  agent steps done (T x 2B a step), the target's once past K."""
  uniform = adaptive_costs.regulariser_bound(0.5, 1.0, NUM_ACTIONS)
  target = adaptive_costs.regulariser_bound(0.5, 0.25, NUM_ACTIONS)
  learner = _learner(target_entropy=0.25, cost_anneal_steps=4 * T * 2 * B)
  for step in range(1, 7):
    _step_and_check(learner, step, uniform + min(1.0, step / 4) * (target - uniform))


def test_near_uniform_policies_raise_their_costs_slowly_at_the_start():
  """At the start the bound is the uniform policy's regulariser, the least any
  policy has (``-(1 - alpha) H >= -(1 - alpha) log A``, KL >= 0): every cost
  rises, at ``COST_RISE_RATIO`` of the rate."""
  uniform = adaptive_costs.regulariser_bound(0.5, 1.0, NUM_ACTIONS)
  target = adaptive_costs.regulariser_bound(0.5, 0.25, NUM_ACTIONS)
  k = 10**6 * T * 2 * B
  learner = _learner(target_entropy=0.25, cost_anneal_steps=k)
  for v in learner.network.trainable_variables:  # Policies well away from uniform.
    v.assign(4.0 * v)
  before, after, violations = _step_and_check(learner, 1, uniform + (target - uniform) / 1e6)
  assert np.all(violations > 0.05) and np.all(after > before)
  np.testing.assert_allclose(np.log(after / before), 0.1 * RISE * violations, rtol=1e-3)


def test_compiled_step_clips_at_both_bounds():
  learner = _learner(rate=1e3)
  learner.train_step((B, B), _batch(learner.network))
  np.testing.assert_allclose(learner.entropy_costs.numpy(), [LOW, LOW], rtol=1e-5)
  # A bound no policy meets (C - eps > 0 everywhere): the costs rise to the top.
  learner = _learner(rate=1e3, cost_bound=-100.0)
  learner.train_step((B, B), _batch(learner.network))
  np.testing.assert_allclose(learner.entropy_costs.numpy(), [HIGH, HIGH], rtol=1e-5)


# -- the losses with per-task costs (eqs. 9'-10') -------------------------------------

def _output(algo, alpha, rng, b):
  h = tf.Variable(rng.normal(size=(T + 1, b, NUM_ACTIONS)), dtype=tf.float32)
  f = tf.Variable(rng.normal(size=(T + 1, b, NUM_ACTIONS)), dtype=tf.float32)
  v = tf.Variable(rng.normal(size=(T + 1, b)), dtype=tf.float32)
  v0 = tf.Variable(rng.normal(size=(T + 1, b)), dtype=tf.float32)
  return (h, f, v, v0), lambda cols=slice(None): networks.NetOutput(
      (alpha * h + f if algo.architecture == 'two_column' else f * 1.0)[:, cols],
      v[:, cols] * 1.0, h[:, cols] * 1.0, v0[:, cols] * 1.0)


@pytest.mark.parametrize('name', ['kl_ent_1col', 'kl_ent_2col'])
@pytest.mark.parametrize('gradient', ['expected', 'sampled'])
def test_per_task_costs_equal_the_fixed_cost_loss_of_each_task(name, gradient):
  """Columns 0..2 of task 0 at tau 0.05, 3..6 of task 1 at tau 0.004: the loss is
  the sum of each task's fixed-cost loss on its own columns, and so are its
  gradients in h, f, V and V_0."""
  algo = algorithms.ALGORITHMS[name]
  rng = np.random.default_rng(3)
  sizes, taus = (3, 4), (0.05, 0.004)
  b = sum(sizes)
  variables, output = _output(algo, 0.5, rng, b)
  actions = tf.constant(rng.integers(0, NUM_ACTIONS, (T, b)), tf.int32)
  rewards = tf.constant(rng.normal(size=(T, b)), tf.float32)
  discounts = tf.constant((rng.random((T, b)) > 0.2).astype(np.float32))
  behaviour = tf.constant(rng.normal(size=(T, b, NUM_ACTIONS)), tf.float32)
  weights = np.concatenate([np.full(n, 1.0 / n) for n in sizes]).astype(np.float32)
  costs = np.concatenate([np.full(n, tau) for n, tau in zip(sizes, taus)]).astype(
      np.float32)
  common = dict(algorithm=algo, gamma=0.9, value_cost=0.5, value_l2_cost=0.01,
                regulariser_gradient=gradient, return_columns=True)

  with tf.GradientTape() as tape:
    total, _, columns = losses.distral_loss(
        output(), actions, rewards, discounts,
        algorithms.coefficients(algo, 0.01), behaviour_logits=behaviour,
        column_weights=weights, column_costs=costs, **common)
  grads = tape.gradient(total, variables)

  with tf.GradientTape() as tape:
    expected_total, expected_columns, offset = 0.0, [], 0
    for n, tau in zip(sizes, taus):
      cols = slice(offset, offset + n)
      task_total, _, task_columns = losses.distral_loss(
          output(cols), actions[:, cols], rewards[:, cols], discounts[:, cols],
          algorithms.coefficients(algo, tau), behaviour_logits=behaviour[:, cols],
          **common)
      expected_total += task_total
      expected_columns.append(task_columns)
      offset += n
  expected_grads = tape.gradient(expected_total, variables)

  np.testing.assert_allclose(total.numpy(), expected_total.numpy(), rtol=1e-5)
  for key, value in columns.items():
    expected = np.concatenate([c[key].numpy() for c in expected_columns])
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6,
                               err_msg=key)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
  # The costs matter: the same batch at one fixed cost gives another loss.
  fixed, _, _ = losses.distral_loss(
      output(), actions, rewards, discounts, algorithms.coefficients(algo, 0.05),
      behaviour_logits=behaviour, column_weights=weights, **common)
  assert abs(float(fixed) - float(total)) > 1e-3


@pytest.mark.parametrize('gradient', ['expected', 'sampled'])
def test_uniform_offset_against_its_closed_form(gradient):
  """Eq. (9''): the offset b adds ``tau_b b`` to every step's regulariser. The
  sampled estimator sees it only in the rewards: the loss is that of rewards
  raised by ``tau_b b``, in values and gradients. The expected one also
  removes it from the current step's score term, whose expectation it is not
  part of (``sum_a pi(a) tau b`` has no gradient): policy loss
  ``+ sum_t rho_t tau b log pi(a_t)``, entropy loss ``- T tau b``, per column."""
  algo = algorithms.ALGORITHMS['kl_ent_2col']
  rng = np.random.default_rng(5)
  b = 6
  variables, output = _output(algo, 0.5, rng, b)
  actions = tf.constant(rng.integers(0, NUM_ACTIONS, (T, b)), tf.int32)
  rewards = tf.constant(rng.normal(size=(T, b)), tf.float32)
  discounts = tf.constant((rng.random((T, b)) > 0.2).astype(np.float32))
  behaviour = tf.constant(rng.normal(size=(T, b, NUM_ACTIONS)), tf.float32)
  costs = np.float32([0.05, 0.05, 0.05, 0.004, 0.004, 0.004])
  weights = np.full(b, 1.0 / 3, np.float32)
  offset = adaptive_costs.regulariser_bound(0.5, 1.0, NUM_ACTIONS)
  common = dict(algorithm=algo, gamma=0.9, value_cost=0.5, value_l2_cost=0.01,
                regulariser_gradient=gradient, behaviour_logits=behaviour,
                column_weights=weights, column_costs=costs, return_columns=True)
  coeffs = algorithms.coefficients(algo, 0.01)

  with tf.GradientTape() as tape:
    total, _, columns = losses.distral_loss(output(), actions, rewards, discounts, coeffs,
                                            regulariser_offset=offset, **common)
  grads = tape.gradient(total, variables)
  with tf.GradientTape() as tape:
    shifted_total, _, shifted = losses.distral_loss(
        output(), actions, rewards + costs * offset, discounts, coeffs, **common)
    extra = {k: tf.zeros(b) for k in columns}
    if gradient == 'expected':
      out = output()
      log_pi_a = -tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=actions, logits=out.logits[:T])
      log_mu_a = -tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=actions, logits=behaviour)
      rho = tf.minimum(1.0, tf.exp(tf.stop_gradient(log_pi_a - log_mu_a)))
      extra['policy_loss'] = tf.reduce_sum(rho * costs * offset * log_pi_a, axis=0)
      extra['entropy_loss'] = -T * costs * offset * tf.ones(b)
    expected_total = shifted_total + sum(tf.reduce_sum(weights * extra[k])
                                         for k in losses.LOSS_TERMS)
  expected_grads = tape.gradient(expected_total, variables)

  np.testing.assert_allclose(total.numpy(), expected_total.numpy(), rtol=1e-5, atol=1e-6)
  for key, value in columns.items():
    np.testing.assert_allclose(value.numpy(), (shifted[key] + extra[key]).numpy(),
                               rtol=1e-5, atol=1e-6, err_msg=key)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
  # The offset matters: without it the loss is another.
  plain, _, _ = losses.distral_loss(output(), actions, rewards, discounts, coeffs, **common)
  assert abs(float(plain) - float(total)) > 1e-3


def test_learner_loss_takes_each_task_its_own_cost_and_the_uniform_offset():
  """The adaptive learner's per-task metrics are those of fixed-cost learners at
  each task's cost, on the same network and on rewards raised by ``tau_t b``
  (b the uniform policy's regulariser; eq. 9'') - with the sampled estimator,
  where the offset is a reward like any other."""
  adaptive = _learner('kl_ent_1col', regulariser_gradient='sampled')
  adaptive.entropy_costs.assign([0.05, 0.004])
  b = adaptive_costs.regulariser_bound(0.5, 1.0, NUM_ACTIONS)
  batch = _batch(adaptive.network)
  total, metrics = adaptive.loss((B, B), batch)
  expected_total = 0.0
  for task, tau in enumerate((0.05, 0.004)):
    fixed = _learner('kl_ent_1col', entropy_cost=tau, adaptive=False,
                     network=adaptive.network, regulariser_gradient='sampled')
    shifted = batch._replace(rewards=batch.rewards + tau * b)
    _, fixed_metrics = fixed.loss((B, B), shifted)
    for key in losses.LOSS_TERMS + ('entropy', 'kl', 'mean_return', 'value_error'):
      assert float(metrics[f'{key}/{task}']) == pytest.approx(
          float(fixed_metrics[f'{key}/{task}']), rel=1e-5, abs=1e-6), key
      if key in losses.LOSS_TERMS:
        expected_total += float(fixed_metrics[f'{key}/{task}'])
    assert float(metrics[f'entropy_cost/{task}']) == pytest.approx(tau)
  assert float(total) == pytest.approx(expected_total, rel=1e-5)


def test_fixed_costs_keep_the_learner_as_it_was():
  learner = _learner(adaptive=False)
  assert learner.entropy_costs is None
  assert set(learner.checkpoint_items()) == {
      'network', 'optimizer', 'learning_rate', 'steps_done'}
  metrics = learner.update((B, B), _batch(learner.network))
  assert not any(k.startswith('entropy_cost') for k in metrics)
  assert learner.cost_summary(['a', 'b']) == {}


def test_the_a3c_family_has_no_costs_to_adapt():
  with pytest.raises(ValueError, match='Distral'):
    _learner('a3c_2col', alpha=None)


# -- checkpoints ---------------------------------------------------------------------

def test_costs_are_checkpointed_and_restored(tmp_path):
  learner = _learner()
  for seed in range(3):
    learner.train_step((B, B), _batch(learner.network, seed=seed))
  saved = learner.entropy_costs.numpy().copy()
  assert np.all(saved < 0.05)
  path = tf.train.Checkpoint(**learner.checkpoint_items()).write(str(tmp_path / 'ckpt'))
  fresh = _learner()
  np.testing.assert_array_equal(fresh.entropy_costs.numpy(), np.float32([0.05, 0.05]))
  tf.train.Checkpoint(**fresh.checkpoint_items()).read(path).assert_consumed()
  np.testing.assert_array_equal(fresh.entropy_costs.numpy(), saved)
  assert fresh.cost_summary(['a', 'b']) == {
      'entropy_costs': {'a': float(saved[0]), 'b': float(saved[1])}}
  # The restored costs are the ones the next step takes.
  metrics = fresh.train_step((B, B), _batch(fresh.network, seed=9))
  assert float(metrics['entropy_cost/1']) == saved[1]


# -- flags and a real run ------------------------------------------------------------

def _launch(tmp_path, *args, timeout=120):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'distral_tf.launch', *args,
                         f'--logdir={tmp_path / "run"}'], capture_output=True, text=True,
                        cwd=tmp_path, env=env, timeout=timeout)


def test_the_bound_is_the_level_sets_unless_given():
  from distral_tf import cli  # pylint: disable=g-import-not-at-top
  fv = cli.FLAGS
  kappa = {}
  for level_set, extra in (('two_rooms', ['--adaptive_costs']),
                           ('minigrid', ['--adaptive_costs']),
                           ('two_rooms', ['--adaptive_costs', '--target_entropy=0.3']),
                           ('two_rooms', [])):
    fv.unparse_flags()
    fv(['distral_tf', f'--level_set={level_set}', '--algorithm=kl_ent_2col', *extra])
    kappa[(level_set, *extra)] = config_lib.from_flags(fv)[0].target_entropy
  fv.unparse_flags()
  assert kappa['two_rooms', '--adaptive_costs'] == config_lib.ADAPTIVE_COSTS_DEFAULTS[
      'two_rooms']['target_entropy'] == 0.6
  assert kappa['minigrid', '--adaptive_costs'] == config_lib.DEFAULTS.target_entropy == 0.25
  assert kappa['two_rooms', '--adaptive_costs', '--target_entropy=0.3'] == 0.3  # The flag wins.
  # Without the option the bound means nothing and keeps the common value, so a
  # fixed-cost run's config is that of runs made before the level set had one.
  assert kappa[('two_rooms',)] == 0.25


@pytest.mark.parametrize('args, expected', [
    (['--algorithm=a3c_2col', '--adaptive_costs'], ['--adaptive_costs', 'a3c_2col has none']),
    (['--algorithm=kl_2col', '--adaptive_costs'], ['alpha < 1', 'kl_2col']),
    (['--algorithm=kl_ent_2col', '--adaptive_costs', '--target_entropy=1'],
     ['--target_entropy must be in (0, 1)']),
    (['--algorithm=kl_ent_2col', '--adaptive_costs', '--cost_learning_rate=0'],
     ['--cost_learning_rate must be > 0']),
    (['--algorithm=kl_ent_2col', '--adaptive_costs', '--entropy_cost=3'],
     ['--entropy_cost (the initial cost with --adaptive_costs) must be in']),
])
def test_bad_adaptive_cost_flags_exit_2_with_one_line(tmp_path, args, expected):
  proc = _launch(tmp_path, *args)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
  for word in expected:
    assert word in lines[0]


def test_real_run_lowers_a_high_initial_cost(tmp_path):
  """At 0.05 the policies stay near uniform over so short a run: once the
  annealed bound has come down past them the dual step lowers every task's cost
  (TensorBoard and summary.json); the bound logged goes from the uniform
  policy's toward the target's."""
  proc = _launch(tmp_path, '--level_set=two_rooms', '--algorithm=kl_ent_2col',
                 '--adaptive_costs', '--entropy_cost=0.05', '--num_tasks=2',
                 '--workers_per_task=4', '--env_steps_per_task=2000',
                 '--log_interval_secs=0.5', timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  costs = summary['entropy_costs']
  assert set(costs) == set(summary['task']['tasks']) and len(costs) == 2
  assert all(LOW <= c < 0.05 for c in costs.values())
  logged = {}
  for path in glob.glob(str(tmp_path / 'run' / 'tensorboard' / '*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(('entropy_cost/', 'cost_bound/')):
          logged.setdefault(value.tag, []).append(
              (event.step, float(tf.make_ndarray(value.tensor))))
  bounds = {tag: v for tag, v in logged.items() if tag.startswith('cost_bound/')}
  logged = {tag: v for tag, v in logged.items() if tag.startswith('entropy_cost/')}
  assert set(logged) == {f'entropy_cost/{task}' for task in costs}
  assert set(bounds) == {f'cost_bound/{task}' for task in costs}
  uniform = adaptive_costs.regulariser_bound(0.5, 1.0, 5)
  target = adaptive_costs.regulariser_bound(
      0.5, config_lib.ADAPTIVE_COSTS_DEFAULTS['two_rooms']['target_entropy'], 5)
  for series in bounds.values():
    values = [v for _, v in sorted(series)]
    assert all(uniform - 1e-6 <= v <= target + 1e-6 for v in values), values
    assert values == sorted(values)  # Rising from the uniform policy's toward kappa's.
  for series in logged.values():
    values = [v for _, v in sorted(series)]
    # The first summary may come before the first dual step (0.05 as a
    # float32), or, on a fast machine, be the run's only one, after many.
    assert values[0] <= np.float32(0.05) and values[-1] <= values[0]
    assert values[-1] < np.float32(0.05)
