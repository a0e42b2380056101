"""Acting and learning threads of the asynchronous trainer.

An ``Actor`` steps a block of environments (the workers of one or more tasks),
acting in all of them with one batched inference per step (each environment
with its own task's policy pi_i), and queues one unroll of ``unroll_length``
steps per task. ``LearnerThread``s take unrolls off the queue and apply one
asynchronous gradient step each through the shared learner
(``Learner.train_step``: one set of parameters, one RMSProp state), while the
actors go on acting with the parameters of the moment: the asynchronous A3C
scheme, with inference batched.

The policy lag of an update is the number of updates applied between the first
action of its unroll and the update itself. The learner corrects for it with
V-trace (``losses``), from the behaviour logits every unroll carries.
"""

from __future__ import annotations

import collections
import queue as queue_lib
import threading
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from distral_tf.agents import cpu_use
from distral_tf.agents import learner as learner_lib

tfd = tfp.distributions


class Progress:
  """Counters shared by actors, evaluator and monitor (thread safe)."""

  def __init__(self, task_names: Sequence[str], budget: int,
               frames: Sequence[int] | None = None):
    self.task_names = tuple(task_names)
    self.budget = budget
    self.frames = np.array(frames if frames is not None else [0] * len(task_names),
                           dtype=np.int64)
    self.updates = 0
    self.interrupted_episodes = 0
    self.dropped_unrolls = 0
    self.recent_returns: dict[tuple[str, str], list[float]] = {}
    self.metrics: dict[int, dict[str, float]] = {}
    # Policy lag of the updates: per task, sum, count and maximum over the run.
    n = len(self.task_names)
    self._lag_sum = np.zeros(n)
    self._lag_count = np.zeros(n, np.int64)
    self._lag_max = np.zeros(n, np.int64)
    self._recent_lags: collections.deque[int] = collections.deque(maxlen=100)
    self.lock = threading.Lock()

  def add_dropped(self) -> None:
    """Counts one unroll dropped for its policy lag (``max_policy_lag``)."""
    with self.lock:
      self.dropped_unrolls += 1

  def add_update(self, task_sizes: Sequence[int], lag: int,
                 metrics: dict[str, float]) -> None:
    """Counts one applied update of the tasks with ``task_sizes > 0``.

    ``metrics`` as ``Learner.train_step`` returns them; each task keeps its
    own and the common ones (gradient norm, learning rate).
    """
    common, per_task = learner_lib.split_metrics(metrics)
    with self.lock:
      self.updates += 1
      self._recent_lags.append(lag)
      for task, n in enumerate(task_sizes):
        if n:
          self.metrics[task] = dict(per_task.get(task, {}), **common)
          self._lag_sum[task] += lag
          self._lag_count[task] += 1
          self._lag_max[task] = max(self._lag_max[task], lag)

  def recent_lag(self) -> float:
    """Mean policy lag of the last 100 updates (0 before any)."""
    with self.lock:
      return float(np.mean(self._recent_lags)) if self._recent_lags else 0.0

  def lag_stats(self) -> dict[str, object]:
    """Policy lag over the run: mean and max overall and per task name."""
    with self.lock:
      count = int(self._lag_count.sum())
      per_task = {name: dict(mean=float(self._lag_sum[t] / max(self._lag_count[t], 1)),
                             max=int(self._lag_max[t]))
                  for t, name in enumerate(self.task_names)}
      return dict(mean_policy_lag=float(self._lag_sum.sum() / max(count, 1)),
                  max_policy_lag=int(self._lag_max.max()) if count else 0,
                  policy_lag_per_task=per_task,
                  dropped_unrolls=int(self.dropped_unrolls))

  def add_frames(self, task: int, n: int) -> int:
    with self.lock:
      self.frames[task] += n
      return int(self.frames[task])

  def add_step(self, frames: np.ndarray) -> None:
    """Adds ``frames[t]`` to every task t's frames (one actor step)."""
    with self.lock:
      self.frames += frames

  def task_done(self, task: int) -> bool:
    with self.lock:
      return self.frames[task] >= self.budget

  def all_done(self) -> bool:
    with self.lock:
      return bool(np.all(self.frames >= self.budget))

  def add_return(self, task_name: str, policy: str, value: float,
                 keep: int = 20) -> None:
    with self.lock:
      values = self.recent_returns.setdefault((task_name, policy), [])
      values.append(value)
      del values[:-keep]


class EpisodeRecorder:
  """Writes finished episodes (thread safe) and keeps recent returns."""

  def __init__(self, writer, progress: Progress):
    self._writer = writer
    self._progress = progress
    self._lock = threading.Lock()

  def record(self, task: int, episode_return: float, length: int,
             policy: str = 'task', env_steps: int | None = None) -> None:
    name = self._progress.task_names[task]
    if env_steps is None:
      with self._progress.lock:
        env_steps = int(self._progress.frames[task])
    with self._lock:
      self._writer.write(name, env_steps, episode_return, length, policy)
    self._progress.add_return(name, policy, episode_return)

  def flush(self) -> None:
    with self._lock:
      self._writer.flush()


class FixedShapeFunction:
  """A ``tf.function`` called always with arguments of the first call's shapes.

  The first call traces it for those shapes and dtypes; later calls go to
  that concrete function's flat call, skipping both ``tf.function``'s lookup
  of its traces and the concrete function's matching of the arguments
  against its signature. An actor pays those at every step, in the Python
  of its own thread (docs/dmlab.md, "Training speed"). Arguments of other
  shapes or dtypes raise ``ValueError``.
  """

  def __init__(self, function):
    self._function = function
    self._concrete = None
    self._signature: list[tuple[tuple[int, ...], tf.DType]] = []

  def __call__(self, *args):
    flat = [tf.convert_to_tensor(x) for x in tf.nest.flatten(args)]
    signature = [(tuple(x.shape), x.dtype) for x in flat]
    if self._concrete is None:
      self._concrete = self._function.get_concrete_function(*tf.nest.pack_sequence_as(
          args, [tf.TensorSpec(shape, dtype) for shape, dtype in signature]))
      self._signature = signature
    elif signature != self._signature:
      raise ValueError(f'arguments of shapes and dtypes {signature}, traced for '
                       f'{self._signature}')
    # What ``ConcreteFunction.__call__`` does once it has matched the arguments
    # (TensorFlow 2.21): the flat inputs in the order of ``tf.nest.flatten``,
    # then the captured variables, read at this call.
    return self._concrete._call_flat(flat, self._concrete.captured_inputs)  # pylint: disable=protected-access


def make_act_fn(network, task_sizes: Sequence[int]) -> FixedShapeFunction:
  """One batched inference step of every task's pi_i over a block of environments.

  The environments are ordered by task: ``task_sizes[t]`` consecutive ones
  belong to task t and act with its policy. One call serves them all
  (``DistralNetwork.unroll_tasks``). Returns sampled actions, the logits they
  were sampled from (the behaviour policy, for V-trace), the task values and
  the next state.
  """
  sizes = tuple(int(n) for n in task_sizes)

  @tf.function
  def act(observations, first, state):
    output, state = network.unroll_tasks(sizes, observations[tf.newaxis],
                                         first[tf.newaxis], state)
    logits = output.logits[0]
    actions = tfd.Categorical(logits=logits, dtype=tf.int32).sample()
    return actions, logits, output.values[0], state

  return FixedShapeFunction(act)


def make_pi0_act_fn(network) -> FixedShapeFunction:
  """One batched inference step of the distilled policy pi_0."""

  @tf.function
  def act(observations, first, state):
    logits, state = network.pi0_unroll(observations[tf.newaxis], first[tf.newaxis],
                                       state)
    return tfd.Categorical(logits=logits[0], dtype=tf.int32).sample(), state

  return FixedShapeFunction(act)


class Actor:
  """Steps a batch of environments (of one or more tasks) and queues their unrolls.

  ``envs`` is an ``envs.batch.EnvBatch`` whose environments belong to
  ``tasks`` (one task index per environment, sorted, of ``num_tasks``).
  Every ``unroll_length`` steps it puts ``(task_sizes, Unroll,
  updates_at_start)`` on ``queue``: one unroll of all its environments.
  Where a step ended an episode by a time limit, the task value of the
  episode's final observation (``act_fn`` run on it with the episode's state)
  becomes that step's bootstrap value (``Unroll.final_values``).
  """

  def __init__(self, envs, tasks: Sequence[int], num_tasks: int, network, act_fn: Callable,
               progress: Progress, recorder: EpisodeRecorder, unroll_length: int,
               frames_per_step: int, unroll_queue: queue_lib.Queue):
    self._tasks = np.asarray(tasks)
    if np.any(np.diff(self._tasks) < 0):
      raise ValueError(f'environments must be sorted by task, got {self._tasks}')
    self._envs = envs
    self._network = network
    self._act = act_fn
    self._progress = progress
    self._recorder = recorder
    self._unroll_length = unroll_length
    self._frames_per_step = frames_per_step
    self._queue = unroll_queue
    # Per task: its contiguous block of environments.
    self._blocks = {}
    for task in sorted(set(self._tasks.tolist())):
      idx = np.flatnonzero(self._tasks == task)
      self._blocks[task] = (int(idx[0]), int(idx[-1]) + 1)
    # Environments per task index, for the learner (``Learner.train_step``).
    self.task_sizes = tuple(int(np.sum(self._tasks == t)) for t in range(num_tasks))
    self._step_frames = np.asarray(self.task_sizes, np.int64) * frames_per_step
    self.error: BaseException | None = None
    self.done = False
    self.stepped = False  # Every environment has stepped once (start-up is over).
    self.clock = cpu_use.ThreadClock()

  def run(self, stop: threading.Event) -> None:
    try:
      self._run(stop)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()
    finally:
      self.done = True

  @property
  def environments(self) -> list:
    """Its single environments (none for a level set's own vectorised batch)."""
    return list(getattr(self._envs, 'envs', []))

  def _done(self) -> bool:
    return all(self._progress.task_done(t) for t in self._blocks)

  def _put(self, item, stop: threading.Event) -> bool:
    while not stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue_lib.Full:
        continue
    return False

  def _run(self, stop: threading.Event) -> None:
    clock = self.clock
    clock.start()
    observations = self._envs.reset()
    n = len(observations)
    first = np.ones(n, dtype=bool)
    state = self._network.initial_state(n)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    no_first = np.zeros(n, bool)
    clock.mark('observations')
    while not stop.is_set() and not self._done():
      initial_state = state
      updates_before = self._progress.updates
      obs_buf, first_buf = [observations], [first]
      act_buf, logit_buf, rew_buf, disc_buf, final_buf = [], [], [], [], []
      for _ in range(self._unroll_length):
        actions, logits, values, state = self._act(observations, first, state)
        actions, logits = np.asarray(actions), np.asarray(logits)
        clock.mark('inference')
        step = self._envs.step(actions)
        clock.mark('observations')
        self.stepped = True
        self._progress.add_step(self._step_frames)
        final_values = np.zeros(n, np.float32)
        cut = step.cut
        if cut.any():
          # The value of each cut episode's final observation, from its state.
          _, _, values_after, _ = self._act(step.final_observations, no_first, state)
          final_values[cut] = np.asarray(values_after)[cut]
        if step.lost.any():  # Lost step: bootstrap from where it started.
          final_values[step.lost] = np.asarray(values)[step.lost]
          with self._progress.lock:
            self._progress.interrupted_episodes += int(step.lost.sum())
        returns += step.rewards
        lengths += 1
        for i in np.flatnonzero(step.ends & ~step.lost):
          self._recorder.record(int(self._tasks[i]), float(returns[i]), int(lengths[i]))
        returns[step.ends] = 0.0
        lengths[step.ends] = 0
        observations, first = step.observations, step.ends
        obs_buf.append(observations)
        first_buf.append(first)
        act_buf.append(actions.astype(np.int32))
        logit_buf.append(logits)
        rew_buf.append(step.rewards)
        disc_buf.append(step.discounts)
        final_buf.append(final_values)
        clock.mark('other')
      obs, fst, act, rew, disc, logit, final = (
          tf.constant(np.stack(buf)) for buf in (obs_buf, first_buf, act_buf, rew_buf,
                                                 disc_buf, logit_buf, final_buf))
      batch = learner_lib.Unroll(
          observations=obs, first=fst, actions=act, rewards=rew, discounts=disc,
          initial_state=initial_state, behaviour_logits=logit, final_values=final)
      clock.mark('other')
      if not self._put((self.task_sizes, batch, updates_before), stop):
        return


class LearnerThread:
  """Applies one asynchronous gradient step per queued unroll (shared RMSProp).

  An unroll whose policy lag (updates since its first action) exceeds
  ``max_policy_lag`` is dropped, counted in ``Progress.dropped_unrolls``.
  """
  learns = True  # Its CPU is the run's learning (``run_loop``'s accounting).

  def __init__(self, learner, unroll_queue: queue_lib.Queue, progress: Progress,
               actors_done: Callable[[], bool], max_policy_lag: int = 0):
    self._learner = learner
    self._queue = unroll_queue
    self._progress = progress
    self._actors_done = actors_done
    self._max_policy_lag = max_policy_lag
    self.error: BaseException | None = None
    self.clock = cpu_use.ThreadClock()

  def run(self, stop: threading.Event) -> None:
    clock = self.clock
    clock.start()
    try:
      while not stop.is_set():
        try:
          task_sizes, batch, updates_before = self._queue.get(timeout=0.1)
        except queue_lib.Empty:
          if self._actors_done():
            return
          continue
        finally:
          clock.mark('other')
        with self._progress.lock:
          lag = self._progress.updates - updates_before
        if self._max_policy_lag and lag > self._max_policy_lag:
          self._progress.add_dropped()
          continue
        metrics = {k: float(v) for k, v in self._learner.train_step(task_sizes,
                                                                     batch).items()}
        clock.mark('learning')
        learner_lib.check_finite(metrics, self._progress.updates + 1)
        self._progress.add_update(task_sizes, lag, metrics)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()
