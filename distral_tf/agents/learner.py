"""The learner: one gradient step of a task's loss (eqs. 9-10) with RMSProp.

Every task and worker shares ONE RMSProp optimiser (the shared statistics of
asynchronous A3C). Its slots are created for all variables up front so that a
checkpoint restores cleanly and the parameter-server mode can place them. The
learning rate is annealed linearly to 0 over ``total_steps`` agent steps
summed over tasks (paper, B.2).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, NamedTuple, Sequence

import tensorflow as tf
import tf_keras

from distral_tf.agents import algorithms
from distral_tf.agents import losses
from distral_tf.agents import networks


class Unroll(NamedTuple):
  """A batch of T-step trajectories of one task, time-major.

  Action t is taken at observation t; reward t and discount t are its result;
  observation T bootstraps. After a terminal step t, observation t+1 is the
  first of a new episode and ``first[t+1]`` is True.
  """
  observations: tf.Tensor   # [T+1, B, ...]
  first: tf.Tensor          # [T+1, B] bool
  actions: tf.Tensor        # [T, B] int32
  rewards: tf.Tensor        # [T, B] float32
  discounts: tf.Tensor      # [T, B] float32, 0 at a terminal step, else 1
  initial_state: Any        # network state before observations[0]


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """Optimisation settings; defaults are A3C's (Mnih et al., 2016)."""
  learning_rate: float
  total_steps: int          # agent steps, summed over tasks, to anneal to 0
  discount: float = 0.99
  rmsprop_decay: float = 0.99
  rmsprop_epsilon: float = 0.1
  rmsprop_momentum: float = 0.0
  grad_clip_norm: float = 40.0
  value_cost: float = 0.5
  value_l2_cost: float = 0.01
  regulariser_gradient: str = 'expected'   # see losses.distral_loss


class Learner:
  """Gradient steps on each task's loss, one shared RMSProp optimiser."""

  def __init__(self, network: networks.DistralNetwork,
               algorithm: algorithms.Algorithm,
               coeffs: algorithms.Coefficients, config: LearnerConfig):
    """Creates the optimiser and its slots; ``network`` must be built."""
    if config.total_steps <= 0:
      raise ValueError(f'total_steps must be > 0, got {config.total_steps}')
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
    self._frozen: set[Any] = set()
    self._lock = threading.Lock()
    self._train_steps: dict[int, Callable[[Unroll], dict[str, tf.Tensor]]] = {}

  @property
  def network(self) -> networks.DistralNetwork:
    return self._network

  def freeze(self, variables: Sequence[tf.Variable]) -> None:
    """Excludes ``variables`` from every later update (e.g. a fixed prior pi_0)."""
    with self._lock:
      self._frozen.update(v.ref() for v in variables)
      self._train_steps.clear()  # Retrace without them.

  def loss(self, task: int, batch: Unroll
           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Task ``task``'s loss on ``batch`` (eqs. 9-10; ``losses.distral_loss``)."""
    output, _ = self._network.unroll(task, batch.observations, batch.first,
                                     batch.initial_state)
    return losses.distral_loss(
        output, batch.actions, batch.rewards, batch.discounts, self._coeffs,
        self._algorithm, gamma=self._config.discount,
        value_cost=self._config.value_cost,
        value_l2_cost=self._config.value_l2_cost,
        regulariser_gradient=self._config.regulariser_gradient)

  def update(self, task: int, batch: Unroll) -> dict[str, tf.Tensor]:
    """One step of ``train_step``, not compiled (to wrap in a strategy)."""
    grads, variables, metrics = self.gradients(task, batch)
    return self.apply(grads, variables, batch, metrics)

  def gradients(self, task: int, batch: Unroll
                ) -> tuple[list[tf.Tensor], list[tf.Variable], dict[str, tf.Tensor]]:
    """The first half of ``update``: clipped gradients, their variables, metrics.

    Reads the variables but changes nothing, so the parameter-server mode runs
    it in a scope that reads each remote variable once per step.
    """
    variables = [v for v in self._network.task_variables(task)
                 if v.ref() not in self._frozen]
    with tf.GradientTape() as tape:
      _, metrics = self.loss(task, batch)
    grads = tape.gradient(metrics['total'], variables)
    grads = [tf.zeros_like(v) if g is None else g
             for g, v in zip(grads, variables)]
    grads, grad_norm = tf.clip_by_global_norm(grads, self._config.grad_clip_norm)
    metrics['grad_norm'] = grad_norm
    return grads, variables, metrics

  def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable],
            batch: Unroll, metrics: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The second half of ``update``: RMSProp step, step counter, annealing."""
    metrics['learning_rate'] = tf.identity(self.learning_rate)
    self.optimizer.apply_gradients(zip(grads, variables))
    num_steps = tf.size(batch.actions, out_type=tf.int64)
    steps = self.steps_done.assign_add(num_steps)
    fraction = tf.cast(steps, tf.float32) / float(self._config.total_steps)
    self.learning_rate.assign(
        self._config.learning_rate * tf.maximum(0.0, 1.0 - fraction))
    return metrics

  def train_step(self, task: int, batch: Unroll) -> dict[str, tf.Tensor]:
    """One gradient step on task ``task``: clip, apply, anneal the rate.

    Compiled once per task. Returns the loss metrics plus ``grad_norm`` (before
    clipping) and ``learning_rate`` (the rate this step used).
    """
    with self._lock:
      step = self._train_steps.get(task)
      if step is None:
        # No data-dependent Python control flow: autograph only slows tracing.
        step = tf.function(lambda b, task=task: self.update(task, b),
                           autograph=False)
        self._train_steps[task] = step
    return step(batch)

  def checkpoint_items(self) -> dict[str, Any]:
    """Objects to save: ``tf.train.Checkpoint(**learner.checkpoint_items())``."""
    return dict(network=self._network, optimizer=self.optimizer,
                learning_rate=self.learning_rate, steps_done=self.steps_done)
