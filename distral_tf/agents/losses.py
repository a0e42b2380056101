"""Losses of the deep agents: eqs. (9)-(10) and appendix B.2.

Everything is time-major: ``[T, B]``. As in A3C, the state-distribution weight
gamma^t of eqs. (9)-(10) is dropped (every visited state counts once); the
returns inside are discounted as usual. Loss terms are summed over time and
averaged over the batch.

* Distral (``not algorithm.entropy_bonus``): the policy gradient of eq. (9)
  uses n-step returns of the regularised reward
  ``R + (alpha/beta) log pi_0(a|s) - (1/beta) log pi_i(a|s)``, with the value
  as baseline; for distilled algorithms the second term of eq. (10),
  ``(alpha/beta) sum_a (pi_i(a|s) - pi_0(a|s)) grad h(a|s)``, is the gradient
  of ``(alpha/beta) sum_a stopgrad(pi_i(a|s)) log pi_0(a|s)``. With the
  two-column policy (eq. 8) autodiff also carries eq. (10)'s first term into h.
  With ``regulariser_gradient='expected'`` the regulariser of the current
  step, ``(alpha/beta) log pi_0(a_t|s_t) - (1/beta) log pi_i(a_t|s_t)``, enters
  the policy gradient through its expectation over ``a_t ~ pi_i`` (the gradient
  of ``sum_a pi_i(a|s_t) stopgrad(reg(a))``) instead of through the sampled
  action's score; later steps' regularisers stay in the returns. Both estimate
  the same gradient (eq. 9); the expected form has lower variance and acts on
  pi_i directly, as A3C's entropy bonus does. ``'sampled'`` is eq. (9) as written.
* The A3C family (``algorithm.entropy_bonus``): raw rewards and the usual A3C
  entropy bonus ``c_Ent * H(pi_i)`` with ``c_Ent = 1/beta`` (alpha = 0).
* Value: ``value_cost * 0.5 * (G - V)^2`` on the same returns G, plus the small
  L2 term of appendix B.2, ``value_l2_cost * (V_i - V_0)^2``, pulling each
  task's value toward the shared column's value wherever there is one.
"""

from __future__ import annotations

import tensorflow as tf

from distral_tf.agents import algorithms
from distral_tf.agents import networks


def n_step_returns(rewards: tf.Tensor, discounts: tf.Tensor,
                   bootstrap: tf.Tensor) -> tf.Tensor:
  """``G_t = r_t + discounts_t * G_{t+1}`` with ``G_T = bootstrap``.

  The discounted sum inside eqs. (9)-(10), truncated after T steps.

  Args:
    rewards: ``[T, B]``.
    discounts: ``[T, B]``, gamma times the environment's discount (0 at a
      terminal step).
    bootstrap: ``[B]``, the value estimate of the state after the last step.

  Returns:
    ``[T, B]`` returns.
  """
  rewards = tf.convert_to_tensor(rewards)
  discounts = tf.cast(discounts, rewards.dtype)
  bootstrap = tf.cast(bootstrap, rewards.dtype)
  num_steps = rewards.shape[0]
  if num_steps is None:
    return tf.scan(lambda g, rd: rd[0] + rd[1] * g, (rewards, discounts),
                   initializer=bootstrap, reverse=True)
  returns = [None] * num_steps
  g = bootstrap
  for t in reversed(range(num_steps)):
    g = rewards[t] + discounts[t] * g
    returns[t] = g
  return tf.stack(returns)


def regularised_rewards(rewards: tf.Tensor, log_pi0_a: tf.Tensor,
                        log_pi_a: tf.Tensor,
                        coeffs: algorithms.Coefficients) -> tf.Tensor:
  """``R + (alpha/beta) log pi_0(a|s) - (1/beta) log pi_i(a|s)``, no gradient.

  The regularised reward R_reg_i of eq. (9).
  """
  reg = (rewards + (coeffs.alpha / coeffs.beta) * log_pi0_a
         - (1.0 / coeffs.beta) * log_pi_a)
  return tf.stop_gradient(reg)


def _log_prob(log_probs: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
  """``log_probs[t, b, actions[t, b]]``."""
  one_hot = tf.one_hot(actions, log_probs.shape[-1], dtype=log_probs.dtype)
  return tf.reduce_sum(log_probs * one_hot, axis=-1)


def _sum_time_mean_batch(x: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.reduce_sum(x, axis=0))


def distral_loss(output: networks.NetOutput, actions: tf.Tensor,
                 rewards: tf.Tensor, discounts: tf.Tensor,
                 coeffs: algorithms.Coefficients,
                 algorithm: algorithms.Algorithm, gamma: float,
                 value_cost: float, value_l2_cost: float,
                 regulariser_gradient: str = 'sampled'
                 ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """The loss whose gradient is eqs. (9)-(10) (see the module docstring).

  Args:
    output: the network's output over T+1 steps; step T only bootstraps.
    actions: ``[T, B]`` int, action t taken at observation t.
    rewards: ``[T, B]``, the environment's rewards.
    discounts: ``[T, B]``, the environment's discounts (0 at a terminal step).
    coeffs: alpha, beta, c_KL, c_Ent.
    algorithm: which of the seven algorithms.
    gamma: the discount factor.
    value_cost: weight of ``0.5 (G - V)^2``.
    value_l2_cost: weight of ``(V_i - V_0)^2``.
    regulariser_gradient: ``'sampled'`` (eq. 9 as written) or ``'expected'``
      (the current step's regulariser by its expectation; see module doc).

  Returns:
    The scalar loss and a dict of scalar metrics: total, policy_loss,
    entropy_loss, value_loss, distill_loss, value_l2, entropy, kl,
    mean_return.
  """
  num_steps = actions.shape[0]
  if num_steps is None:
    num_steps = tf.shape(actions)[0]
  dtype = output.logits.dtype
  rewards = tf.cast(rewards, dtype)
  discounts = gamma * tf.cast(discounts, dtype)

  log_pi = tf.nn.log_softmax(output.logits[:num_steps])
  pi = tf.exp(log_pi)
  log_pi_a = _log_prob(log_pi, actions)
  entropy = -tf.reduce_sum(pi * log_pi, axis=-1)
  values = output.values[:num_steps]
  bootstrap = tf.stop_gradient(output.values[num_steps])

  zeros = tf.zeros_like(rewards)
  kl = zeros
  distill = zeros
  value_l2 = zeros
  if output.pi0_logits is not None:
    log_pi0 = tf.nn.log_softmax(output.pi0_logits[:num_steps])
    kl = tf.reduce_sum(pi * (log_pi - log_pi0), axis=-1)
    if algorithm.distilled:
      # Eq. (10), second term: grad = c_KL sum_a (pi_i - pi_0) grad h.
      distill = -coeffs.c_kl * tf.reduce_sum(
          tf.stop_gradient(pi) * log_pi0, axis=-1)
  if output.pi0_values is not None:
    value_l2 = value_l2_cost * tf.square(values - output.pi0_values[:num_steps])

  if algorithm.entropy_bonus:
    step_rewards = rewards
    entropy_term = -coeffs.c_ent * entropy
  else:
    if output.pi0_logits is not None:
      log_pi0_a = _log_prob(log_pi0, actions)
    else:
      log_pi0_a = zeros
    step_rewards = regularised_rewards(rewards, log_pi0_a, log_pi_a, coeffs)
    entropy_term = zeros

  returns = tf.stop_gradient(n_step_returns(step_rewards, discounts, bootstrap))
  advantages = tf.stop_gradient(returns - values)
  if not algorithm.entropy_bonus and regulariser_gradient == 'expected':
    # reg(a) = (alpha/beta) log pi_0(a|s_t) - (1/beta) log pi_i(a|s_t), for all a.
    reg = -(1.0 / coeffs.beta) * log_pi
    if output.pi0_logits is not None:
      reg += (coeffs.alpha / coeffs.beta) * log_pi0
    reg = tf.stop_gradient(reg)
    advantages -= _log_prob(reg, actions)
    entropy_term = -tf.reduce_sum(pi * reg, axis=-1)
  elif regulariser_gradient not in ('sampled', 'expected'):
    raise ValueError(f'regulariser_gradient must be sampled or expected, got '
                     f'{regulariser_gradient!r}')
  policy_loss = _sum_time_mean_batch(-log_pi_a * advantages)
  entropy_loss = _sum_time_mean_batch(entropy_term)
  value_loss = _sum_time_mean_batch(value_cost * 0.5 * tf.square(
      returns - values))
  distill_loss = _sum_time_mean_batch(distill)
  value_l2_loss = _sum_time_mean_batch(value_l2)
  total = policy_loss + entropy_loss + value_loss + distill_loss + value_l2_loss
  metrics = dict(
      total=total,
      policy_loss=policy_loss,
      entropy_loss=entropy_loss,
      value_loss=value_loss,
      distill_loss=distill_loss,
      value_l2=value_l2_loss,
      entropy=tf.reduce_mean(entropy),
      kl=tf.reduce_mean(kl),
      mean_return=tf.reduce_mean(returns),
  )
  return total, metrics
