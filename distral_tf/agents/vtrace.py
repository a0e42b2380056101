"""V-trace returns (Espeholt et al., 2018, IMPALA, eq. 1 and section 4.2).

Corrects the returns of an unroll acted by a behaviour policy mu (the actors'
parameters of the moment) for the learner's current policy pi. Applied by
``losses.distral_loss`` to the regularised reward of eq. (9). Everything is
time-major ``[T, B]``.

With ``rho_t = pi(a_t|x_t) / mu(a_t|x_t)``, ``rho-bar_t = min(rho_bar, rho_t)``
and ``c_t = lambda * min(c_bar, rho_t)``::

    delta_t = rho-bar_t (r_t + d_t V'_t - V(x_t))
    v_t - V(x_t) = delta_t + d_t k_t c_t (v_{t+1} - V(x_{t+1}))

where ``d_t`` is gamma times the environment's discount (0 after a terminal
step), ``V'_t`` the value of the state that step t led to, and ``k_t`` 1 where
that state continues the unroll's episode, 0 where the episode ended at step t.
An episode cut by a time limit (``dm_env.truncation``, discount 1) bootstraps
from the value of its own final observation (``V'_t``) and stops there: the
next episode's rewards never enter. The policy-gradient advantage is
``rho-bar_t (r_t + d_t v'_{t+1} - V(x_t))`` with ``v'_{t+1}`` the V-trace
target of the next state of the same episode (``V'_t`` where it was cut).

With all ``rho_t = 1`` (on-policy, or ``off_policy_correction='none'``) and
``lambda = 1``, ``v_t`` is the n-step return of A3C.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class VTraceReturns(NamedTuple):
  vs: tf.Tensor              # [T, B] value targets v_t.
  pg_advantages: tf.Tensor   # [T, B] rho-bar_t (r_t + d_t v'_{t+1} - V(x_t)).
  clipped_rhos: tf.Tensor    # [T, B] rho-bar_t.


def vtrace(log_rhos: tf.Tensor, discounts: tf.Tensor, rewards: tf.Tensor,
           values: tf.Tensor, next_values: tf.Tensor, continues: tf.Tensor,
           rho_bar: float = 1.0, c_bar: float = 1.0,
           lambda_: float = 1.0) -> VTraceReturns:
  """V-trace targets and advantages, no gradient (see the module docstring).

  Args:
    log_rhos: ``[T, B]`` ``log pi(a_t|x_t) - log mu(a_t|x_t)``.
    discounts: ``[T, B]`` ``d_t``: gamma times the environment's discount.
    rewards: ``[T, B]``.
    values: ``[T, B]`` ``V(x_t)``.
    next_values: ``[T, B]`` ``V'_t``: ``V(x_{t+1})`` within an episode (and
      the bootstrap value at ``t = T-1``), the final observation's value where
      the episode was cut at step t (anything at a terminal step: ``d_t = 0``).
    continues: ``[T, B]`` ``k_t``: 1 where ``x_{t+1}`` belongs to the episode
      of ``x_t``, 0 where the episode ended at step t.
    rho_bar: clipping of the importance weights in ``delta_t`` and the
      policy gradient.
    c_bar: clipping of the trace coefficients.
    lambda_: the trace's discount (1 in IMPALA's experiments).

  Returns:
    ``VTraceReturns``.
  """
  values = tf.convert_to_tensor(values)
  dtype = values.dtype
  log_rhos, discounts, rewards, next_values, continues = (
      tf.cast(x, dtype) for x in (log_rhos, discounts, rewards, next_values, continues))
  rhos = tf.exp(log_rhos)
  clipped_rhos = tf.minimum(tf.cast(rho_bar, dtype), rhos)
  cs = lambda_ * tf.minimum(tf.cast(c_bar, dtype), rhos)
  deltas = clipped_rhos * (rewards + discounts * next_values - values)
  factors = discounts * continues * cs
  # acc_t = v_t - V(x_t), computed backwards from acc_T = 0.
  num_steps = deltas.shape[0]
  acc = tf.zeros_like(deltas[0])
  corrections = [None] * num_steps
  for t in reversed(range(num_steps)):
    acc = deltas[t] + factors[t] * acc
    corrections[t] = acc
  corrections = tf.stack(corrections)
  vs = values + corrections
  # v'_{t+1}: the next state's target within the episode, V'_t where it ended.
  next_corrections = tf.concat([corrections[1:], tf.zeros_like(corrections[:1])], 0)
  next_vs = next_values + continues * next_corrections
  pg_advantages = clipped_rhos * (rewards + discounts * next_vs - values)
  return VTraceReturns(vs=tf.stop_gradient(vs),
                       pg_advantages=tf.stop_gradient(pg_advantages),
                       clipped_rhos=tf.stop_gradient(clipped_rhos))
