"""The learner: gradient steps on the tasks' losses (eqs. 9-10) with RMSProp.

One step takes an unroll of an actor's environments, of one or more tasks,
and steps on the sum of those tasks' losses (each task's loss on its own
environments): with every task in every unroll, one step per unroll instead of
one per task, the same gradients in one call.

Every task and worker shares ONE RMSProp optimiser (the shared statistics of
asynchronous A3C). Its slots are created for all variables up front so that a
checkpoint restores cleanly and the parameter-server mode can place them. The
learning rate is annealed linearly to 0 over ``total_steps`` agent steps
summed over tasks (paper, B.2), or kept constant (``lr_schedule``).

Scale conventions: each task's loss is summed over the unroll's time steps and
averaged over its batch (``losses``); gradients are clipped to a global norm
of ``grad_clip_norm`` at that scale; RMSProp (tf_keras) keeps the mean square
``v`` of the gradients, starting at 0, and steps by
``lr * g / sqrt(v + epsilon)``: epsilon sits inside the square root, so it must
be small against the squared gradients (about 1e-6 to 1e-8 here) or RMSProp
degenerates into plain gradient descent with a tiny rate.

Adaptive costs (``LearnerConfig.adaptive_costs``; docs/agents.md, "Adaptive
costs"): each task i has its own cost ``tau_i = 1/beta_i`` (``entropy_costs``,
a variable checkpointed with the learner), which its loss takes with the
regulariser measured from the uniform policy (eqs. 9''-10'), and which the dual
step (D) moves after every gradient step, from the step's measured KL and
entropy of the task: ``log tau_i <- clip(log tau_i + eta_(+/-) (alpha KL_i -
(1 - alpha) H_i - epsilon_k))``, the bound epsilon_k annealed from the uniform
policy's to the target's over the first ``cost_anneal_steps`` (eq. A), costs
rising at ``COST_RISE_RATIO`` of the rate at which they fall.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from distral_tf.agents import adaptive_costs
from distral_tf.agents import algorithms
from distral_tf.agents import config as config_lib
from distral_tf.agents import losses
from distral_tf.agents import networks


LR_SCHEDULES = ('linear', 'constant')


class Unroll(NamedTuple):
  """A batch of T-step trajectories of one task, time-major.

  Action t is taken at observation t; reward t and discount t are its result;
  observation T bootstraps. ``first[t+1]`` is True when step t ended its
  episode, for whatever reason: then observation t+1 is the first of a new
  episode, and the returns of steps up to t never look past it.

  The discount is the environment's, with one meaning everywhere: 0 when step
  t reached a terminal state (nothing follows), 1 otherwise. An episode cut by
  a time limit (``dm_env.truncation``) has discount 1 at its last step: its
  future would have gone on, so its return bootstraps from
  ``final_values[t]``, the value of its own final observation (computed by the
  actor, which saw that observation). A step lost to a crashed environment
  (its process restarted) has reward 0, discount 1 and the value of the state
  it started from as ``final_values``: it teaches nothing.
  """
  observations: tf.Tensor   # [T+1, B, ...]
  first: tf.Tensor          # [T+1, B] bool
  actions: tf.Tensor        # [T, B] int32
  rewards: tf.Tensor        # [T, B] float32
  discounts: tf.Tensor      # [T, B] float32, 0 at a terminal step, else 1
  initial_state: Any        # network state before observations[0]
  behaviour_logits: Any = None  # [T, B, A] logits the actors sampled from; None: on-policy
  final_values: Any = None      # [T, B] bootstrap values at cut episode ends; None: zeros


class Diverged(Exception):
  """Training produced non-finite losses, gradients or weights (nothing is saved)."""


def check_finite(metrics: dict[str, float], update: int) -> None:
  """Raises ``Diverged`` naming the loss terms if a metric of a step is not finite."""
  bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
  if bad:
    shown = ', '.join(f'{k}={metrics[k]}' for k in bad[:8])
    raise Diverged(f'training diverged at update {update}: non-finite {shown}'
                   f'{" ..." if len(bad) > 8 else ""}; lower --learning_rate (or raise '
                   '--rmsprop_epsilon) and start again in a new --logdir (or from the '
                   'last checkpoint, which holds finite weights)')


def check_finite_weights(variables: Sequence[tf.Variable]) -> None:
  """Raises ``Diverged`` if a weight is not finite (checked before every checkpoint)."""
  bad = [v.name for v in variables if not np.all(np.isfinite(v.numpy()))]
  if bad:
    raise Diverged(f'training diverged: non-finite weights in {", ".join(bad[:4])}; '
                   'the checkpoint was not written; lower --learning_rate and resume '
                   'from the last checkpoint')


def split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float],
                                                      dict[int, dict[str, float]]]:
  """``train_step``'s metrics as (global ones, per task: ``{metric: value}``)."""
  common, per_task = {}, {}
  for key, value in metrics.items():
    name, _, task = key.rpartition('/')
    if name:
      per_task.setdefault(int(task), {})[name] = value
    else:
      common[key] = value
  return common, per_task


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """Optimisation settings; defaults are the deep trainers' (``config.DeepConfig``)."""
  learning_rate: float
  total_steps: int          # agent steps, summed over tasks, to anneal to 0
  discount: float = config_lib.COMMON_DEFAULTS['discount']
  rmsprop_decay: float = config_lib.DEFAULTS.rmsprop_decay
  rmsprop_epsilon: float = config_lib.DEFAULTS.rmsprop_epsilon
  rmsprop_momentum: float = 0.0
  grad_clip_norm: float = config_lib.DEFAULTS.grad_clip_norm
  value_cost: float = config_lib.DEFAULTS.value_cost
  value_l2_cost: float = config_lib.DEFAULTS.value_l2_cost
  # See losses.distral_loss.
  regulariser_gradient: str = config_lib.DEFAULTS.regulariser_gradient
  off_policy_correction: str = config_lib.DEFAULTS.off_policy_correction
  # 'linear' (annealed to 0) or 'constant'.
  lr_schedule: str = config_lib.DEFAULTS.lr_schedule
  # Adaptive costs (docs/agents.md, "Adaptive costs"): a cost tau_i per task,
  # starting at the fixed one, the regulariser measured from the uniform
  # policy (eq. 9'': ``uniform_bound = -(1 - alpha) log A``,
  # ``adaptive_costs.regulariser_bound`` at kappa 1), moved by the dual step
  # (D) at the rate eta (--cost_learning_rate; rising at COST_RISE_RATIO of it)
  # on the bound epsilon of constraint (C) (``cost_bound``, of
  # --target_entropy), reached from ``uniform_bound`` by a linear anneal over
  # the first ``cost_anneal_steps`` agent steps (eq. A).
  adaptive_costs: bool = config_lib.DEFAULTS.adaptive_costs
  cost_bound: float | None = None
  uniform_bound: float | None = None
  cost_anneal_steps: int = 0
  cost_learning_rate: float = config_lib.DEFAULTS.cost_learning_rate


class Learner:
  """Gradient steps on each task's loss, one shared RMSProp optimiser."""

  def __init__(self, network: networks.DistralNetwork,
               algorithm: algorithms.Algorithm,
               coeffs: algorithms.Coefficients, config: LearnerConfig):
    """Creates the optimiser and its slots; ``network`` must be built."""
    if config.total_steps <= 0:
      raise ValueError(f'total_steps must be > 0, got {config.total_steps}')
    if config.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f'lr_schedule must be one of {LR_SCHEDULES}, got '
                       f'{config.lr_schedule!r}')
    self._network = network
    self._algorithm = algorithm
    self._coeffs = coeffs
    self._config = config
    variables = list(network.trainable_variables)
    if not variables:
      raise ValueError('build the network before creating the Learner')
    self.optimizer = tf_keras.optimizers.RMSprop(
        learning_rate=config.learning_rate, rho=config.rmsprop_decay,
        momentum=config.rmsprop_momentum, epsilon=config.rmsprop_epsilon,
        jit_compile=False)
    # The optimiser's own learning-rate variable, annealed in ``update``.
    self.learning_rate = self.optimizer.learning_rate
    self.steps_done = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name='steps_done')
    self.optimizer.build(variables)
    # The costs tau_i of the tasks (adaptive costs only; None: the fixed ones).
    self.entropy_costs: tf.Variable | None = None
    if config.adaptive_costs:
      self._check_adaptive_costs(algorithm, coeffs, config)
      self.entropy_costs = tf.Variable(
          tf.fill([network.num_tasks], 1.0 / coeffs.beta), trainable=False,
          name='entropy_costs')
    self._frozen: set[Any] = set()
    self._value_l2_cost = config.value_l2_cost  # 0 once pi_0 is a fixed prior.
    self._lock = threading.Lock()
    self._train_steps: dict[tuple[int, ...], Callable[[Unroll], dict[str, tf.Tensor]]] = {}

  @property
  def network(self) -> networks.DistralNetwork:
    return self._network

  @staticmethod
  def _check_adaptive_costs(algorithm: algorithms.Algorithm,
                            coeffs: algorithms.Coefficients,
                            config: LearnerConfig) -> None:
    if algorithm.entropy_bonus:
      raise ValueError(f'adaptive costs need the regularised reward of a Distral '
                       f'algorithm, not {algorithm.name}')
    if config.cost_bound is None or config.uniform_bound is None:
      raise ValueError('adaptive costs need cost_bound and uniform_bound '
                       '(adaptive_costs.regulariser_bound)')
    low, high = adaptive_costs.COST_RANGE
    if not low <= 1.0 / coeffs.beta <= high:
      raise ValueError(f'the initial cost {1.0 / coeffs.beta} is outside '
                       f'{adaptive_costs.COST_RANGE}')

  def freeze(self, variables: Sequence[tf.Variable]) -> None:
    """Excludes ``variables`` from every later update (e.g. a fixed prior pi_0)."""
    with self._lock:
      self._frozen.update(v.ref() for v in variables)
      self._train_steps.clear()  # Retrace without them.

  def freeze_prior(self) -> None:
    """Keeps pi_0's column fixed (a transfer run's prior) and drops the value L2 term.

    The term ``value_l2_cost (V_i - V_0)^2`` (appendix B.2) lets the tasks'
    values and the shared value V_0 track one another. A fixed prior's V_0
    estimates the values of the tasks it was trained on, not those of the task
    at hand, and no longer moves: the term would only pull the new task's
    baseline toward those stale estimates, so it is left out.
    """
    with self._lock:
      self._value_l2_cost = 0.0
    self.freeze(self._network.pi0_variables())

  def loss(self, task_sizes: tuple[int, ...], batch: Unroll
           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The summed losses of the tasks in ``batch`` (eqs. 9-10; ``losses.distral_loss``).

    ``batch`` holds the environments of several tasks, grouped by task: the
    first ``task_sizes[0]`` columns belong to task 0, the next
    ``task_sizes[1]`` to task 1, and so on. Each task's loss is its own
    (summed over time, averaged over its columns); the total is their sum,
    computed in one pass of the network (``DistralNetwork.unroll_tasks``).

    With adaptive costs each task's loss takes its cost tau_t
    (``entropy_costs``, eqs. 9'-10' of docs/agents.md).

    Returns:
      The total and the metrics: ``total`` and, per task t present,
      ``'<metric>/<t>'`` for every metric of ``losses.distral_loss``, and with
      adaptive costs ``'entropy_cost/<t>'``, the cost tau_t the loss took.
    """
    if len(task_sizes) != self._network.num_tasks:
      raise ValueError(f'task_sizes needs one entry per task '
                       f'({self._network.num_tasks}), got {task_sizes}')
    output, _ = self._network.unroll_tasks(task_sizes, batch.observations, batch.first,
                                           batch.initial_state)
    # Each task's columns weigh 1/(their number): the sum of the tasks' losses.
    weights = tf.concat([tf.fill([n], 1.0 / n) for n in task_sizes if n], axis=0)
    costs = column_costs = offset = None
    if self.entropy_costs is not None:
      costs = tf.identity(self.entropy_costs)  # Read once: the costs of this step.
      column_costs = tf.repeat(costs, list(task_sizes))
      offset = self._config.uniform_bound  # Eq. (9''): from the uniform policy.
    total, _, columns = losses.distral_loss(
        output, batch.actions, batch.rewards, batch.discounts, self._coeffs,
        self._algorithm, gamma=self._config.discount,
        value_cost=self._config.value_cost,
        value_l2_cost=self._value_l2_cost,
        regulariser_gradient=self._config.regulariser_gradient,
        episode_ends=batch.first[1:], final_values=batch.final_values,
        behaviour_logits=batch.behaviour_logits,
        off_policy_correction=self._config.off_policy_correction,
        column_weights=weights, column_costs=column_costs,
        regulariser_offset=offset, return_columns=True)
    metrics, start = {'total': total}, 0
    for task, n in enumerate(task_sizes):
      if n:
        for key, value in columns.items():
          mean = tf.reduce_mean(value[start:start + n])
          metrics[f'{key}/{task}'] = tf.sqrt(mean) if key == 'value_error' else mean
        if costs is not None:
          metrics[f'entropy_cost/{task}'] = costs[task]
        start += n
    return total, metrics

  def update(self, task_sizes: tuple[int, ...], batch: Unroll) -> dict[str, tf.Tensor]:
    """One step of ``train_step``, not compiled (to wrap in a strategy)."""
    grads, variables, metrics = self.gradients(task_sizes, batch)
    return self.apply(grads, variables, batch, metrics)

  def gradients(self, task_sizes: tuple[int, ...], batch: Unroll
                ) -> tuple[list[tf.Tensor], list[tf.Variable], dict[str, tf.Tensor]]:
    """The first half of ``update``: clipped gradients, their variables, metrics.

    Reads the variables but changes nothing, so the parameter-server mode runs
    it in a scope that reads each remote variable once per step.
    """
    variables, seen = [], set(self._frozen)
    for task, n in enumerate(task_sizes):
      for v in self._network.task_variables(task) if n else ():
        if v.ref() not in seen:
          seen.add(v.ref())
          variables.append(v)
    with tf.GradientTape() as tape:
      total, metrics = self.loss(task_sizes, batch)
    grads = tape.gradient(total, variables)
    grads = [tf.zeros_like(v) if g is None else g
             for g, v in zip(grads, variables)]
    grads, grad_norm = tf.clip_by_global_norm(grads, self._config.grad_clip_norm)
    metrics['grad_norm'] = grad_norm
    return grads, variables, metrics

  def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable],
            batch: Unroll, metrics: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The second half of ``update``: RMSProp step, step counter, annealing.

    With adaptive costs, also the dual step (D) on the costs of the tasks
    ``metrics`` has (``adapt_costs``), and ``metrics['cost_bound']``, the
    bound epsilon_k it took (eq. A).
    """
    metrics['learning_rate'] = tf.identity(self.learning_rate)
    self.optimizer.apply_gradients(zip(grads, variables))
    num_steps = tf.size(batch.actions, out_type=tf.int64)
    steps = self.steps_done.assign_add(num_steps)
    if self._config.lr_schedule == 'linear':
      fraction = tf.cast(steps, tf.float32) / float(self._config.total_steps)
      self.learning_rate.assign(
          self._config.learning_rate * tf.maximum(0.0, 1.0 - fraction))
    if self.entropy_costs is not None:
      self.adapt_costs(metrics)
    return metrics

  def adapt_costs(self, metrics: dict[str, tf.Tensor]) -> None:
    """The dual step (D) on ``entropy_costs``, from a step's metrics per task.

    For every task t with ``'kl/<t>'`` and ``'entropy/<t>'`` in ``metrics``
    (per-step averages over the task's unroll), ``C_t = alpha kl - (1 -
    alpha) entropy`` and ``tau_t <- dual_step(tau_t, C_t)`` on the bound of
    the moment (``cost_bound``), a rise at ``COST_RISE_RATIO`` of the rate;
    the other tasks' costs stay. Adds ``metrics['cost_bound']``.
    """
    alpha = self._coeffs.alpha
    present, regularisers = [], []
    for task in range(self._network.num_tasks):
      kl, entropy = metrics.get(f'kl/{task}'), metrics.get(f'entropy/{task}')
      present.append(kl is not None and entropy is not None)
      regularisers.append(alpha * kl - (1.0 - alpha) * entropy if present[-1]
                          else tf.zeros([], self.entropy_costs.dtype))
    if not any(present):
      return
    costs = tf.identity(self.entropy_costs)
    bound = self.cost_bound()
    rate = self._config.cost_learning_rate
    stepped = adaptive_costs.dual_step(
        costs, tf.stack(regularisers), bound, rate,
        rise_rate=adaptive_costs.COST_RISE_RATIO * rate)
    self.entropy_costs.assign(tf.where(tf.constant(present), stepped, costs))
    metrics['cost_bound'] = bound

  def cost_bound(self) -> tf.Tensor:
    """The bound epsilon_k of (C) at the steps done so far (eq. A)."""
    return adaptive_costs.annealed_bound(
        self.steps_done, self._config.uniform_bound, self._config.cost_bound,
        self._config.cost_anneal_steps)

  def cost_summary(self, task_names: Sequence[str]) -> dict[str, Any]:
    """For ``summary.json``: the costs tau_i per task name, at the end (adaptive
    costs only; ``{}`` with fixed costs)."""
    if self.entropy_costs is None:
      return {}
    return dict(entropy_costs=dict(zip(task_names,
                                       self.entropy_costs.numpy().tolist())))

  def train_step(self, task_sizes: tuple[int, ...], batch: Unroll
                 ) -> dict[str, tf.Tensor]:
    """One gradient step on the tasks of ``batch``: clip, apply, anneal the rate.

    ``task_sizes`` as in ``loss``. Compiled once per ``task_sizes`` (an actor
    thread's block always has the same). Returns ``loss``'s metrics plus
    ``grad_norm`` (before clipping) and ``learning_rate`` (the rate this step
    used); with adaptive costs, then takes the dual step (D) on the costs.
    """
    task_sizes = tuple(int(n) for n in task_sizes)
    with self._lock:
      step = self._train_steps.get(task_sizes)
      if step is None:
        # No data-dependent Python control flow: autograph only slows tracing.
        step = tf.function(lambda b, sizes=task_sizes: self.update(sizes, b),
                           autograph=False)
        self._train_steps[task_sizes] = step
    return step(batch)

  def checkpoint_items(self) -> dict[str, Any]:
    """Objects to save: ``tf.train.Checkpoint(**learner.checkpoint_items())``.

    With adaptive costs, also ``entropy_costs`` (the costs tau_i); without,
    the items of fixed-cost runs, whose checkpoints therefore still resume.
    """
    items = dict(network=self._network, optimizer=self.optimizer,
                 learning_rate=self.learning_rate, steps_done=self.steps_done)
    if self.entropy_costs is not None:
      items['entropy_costs'] = self.entropy_costs
    return items
