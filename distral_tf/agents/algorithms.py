"""The paper's seven deep algorithms (appendix A) and their loss coefficients.

An algorithm fixes three things (EQUATIONS.md, "The seven algorithms"):

* ``alpha = c_KL / (c_KL + c_Ent)``: 0 for the A3C family, 1 for KL_*, 0.5
  for KL+ent_* (appendix B);
* the architecture: ``'separate'`` (one network per task), ``'shared'`` (one
  network for all tasks) or ``'two_column'`` (eq. 8 with eqs. 11-12: task
  logits ``alpha * h + f`` where ``h`` is a column shared across tasks);
* whether a distilled policy pi_0 is trained by eq. (10)'s second term.

``entropy_cost`` is the total regularisation cost ``1/beta = c_KL + c_Ent``
(for the A3C baselines it is the usual A3C entropy cost). With adaptive costs
(``--adaptive_costs``) it is the initial cost tau_i = 1/beta_i of every task,
which the learner then tunes per task (``adaptive_costs.py``; docs/agents.md,
"Adaptive costs").
"""

from __future__ import annotations

import dataclasses

from distral_tf import errors

ARCHITECTURES = ('separate', 'shared', 'two_column')


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One row of the algorithms table (paper, appendix A)."""
  name: str
  # Default alpha = c_KL / (c_KL + c_Ent).
  alpha: float
  # 'separate' (own network per task), 'shared' (one network for all tasks),
  # 'two_column' (task column f plus a shared column h, eq. 8).
  architecture: str
  # True when a pi_0 is trained by distillation (eq. 10, second term).
  distilled: bool
  # True for the A3C family: the usual A3C entropy bonus on raw rewards,
  # instead of the regularised reward of eq. (9).
  entropy_bonus: bool

  @property
  def has_pi0(self) -> bool:
    """Whether the network has a second policy head h (pi_0 = softmax h)."""
    return self.distilled or self.architecture == 'two_column'


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a for a in (
        Algorithm('a3c', 0.0, 'separate', distilled=False, entropy_bonus=True),
        Algorithm('a3c_multitask', 0.0, 'shared', distilled=False,
                  entropy_bonus=True),
        Algorithm('a3c_2col', 0.0, 'two_column', distilled=False,
                  entropy_bonus=True),
        Algorithm('kl_1col', 1.0, 'separate', distilled=True,
                  entropy_bonus=False),
        Algorithm('kl_ent_1col', 0.5, 'separate', distilled=True,
                  entropy_bonus=False),
        Algorithm('kl_2col', 1.0, 'two_column', distilled=True,
                  entropy_bonus=False),
        Algorithm('kl_ent_2col', 0.5, 'two_column', distilled=True,
                  entropy_bonus=False),
    )
}


def get(name: str) -> Algorithm:
  """The algorithm called ``name``; raises ``errors.UsageError`` if unknown."""
  if name not in ALGORITHMS:
    raise errors.UsageError(
        f'unknown deep algorithm {name!r}; valid choices: '
        f'{", ".join(ALGORITHMS)}')
  return ALGORITHMS[name]


@dataclasses.dataclass(frozen=True)
class Coefficients:
  """Regularisation coefficients of objective (1).

  ``alpha = c_kl / (c_kl + c_ent)`` and ``beta = 1 / (c_kl + c_ent)``, so the
  regularised reward is ``R + (alpha/beta) log pi_0 - (1/beta) log pi_i``.
  """
  alpha: float
  beta: float
  c_kl: float
  c_ent: float


def coefficients(algorithm: Algorithm, entropy_cost: float,
                 alpha: float | None = None) -> Coefficients:
  """Splits ``entropy_cost = 1/beta = c_KL + c_Ent`` according to alpha.

  Implements the change of variables of EQUATIONS.md ("Setting"):
  ``c_KL = alpha / beta`` and ``c_Ent = (1 - alpha) / beta``.

  Args:
    algorithm: the algorithm.
    entropy_cost: ``1/beta``, must be > 0.
    alpha: overrides ``algorithm.alpha``; allowed for distilled algorithms only.

  Returns:
    The coefficients.

  Raises:
    errors.UsageError: on a bad entropy cost or alpha.
  """
  if not entropy_cost > 0:
    raise errors.UsageError(f'--entropy_cost must be > 0, got {entropy_cost}')
  if alpha is None:
    alpha = algorithm.alpha
  elif not algorithm.distilled:
    raise errors.UsageError(
        f'--alpha applies only to the distilled algorithms (kl_*); '
        f'{algorithm.name} has alpha = {algorithm.alpha:g} by definition')
  elif not 0.0 <= alpha <= 1.0:
    raise errors.UsageError(f'--alpha must be in [0, 1], got {alpha}')
  alpha = float(alpha)
  entropy_cost = float(entropy_cost)
  return Coefficients(alpha=alpha, beta=1.0 / entropy_cost,
                      c_kl=alpha * entropy_cost,
                      c_ent=(1.0 - alpha) * entropy_cost)
