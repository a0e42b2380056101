"""Adaptive costs (``--adaptive_costs``): the bound, its anneal and the dual step.

docs/agents.md, "Adaptive costs": each task i of a Distral algorithm with alpha
< 1 has its own cost ``tau_i = 1/beta_i``, the Lagrange multiplier of
constraint (C) on its per-step regulariser ``C_i = alpha KL(pi_i || pi_0) -
(1 - alpha) H(pi_i) <= epsilon``. The learner (``Learner.adapt_costs``) keeps
the costs and calls these after every gradient step; the losses take the costs
and the uniform policy's regulariser as offset (eq. 9'', ``losses.py``).

The flag checks (``config_limits``) read ``COST_RANGE`` before ``launch`` has
quieted TensorFlow's start-up lines, so TensorFlow is imported by the two
functions that run in the learner's step, not by this module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import tensorflow as tf

# The range of the costs tau_i: a hundred times below the grid world's and
# minigrid's good fixed costs (0.01, 1e-3) at the bottom, at the top a cost at
# which the regulariser of a policy far from uniform, of the order of log A a
# step, is of the order of the largest rewards of those level sets (1).
COST_RANGE = (1e-5, 1.0)

# Eq. (A): the bound of (C) goes linearly from the uniform policy's regulariser
# to the target's over this share of the run's budget, so that the costs do not
# fall while the policies are still near uniform, before anything is found.
TARGET_ANNEAL_SHARE = 0.5

# (D): a cost rises at this fraction of the rate at which it falls. At one rate
# both ways, policies that sharpen fast (learning rate 1e-2 on two_rooms) drove
# their costs to the top of the range within ~35 steps.
COST_RISE_RATIO = 0.1


def regulariser_bound(alpha: float, target_entropy: float, num_actions: int) -> float:
  """``epsilon = -(1 - alpha) kappa log A``: the bound of constraint (C).

  (C), ``alpha KL(pi_i || pi_0) - (1 - alpha) H(pi_i) <= epsilon`` per step,
  stated as an entropy: for alpha < 1 it reads ``H(pi_i) - alpha/(1 - alpha)
  KL(pi_i || pi_0) >= kappa log A``, a fraction ``kappa = target_entropy`` of
  the largest entropy ``log A``. At kappa = 1 it is ``epsilon_U``, the
  regulariser of the uniform policy (with pi_0 uniform too), the offset of
  eq. (9'') and the start of the anneal (A).
  """
  return -(1.0 - alpha) * target_entropy * math.log(num_actions)


def annealed_bound(steps: tf.Tensor, uniform_bound: float, target_bound: float,
                   anneal_steps: int) -> tf.Tensor:
  """Eq. (A): the bound epsilon_k after ``steps`` agent steps.

  ``epsilon_k = epsilon_U + min(1, k / K) (epsilon - epsilon_U)``: the uniform
  policy's regulariser ``epsilon_U = -(1 - alpha) log A`` at the start, the
  target's ``epsilon = -(1 - alpha) kappa log A`` from ``K = anneal_steps`` on
  (at once when ``K`` is 0).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if anneal_steps <= 0:
    return tf.constant(target_bound, tf.float32)
  share = tf.minimum(1.0, tf.cast(steps, tf.float32) / float(anneal_steps))
  return uniform_bound + share * (target_bound - uniform_bound)


def dual_step(costs: tf.Tensor, regularisers: tf.Tensor, bound: float | tf.Tensor,
              rate: float, rise_rate: float | None = None) -> tf.Tensor:
  """The dual step (D) on the costs ``tau_i = 1/beta_i``.

  ``log tau_i <- log tau_i + eta (C_i - bound)``, clipped to ``COST_RANGE``,
  where ``C_i = regularisers[i]`` is the measured per-step regulariser
  ``alpha KL(pi_i || pi_0) - (1 - alpha) H(pi_i)`` of task i and ``bound`` is
  epsilon of (C). ``eta = rate`` where the cost falls (``C_i < bound``) and
  ``rise_rate`` where it rises (default ``rate``: one rate both ways). No
  gradient.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  low, high = COST_RANGE
  violation = tf.stop_gradient(regularisers) - tf.cast(bound, costs.dtype)
  eta = rate
  if rise_rate is not None:
    eta = tf.where(violation > 0, tf.cast(rise_rate, costs.dtype),
                   tf.cast(rate, costs.dtype))
  log_costs = tf.math.log(costs) + eta * violation
  return tf.exp(tf.clip_by_value(log_costs, math.log(low), math.log(high)))
