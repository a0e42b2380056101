"""Tests of soft Q-learning and distillation (distral_tf/tabular/soft_q.py, eqs. 2-5)."""

import numpy as np
import pytest

from distral_tf.tabular import soft_q


def one_state_mdp(rewards, log_pi0):
  """One state, actions loop back with rewards ``rewards``."""
  a = len(rewards)
  return (np.array([rewards], float), np.ones((1, a, 1)), np.array([False]),
          np.array([log_pi0], float))


@pytest.mark.parametrize('alpha', [1.0, 0.5, 0.0])
def test_soft_value_iteration_matches_closed_form(alpha):
  # Q(a) = r_a + gamma V and V = (1/beta) log sum_a pi0^alpha exp(beta Q(a)) give
  # V = (1/beta) log sum_a pi0(a)^alpha exp(beta r_a) / (1 - gamma).
  beta, gamma = 2.0, 0.9
  r = np.array([1.0, 0.0, -0.5])
  pi0 = np.array([0.2, 0.5, 0.3])
  rewards, p, terminal, log_pi0 = one_state_mdp(r, np.log(pi0))
  q = soft_q.soft_value_iteration(rewards, p, terminal, log_pi0, alpha, beta, gamma)
  v = np.log(np.sum(pi0**alpha * np.exp(beta * r))) / beta / (1 - gamma)
  np.testing.assert_allclose(q[0], r + gamma * v, rtol=1e-8)
  np.testing.assert_allclose(soft_q.soft_value(q, log_pi0, alpha, beta), [v], rtol=1e-8)
  # It is a fixed point of the backup (eq. 3 with eq. 2).
  backup = soft_q.soft_bellman_backup(q, rewards, p, terminal, log_pi0, alpha, beta,
                                      gamma)
  np.testing.assert_allclose(backup, q, rtol=1e-8)


def test_soft_value_tends_to_max_and_to_prior_average():
  q = np.array([[1.0, 2.0, 0.5]])
  log_pi0 = np.log(np.array([[0.6, 0.1, 0.3]]))
  # Large beta: the hard max; small beta with alpha = 1: the prior's average of Q.
  assert soft_q.soft_value(q, log_pi0, 1.0, 1e4)[0] == pytest.approx(2.0, abs=1e-3)
  assert soft_q.soft_value(q, log_pi0, 1.0, 1e-6)[0] == pytest.approx(
      0.6 * 1 + 0.1 * 2 + 0.3 * 0.5, abs=1e-4)


@pytest.mark.parametrize('alpha', [1.0, 0.3])
def test_boltzmann_policy_normalises_and_is_eq4(alpha):
  rng = np.random.default_rng(0)
  q = rng.normal(size=(3, 7, 5)) * 10
  pi0 = rng.dirichlet(np.ones(5), size=7)
  beta = 3.0
  pi = soft_q.boltzmann_policy(q, np.log(pi0)[None], alpha, beta)
  np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-12)
  v = soft_q.soft_value(q, np.log(pi0)[None], alpha, beta)
  np.testing.assert_allclose(pi, pi0[None]**alpha * np.exp(beta * (q - v[..., None])),
                             rtol=1e-9)
  # With Q constant the policy is pi0^alpha normalised.
  flat = soft_q.boltzmann_policy(np.zeros((7, 5)), np.log(pi0), alpha, beta)
  expected = pi0**alpha / (pi0**alpha).sum(-1, keepdims=True)
  np.testing.assert_allclose(flat, expected, rtol=1e-12)


def random_deterministic_mdp(rng, states=6, actions=3):
  nxt = rng.integers(states, size=(states, actions))
  p = np.zeros((states, actions, states))
  p[np.arange(states)[:, None], np.arange(actions)[None], nxt] = 1.0
  terminal = np.zeros(states, bool)
  terminal[-1] = True
  return nxt, p, terminal


@pytest.mark.parametrize('alpha', [1.0, 0.5])
def test_sampled_updates_converge_to_soft_value_iteration(alpha):
  # Sample-based eq. (3) with lr = 1 on a deterministic MDP is the exact backup,
  # one (s, a) at a time; two tasks with their own rewards share the prior.
  rng = np.random.default_rng(1)
  nxt, p, terminal = random_deterministic_mdp(rng)
  s_count, a_count = nxt.shape
  rewards = rng.normal(size=(2, s_count, a_count))
  log_pi0 = np.log(rng.dirichlet(np.ones(a_count), size=s_count))
  beta, gamma = 1.5, 0.8
  q = np.zeros((2, s_count, a_count))
  for _ in range(120):
    for s in range(s_count - 1):
      for a in range(a_count):
        states = np.array([s, s])
        actions = np.array([a, a])
        soft_q.soft_q_update(q, states, actions, rewards[:, s, a],
                             nxt[[s, s], [a, a]], terminal[nxt[[s, s], [a, a]]],
                             log_pi0, alpha, beta, gamma, learning_rate=1.0)
  for task in range(2):
    exact = soft_q.soft_value_iteration(rewards[task], p, terminal, log_pi0, alpha,
                                        beta, gamma)
    np.testing.assert_allclose(q[task, :-1], exact[:-1], atol=1e-8)


def test_sampled_update_moves_by_learning_rate_times_td_error():
  q = np.zeros((1, 2, 2))
  q[0, 1] = [1.0, 3.0]
  log_pi0 = np.log(np.full((2, 2), 0.5))
  td = soft_q.soft_q_update(q, np.array([0]), np.array([1]), np.array([0.5]),
                            np.array([1]), np.array([False]), log_pi0, 1.0, 2.0,
                            0.9, learning_rate=0.25)
  v1 = np.log(0.5 * np.exp(2.0) + 0.5 * np.exp(6.0)) / 2.0
  assert td[0] == pytest.approx(0.5 + 0.9 * v1)
  assert q[0, 0, 1] == pytest.approx(0.25 * (0.5 + 0.9 * v1))
  # A terminal transition does not bootstrap.
  td = soft_q.soft_q_update(q, np.array([0]), np.array([0]), np.array([2.0]),
                            np.array([1]), np.array([True]), log_pi0, 1.0, 2.0, 0.9,
                            learning_rate=1.0)
  assert q[0, 0, 0] == pytest.approx(2.0)


def test_distill_returns_the_pseudocounted_mixture():
  visits = np.array([[3.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  pis = np.array([[[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]],
                  [[0.0, 1.0], [0.2, 0.8], [0.5, 0.5]]])
  pi0 = soft_q.distill(visits, pis, pseudocount=1.0)
  expected = np.array([
      [(1 + 1.5) / 6, (1 + 1.5 + 1) / 6],  # Visits 3 and 1, plus 2 pseudocounts.
      [0.5, 0.5],                          # Unvisited: uniform.
      [(1 + 1) / 3, 1 / 3]])
  np.testing.assert_allclose(pi0, expected)
  # Without pseudocounts one task's policy is returned where only it visits.
  np.testing.assert_allclose(soft_q.distill(visits, pis, 0.0)[2], [1.0, 0.0])
  np.testing.assert_allclose(soft_q.distill(visits, pis, 0.0)[1], [0.5, 0.5])


def test_distill_maximises_the_regularised_likelihood_of_eq5():
  rng = np.random.default_rng(2)
  visits = rng.exponential(size=(4, 5))
  pis = rng.dirichlet(np.ones(3), size=(4, 5))
  pc = 1.0

  def objective(pi0):
    counts = np.einsum('ns,nsa->sa', visits, pis) + pc
    return np.sum(counts * np.log(pi0))

  best = soft_q.distill(visits, pis, pc)
  np.testing.assert_allclose(best.sum(-1), 1.0)
  for _ in range(50):
    other = rng.dirichlet(np.ones(3) * 20, size=5) * 0.3 + best * 0.7
    assert objective(other) < objective(best)


def test_alpha_zero_ignores_the_prior_even_where_it_is_zero():
  q = np.array([[0.3, -1.0, 2.0]])
  with np.errstate(divide='ignore'):
    log_pi0 = np.log(np.array([[0.0, 0.5, 0.5]]))
  pi = soft_q.boltzmann_policy(q, log_pi0, alpha=0.0, beta=1.0)
  np.testing.assert_allclose(pi, np.exp(q) / np.exp(q).sum())
  assert soft_q.soft_value(q, log_pi0, 0.0, 1.0)[0] == pytest.approx(
      np.log(np.exp(q).sum()))
  # With alpha > 0 an action the prior rules out gets no probability.
  assert soft_q.boltzmann_policy(q, log_pi0, alpha=0.5, beta=1.0)[0, 0] == 0.0
