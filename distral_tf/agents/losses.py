"""Losses of the deep agents: eqs. (9)-(10) and appendix B.2.

Everything is time-major: ``[T, B]``. As in A3C, the state-distribution weight
gamma^t of eqs. (9)-(10) is dropped (every visited state counts once); the
returns inside are discounted as usual. Loss terms are summed over time and
averaged over the batch (or weighted per column: ``column_weights``).

* Distral (``not algorithm.entropy_bonus``): the policy gradient of eq. (9)
  uses returns of the regularised reward
  ``R + (alpha/beta) log pi_0(a|s) - (1/beta) log pi_i(a|s)`` (under the
  learner's current pi_i and pi_0), with the value as baseline; for
  distilled algorithms the second term of eq. (10),
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
* Returns: V-trace targets (``vtrace.py``) of those rewards, which correct
  for the lag between the actors' policy (``behaviour_logits``) and the
  learner's; with ``off_policy_correction='none'`` or on-policy data they are
  A3C's n-step returns. They stop at every episode end: a terminal step
  bootstraps from nothing, a time-limit cut from the value of the cut
  episode's own final observation (``final_values``).
* Value: ``value_cost * 0.5 * (v - V)^2`` on the V-trace targets v, plus the small
  L2 term of appendix B.2, ``value_l2_cost * (V_i - V_0)^2``, pulling each
  task's value toward the shared column's value wherever there is one.
* Adaptive costs (``column_costs``; docs/agents.md, "Adaptive costs"): each
  column b carries the cost ``tau_b = 1/beta_i`` of its task i, and the
  regularised reward, the expected regulariser and the distillation term take
  it in place of the fixed ``1/beta`` (eqs. 9'-10' there), with alpha fixed:
  ``c_KL = alpha tau_b``, ``c_Ent = (1 - alpha) tau_b``; with
  ``regulariser_offset`` b the regulariser is measured from b,
  ``R + tau_b (alpha log pi_0 - log pi_i + b)`` (eq. 9''; the learner passes
  ``b = -(1 - alpha) log A``, the uniform policy's). Without them the
  computation is the fixed-cost one, unchanged.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from distral_tf.agents import algorithms
from distral_tf.agents import networks
from distral_tf.agents import vtrace

OFF_POLICY_CORRECTIONS = ('vtrace', 'none')
LOSS_TERMS = ('policy_loss', 'entropy_loss', 'value_loss', 'distill_loss', 'value_l2')
tfd = tfp.distributions


def regularised_rewards(rewards: tf.Tensor, log_pi0_a: tf.Tensor,
                        log_pi_a: tf.Tensor,
                        coeffs: algorithms.Coefficients,
                        costs: tf.Tensor | None = None,
                        offset: float = 0.0) -> tf.Tensor:
  """``R + (alpha/beta) log pi_0(a|s) - (1/beta) log pi_i(a|s)``, no gradient.

  The regularised reward R_reg_i of eq. (9). With ``costs`` (``[B]``, the
  cost ``tau = 1/beta_i`` of each column's task), that of eq. (9') of
  docs/agents.md: ``R + alpha tau log pi_0(a|s) - tau log pi_i(a|s)``; with
  ``offset`` b, eq. (9''): ``R + tau (alpha log pi_0(a|s) - log pi_i(a|s) + b)``.
  """
  if costs is None:
    reg = (rewards + (coeffs.alpha / coeffs.beta) * log_pi0_a
           - (1.0 / coeffs.beta) * log_pi_a)
  else:
    costs = tf.cast(costs, rewards.dtype)
    reg = rewards + coeffs.alpha * costs * log_pi0_a - costs * log_pi_a
  if offset:
    reg += (1.0 / coeffs.beta if costs is None else costs) * offset
  return tf.stop_gradient(reg)


def _log_prob(log_probs: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
  """``log_probs[t, b, actions[t, b]]`` of a vector of log-probabilities per action."""
  one_hot = tf.one_hot(actions, log_probs.shape[-1], dtype=log_probs.dtype)
  return tf.reduce_sum(log_probs * one_hot, axis=-1)


def distral_loss(output: networks.NetOutput, actions: tf.Tensor,
                 rewards: tf.Tensor, discounts: tf.Tensor,
                 coeffs: algorithms.Coefficients,
                 algorithm: algorithms.Algorithm, gamma: float,
                 value_cost: float, value_l2_cost: float,
                 regulariser_gradient: str = 'sampled', *,
                 episode_ends: tf.Tensor | None = None,
                 final_values: tf.Tensor | None = None,
                 behaviour_logits: tf.Tensor | None = None,
                 off_policy_correction: str = 'vtrace',
                 rho_bar: float = 1.0, c_bar: float = 1.0,
                 column_weights: tf.Tensor | None = None,
                 column_costs: tf.Tensor | None = None,
                 regulariser_offset: float | None = None,
                 return_columns: bool = False):
  """The loss whose gradient is eqs. (9)-(10), or (9')-(10') (module docstring).

  Args:
    output: the network's output over T+1 steps; step T only bootstraps.
    actions: ``[T, B]`` int, action t taken at observation t.
    rewards: ``[T, B]``, the environment's rewards.
    discounts: ``[T, B]``, the environment's discounts: 0 at a terminal step,
      1 otherwise (a time-limit cut included).
    coeffs: alpha, beta, c_KL, c_Ent.
    algorithm: which of the seven algorithms.
    gamma: the discount factor.
    value_cost: weight of ``0.5 (v - V)^2``.
    value_l2_cost: weight of ``(V_i - V_0)^2``.
    regulariser_gradient: ``'sampled'`` (eq. 9 as written) or ``'expected'``
      (the current step's regulariser by its expectation; see module doc).
    episode_ends: ``[T, B]`` bool, True where step t ended its episode
      (terminal, time-limit cut, or lost to a crashed environment); the
      returns never cross it. Default: no episode ends except at terminals.
    final_values: ``[T, B]``, where an episode was cut at step t, the value
      of its final observation, from which the return bootstraps (0 elsewhere).
    behaviour_logits: ``[T, B, A]`` logits of the policy that acted (the
      actors' parameters); default: the current policy (on-policy).
    off_policy_correction: ``'vtrace'`` (returns corrected for the lag
      between behaviour and current policy) or ``'none'`` (n-step returns).
    rho_bar, c_bar: V-trace's clipping thresholds.
    column_weights: ``[B]`` weight of each column (environment) of the batch
      in the loss and metrics; default ``1/B`` each (the batch mean). A batch
      of several tasks weighs each task's columns by one over their number:
      the sum of the tasks' losses.
    column_costs: ``[B]`` the cost ``tau = 1/beta_i`` of each column's task i
      (adaptive costs, eqs. 9'-10' of docs/agents.md), in place of
      ``1/coeffs.beta`` in every regularisation term (alpha stays
      ``coeffs.alpha``); default None: the fixed costs of ``coeffs``. Not for
      the A3C family, whose entropy bonus is outside the rewards.
    regulariser_offset: b of eq. (9'') of docs/agents.md: every step's
      regulariser, sampled or expected, gains ``tau b`` (``1/beta`` b with
      fixed costs); default None: none (b = 0). Not for the A3C family.
    return_columns: also return the per-column values of the metrics (loss
      terms summed over time, statistics averaged; ``value_error`` squared).

  Returns:
    The scalar loss and a dict of scalar metrics: total, the loss terms
    policy_loss, entropy_loss, value_loss, distill_loss, value_l2, and
    entropy, kl (to pi_0), mean_return (of the V-trace targets),
    value_error (root mean square of targets - values), rho (mean importance
    weight), behaviour_kl (KL(behaviour || current)); with
    ``return_columns``, a third item: ``{metric: [B]}``.
  """
  if regulariser_gradient not in ('sampled', 'expected'):
    raise ValueError(f'regulariser_gradient must be sampled or expected, got '
                     f'{regulariser_gradient!r}')
  if off_policy_correction not in OFF_POLICY_CORRECTIONS:
    raise ValueError(f'off_policy_correction must be one of {OFF_POLICY_CORRECTIONS}, '
                     f'got {off_policy_correction!r}')
  if (column_costs is not None or regulariser_offset is not None) and algorithm.entropy_bonus:
    raise ValueError(f'column_costs and regulariser_offset apply to the Distral '
                     f'algorithms, not {algorithm.name} (an entropy bonus outside the '
                     f'rewards)')
  offset = 0.0 if regulariser_offset is None else float(regulariser_offset)
  num_steps = actions.shape[0]
  dtype = output.logits.dtype
  if column_costs is not None:
    column_costs = tf.cast(column_costs, dtype)
  rewards = tf.cast(rewards, dtype)
  step_discounts = gamma * tf.cast(discounts, dtype)

  pi_i = tfd.Categorical(logits=output.logits[:num_steps])
  log_pi = tf.nn.log_softmax(output.logits[:num_steps])  # Per action (below).
  pi = tf.exp(log_pi)
  log_pi_a = pi_i.log_prob(actions)
  entropy = pi_i.entropy()
  all_values = tf.stop_gradient(output.values)
  values = output.values[:num_steps]

  zeros = tf.zeros_like(rewards)
  kl = zeros
  distill = zeros
  value_l2 = zeros
  if output.pi0_logits is not None:
    pi_0 = tfd.Categorical(logits=output.pi0_logits[:num_steps])
    log_pi0 = tf.nn.log_softmax(output.pi0_logits[:num_steps])
    kl = tfd.kl_divergence(pi_i, pi_0)
    if algorithm.distilled:
      # Eq. (10), second term: grad = c_KL sum_a (pi_i - pi_0) grad h; eq. (10')
      # with c_KL = alpha tau of the column's task.
      c_kl = coeffs.c_kl if column_costs is None else coeffs.alpha * column_costs
      distill = -c_kl * tf.reduce_sum(tf.stop_gradient(pi) * log_pi0, axis=-1)
  if output.pi0_values is not None:
    value_l2 = value_l2_cost * tf.square(values - output.pi0_values[:num_steps])

  if algorithm.entropy_bonus:
    step_rewards = rewards
    entropy_term = -coeffs.c_ent * entropy
  else:
    log_pi0_a = pi_0.log_prob(actions) if output.pi0_logits is not None else zeros
    step_rewards = regularised_rewards(rewards, log_pi0_a, log_pi_a, coeffs,
                                       column_costs, offset)
    entropy_term = zeros

  if episode_ends is None:
    continues = tf.ones_like(rewards)
  else:
    continues = 1.0 - tf.cast(episode_ends, dtype)
  next_values = all_values[1:num_steps + 1]
  if final_values is not None:
    next_values = continues * next_values + (1.0 - continues) * tf.cast(final_values, dtype)
  behaviour_kl = zeros
  log_rhos = zeros
  if behaviour_logits is not None:
    mu = tfd.Categorical(logits=tf.cast(behaviour_logits, dtype))
    behaviour_kl = tfd.kl_divergence(mu, pi_i)
    if off_policy_correction == 'vtrace':
      log_rhos = tf.stop_gradient(log_pi_a - mu.log_prob(actions))
  targets = vtrace.vtrace(log_rhos, step_discounts, step_rewards,
                          tf.stop_gradient(values), next_values, continues,
                          rho_bar=rho_bar, c_bar=c_bar)
  advantages = targets.pg_advantages
  if not algorithm.entropy_bonus and regulariser_gradient == 'expected':
    # reg(a) = (alpha/beta) log pi_0(a|s_t) - (1/beta) log pi_i(a|s_t) (+ b/beta),
    # for all a (1/beta: tau of the column's task with adaptive costs).
    if column_costs is None:
      cost, kl_cost = 1.0 / coeffs.beta, coeffs.alpha / coeffs.beta
    else:
      cost = column_costs[:, tf.newaxis]
      kl_cost = coeffs.alpha * cost
    reg = -cost * log_pi
    if offset:
      reg += cost * offset
    if output.pi0_logits is not None:
      reg += kl_cost * log_pi0
    reg = tf.stop_gradient(reg)
    advantages -= targets.clipped_rhos * _log_prob(reg, actions)
    entropy_term = -tf.reduce_sum(pi * reg, axis=-1)
  # Per column b of the batch: loss terms summed over time, statistics averaged.
  columns = dict(
      policy_loss=tf.reduce_sum(-log_pi_a * advantages, axis=0),
      entropy_loss=tf.reduce_sum(entropy_term, axis=0),
      value_loss=tf.reduce_sum(value_cost * 0.5 * tf.square(targets.vs - values), axis=0),
      distill_loss=tf.reduce_sum(distill, axis=0),
      value_l2=tf.reduce_sum(value_l2, axis=0),
      entropy=tf.reduce_mean(entropy, axis=0),
      kl=tf.reduce_mean(kl, axis=0),
      mean_return=tf.reduce_mean(targets.vs, axis=0),
      value_error=tf.reduce_mean(tf.square(targets.vs - values), axis=0),  # Squared.
      rho=tf.reduce_mean(tf.exp(log_rhos), axis=0),
      behaviour_kl=tf.reduce_mean(behaviour_kl, axis=0),
  )
  if column_weights is None:
    batch_size = tf.cast(tf.shape(actions)[1], dtype)
    column_weights = tf.ones_like(columns['policy_loss']) / batch_size
  weights = tf.cast(column_weights, dtype)
  metrics = {k: tf.reduce_sum(weights * v) for k, v in columns.items()}
  metrics['value_error'] = tf.sqrt(metrics['value_error'])
  total = sum(metrics[k] for k in LOSS_TERMS)
  metrics['total'] = total
  if return_columns:
    return total, metrics, columns
  return total, metrics
