"""Soft Q-learning against a prior, and Distral's distillation (EQUATIONS.md eqs. 2-5).

Everything is numpy and batched over tasks: Q tables are ``[n, S, A]``, the
distilled policy pi_0 is ``[S, A]`` and is shared by the n tasks. ``beta`` is the
inverse temperature 1 / (c_KL + c_Ent) and ``alpha = c_KL / (c_KL + c_Ent)``.
With a uniform pi_0 the same code is plain entropy-regularised soft Q-learning.
"""

from __future__ import annotations

import numpy as np


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _prior_logits(log_pi0: np.ndarray, alpha: float) -> np.ndarray:
  """alpha * log pi_0, with pi_0^0 = 1 even where pi_0 = 0."""
  return np.zeros_like(log_pi0) if alpha == 0 else alpha * log_pi0


def soft_value(q: np.ndarray, log_pi0: np.ndarray, alpha: float,
               beta: float) -> np.ndarray:
  """Eq. (2): V(s) = (1/beta) log sum_a pi_0(a|s)^alpha exp(beta Q(s,a)).

  ``q`` and ``log_pi0`` broadcast against each other; the sum is over the last axis.
  """
  return _logsumexp(_prior_logits(log_pi0, alpha) + beta * q) / beta


def boltzmann_policy(q: np.ndarray, log_pi0: np.ndarray, alpha: float,
                     beta: float) -> np.ndarray:
  """Eq. (4): pi(a|s) = pi_0(a|s)^alpha exp(beta (Q(s,a) - V(s))), over the last axis."""
  logits = _prior_logits(log_pi0, alpha) + beta * q
  logits = logits - logits.max(axis=-1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(axis=-1, keepdims=True)


def soft_bellman_backup(q: np.ndarray, rewards: np.ndarray,
                        transitions: np.ndarray, terminal: np.ndarray,
                        log_pi0: np.ndarray, alpha: float, beta: float,
                        gamma: float) -> np.ndarray:
  """Eq. (3) with (2) as the next value, exactly, for a known tabular MDP.

  Args:
    q: ``[S, A]`` current soft Q.
    rewards: ``[S, A]`` expected rewards R(s, a).
    transitions: ``[S, A, S]`` probabilities p(s'|s, a).
    terminal: ``[S]`` True for absorbing states of value 0.
    log_pi0: ``[S, A]`` log prior.
    alpha, beta, gamma: as in EQUATIONS.md.

  Returns:
    ``[S, A]`` the backed-up Q.
  """
  v = np.where(terminal, 0.0, soft_value(q, log_pi0, alpha, beta))
  return rewards + gamma * transitions @ v


def soft_value_iteration(rewards: np.ndarray, transitions: np.ndarray,
                         terminal: np.ndarray, log_pi0: np.ndarray, alpha: float,
                         beta: float, gamma: float, tol: float = 1e-10,
                         max_iters: int = 100_000) -> np.ndarray:
  """Iterates ``soft_bellman_backup`` to its fixed point (a gamma-contraction)."""
  q = np.zeros_like(rewards, dtype=np.float64)
  for _ in range(max_iters):
    q_new = soft_bellman_backup(q, rewards, transitions, terminal, log_pi0,
                                alpha, beta, gamma)
    if np.max(np.abs(q_new - q)) < tol:
      return q_new
    q = q_new
  return q


def soft_q_update(q: np.ndarray, states: np.ndarray, actions: np.ndarray,
                  rewards: np.ndarray, next_states: np.ndarray,
                  terminal: np.ndarray, log_pi0: np.ndarray, alpha: float,
                  beta: float, gamma: float, learning_rate: float) -> np.ndarray:
  """Sample-based eq. (3) with (2) as the bootstrap, one transition per task, in place.

  Q_i(s,a) += lr * (r + gamma * (1 - terminal) * V_i(s') - Q_i(s,a)) for every task i.
  A truncated episode is not terminal: it bootstraps from V_i(s').

  Args:
    q: ``[n, S, A]`` soft Q tables, updated in place.
    states, actions, rewards, next_states, terminal: ``[n]`` one transition per task.
    log_pi0: ``[S, A]`` log of the distilled policy pi_0 (shared prior).
    alpha, beta, gamma, learning_rate: scalars.

  Returns:
    ``[n]`` the temporal-difference errors.
  """
  tasks = np.arange(q.shape[0])
  v_next = soft_value(q[tasks, next_states], log_pi0[next_states], alpha, beta)
  target = rewards + gamma * np.where(terminal, 0.0, v_next)
  td = target - q[tasks, states, actions]
  q[tasks, states, actions] += learning_rate * td
  return td


def distill(visits: np.ndarray, policies: np.ndarray,
            pseudocount: float) -> np.ndarray:
  """Eq. (5)'s maximiser, regularised: the pooled mixture of the task policies.

  pi_0(a|s) = (pseudocount + sum_i d_i(s) pi_i(a|s)) / (A pseudocount + sum_i d_i(s)),
  i.e. the maximum-likelihood fit to the tasks' discounted state-action
  frequencies d_i(s) pi_i(a|s) plus ``pseudocount`` extra visits of every action
  in every state. States no task visits get the uniform policy.

  Args:
    visits: ``[n, S]`` discounted state-visit frequencies d_i(s) of each task.
    policies: ``[n, S, A]`` the task policies pi_i.
    pseudocount: added to the count of every action in every state (> 0, or 0
      only where every state is visited).

  Returns:
    ``[S, A]`` pi_0.
  """
  counts = np.einsum('ns,nsa->sa', visits, policies) + pseudocount
  total = counts.sum(axis=-1, keepdims=True)
  num_actions = policies.shape[-1]
  return np.where(total > 0, counts / np.where(total > 0, total, 1.0),
                  1.0 / num_actions)
