"""Sonnet 2 networks of the deep agents (paper, appendix B.2; eqs. 6, 8, 11-12).

A *column* is the A3C network of Mnih et al. (2016): a torso, fc 256 + ReLU,
an LSTM(256), and linear read-outs of policy logits and value (256 is
``hidden_size``, the paper's width; the small grid world defaults to less).
With ``lstm_skip`` (the default) the read-outs see the LSTM's output plus the
fc layer's (a residual connection around the LSTM): the paper's column has no
such path, and without it the pixel column had not learned minigrid's easiest
task after 100,000 frames (docs/agents.md, "The skip connection"). The pixel torso
is conv(16, 8x8, stride 4) - ReLU - conv(32, 4x4, stride 2) - ReLU; vector
observations go through a one-hidden-layer MLP instead.

``DistralNetwork`` arranges columns by architecture (``algorithms.py``):

* ``'separate'``: one column per task; distilled algorithms (KL_1col,
  KL+ent_1col) add a separate pi_0 column whose logits are h (eq. 6).
* ``'shared'``: one column for every task (A3C_multitask).
* ``'two_column'``: one column f_i per task plus one shared column h; the task
  logits are ``alpha * h + f_i`` (eq. 8 with f standing for beta times the
  soft advantage, eqs. 11-12) and pi_0 = softmax h (eq. 6). A3C_2col, which
  has no KL term, uses ``h + f_i``.

Time-major everywhere: observations ``[T, B, ...]``. The torso and fc run on
all ``T * B`` frames at once; only the LSTM steps through time, resetting its
state to zeros wherever ``first`` is True.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sonnet as snt
import tensorflow as tf
import tree

from distral_tf.agents import algorithms
from distral_tf.agents import lstm as lstm_lib

HIDDEN_SIZE = 256          # fc and LSTM width (paper, B.2).
VECTOR_TORSO_SIZE = 64     # hidden layer of the vector-observation torso.
POLICY_INIT_STDDEV = 0.01  # small logits at initialisation: near-uniform pi.
OBSERVATION_KINDS = ('pixels', 'vector')


class NetOutput(NamedTuple):
  """What one task's forward pass produces, time-major."""
  logits: tf.Tensor             # [T,B,A] task policy pi_i's logits.
  values: tf.Tensor             # [T,B] the task's value estimate.
  pi0_logits: tf.Tensor | None  # [T,B,A] h, pi_0's logits; None without h.
  pi0_values: tf.Tensor | None  # [T,B] value of the h column; None without h.


class _ResetCore(snt.RNNCore):
  """Wraps an RNN core; inputs ``(x, keep)`` with keep ``[B, 1]`` 0 or 1.

  The state is multiplied by ``keep`` before the step: zeroed where an
  episode starts.
  """

  def __init__(self, core: snt.RNNCore, name: str = 'reset_core'):
    super().__init__(name=name)
    self._core = core

  def __call__(self, inputs, prev_state):
    x, keep = inputs
    prev_state = tree.map_structure(lambda s: s * keep, prev_state)
    return self._core(x, prev_state)

  def initial_state(self, batch_size: int):
    return self._core.initial_state(batch_size)


def _leading_dims(x: tf.Tensor) -> tuple[Any, Any]:
  """``(T, B)`` of ``x``, as python ints where static, else scalar tensors."""
  dynamic = tf.shape(x)
  return tuple(x.shape[i] if x.shape[i] is not None else dynamic[i]
               for i in range(2))


def _to_float(observations: tf.Tensor) -> tf.Tensor:
  """uint8 pixels scaled to [0, 1]; float observations unchanged."""
  if observations.dtype == tf.uint8:
    return tf.cast(observations, tf.float32) * (1.0 / 255.0)
  return tf.cast(observations, tf.float32)


class Column(snt.Module):
  """Torso, fc 256 + ReLU, LSTM(256) [+ fc skip], linear policy and value read-outs."""

  def __init__(self, num_actions: int, observation_kind: str,
               name: str | None = None, hidden_size: int = HIDDEN_SIZE,
               lstm_skip: bool = True):
    super().__init__(name=name)
    self._hidden_size = hidden_size
    self._lstm_skip = lstm_skip
    if observation_kind not in OBSERVATION_KINDS:
      raise ValueError(f'observation_kind must be one of {OBSERVATION_KINDS}, '
                       f'got {observation_kind!r}')
    self._observation_kind = observation_kind
    if observation_kind == 'pixels':
      self._torso = snt.Sequential([
          snt.Conv2D(16, 8, stride=4, padding='VALID', name='conv1'),
          tf.nn.relu,
          snt.Conv2D(32, 4, stride=2, padding='VALID', name='conv2'),
          tf.nn.relu,
          snt.Flatten(),
      ], name='torso')
    else:
      self._torso = snt.Sequential([
          snt.Linear(VECTOR_TORSO_SIZE, name='mlp'),
          tf.nn.relu,
      ], name='torso')
    self._fc = snt.Linear(hidden_size, name='fc')
    self._lstm = snt.LSTM(hidden_size, name='lstm')
    self._core = _ResetCore(self._lstm, name='reset_core')
    self._policy = snt.Linear(
        num_actions, w_init=snt.initializers.TruncatedNormal(
            stddev=POLICY_INIT_STDDEV), name='policy')
    self._value = snt.Linear(1, name='value')

  def initial_state(self, batch_size: int) -> snt.LSTMState:
    return self._lstm.initial_state(batch_size)

  def _embed(self, frames: tf.Tensor) -> tf.Tensor:
    """Torso and fc on a batch of frames ``[N, ...]`` -> ``[N, 256]``."""
    return tf.nn.relu(self._fc(self._torso(_to_float(frames))))

  def unroll(self, observations: tf.Tensor, first: tf.Tensor,
             state: snt.LSTMState
             ) -> tuple[tf.Tensor, tf.Tensor, snt.LSTMState]:
    """Runs the column over ``[T, B, ...]``; returns logits, values, state.

    Pixels are uint8 (scaled here to [0, 1]) or float32 already in [0, 1].
    """
    t, b = _leading_dims(observations)
    frames = tf.reshape(observations, [-1] + observations.shape[2:].as_list())
    embedded = tf.reshape(self._embed(frames), [t, b, self._hidden_size])
    keep = 1.0 - tf.cast(first, tf.float32)[:, :, None]  # [T, B, 1]
    if observations.shape[0] is not None:
      # Static T: an unrolled graph with the gradient written out
      # (``agents/lstm.py``) is faster than a loop on CPU. It reads the LSTM's
      # variables, created by its first call (where stepping it would).
      if not hasattr(self._lstm, 'b'):  # Its bias, the last variable it creates.
        self._lstm(embedded[0], state)
      core_out, state = lstm_lib.unroll(self._lstm, embedded, keep, state)
    else:
      core_out, state = snt.dynamic_unroll(self._core, (embedded, keep), state)
    if self._lstm_skip:
      core_out = core_out + embedded  # The read-outs see fc(x_t) directly too.
    flat = tf.reshape(core_out, [t * b, self._hidden_size])
    logits = tf.reshape(self._policy(flat), [t, b, -1])
    values = tf.reshape(self._value(flat), [t, b])
    return logits, values, state


class DistralNetwork(snt.Module):
  """The columns of every task and pi_0 for one algorithm (see module doc)."""

  def __init__(self, algorithm: algorithms.Algorithm, num_tasks: int,
               num_actions: int, observation_kind: str, alpha: float,
               name: str = 'distral_network', hidden_size: int = HIDDEN_SIZE,
               lstm_skip: bool = True):
    super().__init__(name=name)
    if num_tasks < 1:
      raise ValueError(f'num_tasks must be >= 1, got {num_tasks}')
    self._algorithm = algorithm
    self._num_tasks = num_tasks
    self._num_actions = num_actions
    # A3C_2col has no KL term (alpha = 0) but still adds the shared column:
    # its task logits are h + f (EQUATIONS.md, table).
    if algorithm.architecture == 'two_column' and not algorithm.distilled:
      self._logit_alpha = 1.0
    else:
      self._logit_alpha = float(alpha)
    with self.name_scope:
      if algorithm.architecture == 'shared':
        self.columns = [Column(num_actions, observation_kind, name='shared',
                               hidden_size=hidden_size, lstm_skip=lstm_skip)]
      else:
        self.columns = [Column(num_actions, observation_kind, name=f'task_{i}',
                               hidden_size=hidden_size, lstm_skip=lstm_skip)
                        for i in range(num_tasks)]
      if algorithm.has_pi0:
        self.pi0 = Column(num_actions, observation_kind, name='pi0',
                          hidden_size=hidden_size, lstm_skip=lstm_skip)
      else:
        self.pi0 = None

  @property
  def algorithm(self) -> algorithms.Algorithm:
    return self._algorithm

  @property
  def num_tasks(self) -> int:
    return self._num_tasks

  @property
  def logit_alpha(self) -> float:
    """The weight of h in the task logits (two-column architecture)."""
    return self._logit_alpha

  def _task_column(self, task: int) -> Column:
    if not 0 <= task < self._num_tasks:
      raise ValueError(f'task must be in [0, {self._num_tasks}), got {task}')
    return self.columns[0 if len(self.columns) == 1 else task]

  def initial_state(self, batch_size: int) -> tuple[snt.LSTMState, ...]:
    """State of one task's forward pass: (task column[, pi_0 column])."""
    states = [self.columns[0].initial_state(batch_size)]
    if self.pi0 is not None:
      states.append(self.pi0.initial_state(batch_size))
    return tuple(states)

  def unroll(self, task: int, observations: tf.Tensor, first: tf.Tensor,
             state: Any) -> tuple[NetOutput, Any]:
    """Task ``task``'s policy and value over ``[T, B, ...]`` (eqs. 6, 8, 12).

    Args:
      task: python int; ignored by the shared architecture.
      observations: ``[T, B, ...]``.
      first: ``[T, B]`` bool; where True the state is reset to zeros before
        that step (an episode starts there).
      state: the state before step 0, as ``initial_state``.

    Returns:
      ``NetOutput`` and the state after the last step.
    """
    column = self._task_column(task)
    if self.pi0 is not None:
      observations = _to_float(observations)  # Convert once for both columns.
    f, values, task_state = column.unroll(observations, first, state[0])
    if self.pi0 is None:
      return NetOutput(f, values, None, None), (task_state,)
    h, pi0_values, pi0_state = self.pi0.unroll(
        observations, first, state[1])
    if self._algorithm.architecture == 'two_column':
      logits = self._logit_alpha * h + f
    else:
      logits = f
    return NetOutput(logits, values, h, pi0_values), (task_state, pi0_state)

  def unroll_tasks(self, task_sizes: tuple[int, ...], observations: tf.Tensor,
                   first: tf.Tensor, state: Any) -> tuple[NetOutput, Any]:
    """Every task's policy and value over one batch grouped by task (eqs. 6, 8).

    The first ``task_sizes[0]`` environments of the batch belong to task 0,
    the next ``task_sizes[1]`` to task 1, and so on. Equal to ``unroll`` of
    each task on its block, concatenated along the batch, with each column
    called once: pi_0's (or the shared) column on the whole batch.

    Returns:
      ``NetOutput`` over the batch (each column with its task's policy and
      value) and the state after the last step.
    """
    if self.pi0 is not None:
      observations = _to_float(observations)  # Convert once for every column.
    if len(self.columns) == 1:  # One column for every task.
      blocks = [(0, 0, sum(task_sizes))]
    else:
      ends = [sum(task_sizes[:i + 1]) for i in range(len(task_sizes))]
      blocks = [(task, end - n, end) for task, (n, end) in enumerate(zip(task_sizes, ends))
                if n > 0]
    fs, vs, task_states = [], [], []
    for task, a, b in blocks:
      f, v, task_state = self.columns[task].unroll(
          observations[:, a:b], first[:, a:b],
          tree.map_structure(lambda x, a=a, b=b: x[a:b], state[0]))
      fs.append(f)
      vs.append(v)
      task_states.append(task_state)
    f, values = tf.concat(fs, axis=1), tf.concat(vs, axis=1)
    task_state = tree.map_structure(lambda *xs: tf.concat(xs, axis=0), *task_states)
    if self.pi0 is None:
      return NetOutput(f, values, None, None), (task_state,)
    h, pi0_values, pi0_state = self.pi0.unroll(observations, first, state[1])
    logits = self._logit_alpha * h + f if self._algorithm.architecture == 'two_column' else f
    return NetOutput(logits, values, h, pi0_values), (task_state, pi0_state)

  def _pi0_policy_column(self) -> Column:
    if self.pi0 is not None:
      return self.pi0
    if self._algorithm.architecture == 'shared':
      return self.columns[0]  # A3C_multitask's common policy.
    raise ValueError(f'{self._algorithm.name} has no shared policy pi_0')

  def pi0_initial_state(self, batch_size: int) -> snt.LSTMState:
    """State of ``pi0_unroll``."""
    return self._pi0_policy_column().initial_state(batch_size)

  def pi0_unroll(self, observations: tf.Tensor, first: tf.Tensor,
                 state: snt.LSTMState) -> tuple[tf.Tensor, snt.LSTMState]:
    """pi_0's logits h ``[T, B, A]`` alone (eq. 6), to evaluate pi_0.

    For A3C_multitask this is the shared network's policy; A3C has none.
    """
    logits, _, state = self._pi0_policy_column().unroll(
        observations, first, state)
    return logits, state

  def build(self, observation_shape: tuple[int, ...],
            observation_dtype: Any) -> None:
    """Creates every variable by unrolling each task once on zeros."""
    with tf.init_scope():
      obs = tf.zeros((1, 1) + tuple(observation_shape), observation_dtype)
      first = tf.ones((1, 1), tf.bool)
      for task in range(self._num_tasks):
        self.unroll(task, obs, first, self.initial_state(1))

  def pi0_variables(self) -> list[tf.Variable]:
    """pi_0's variables: the distilled network (1col) or shared column (2col)."""
    if self.pi0 is None:
      raise ValueError(f'{self._algorithm.name} has no pi_0 column')
    return list(self.pi0.trainable_variables)

  def task_variables(self, task: int) -> list[tf.Variable]:
    """Trainable variables task ``task``'s loss touches (its columns, pi_0)."""
    variables = list(self._task_column(task).trainable_variables)
    if self.pi0 is not None:
      variables += list(self.pi0.trainable_variables)
    if not variables:
      raise ValueError('the network has no variables yet; call build() first')
    return variables
