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
action of its unroll and the update itself.
"""

from __future__ import annotations

import queue as queue_lib
import threading
import time
from typing import Any, Callable, Sequence

import dm_env
import numpy as np
import tensorflow as tf

from distral_tf.agents import learner as learner_lib

# Seeds of environments: distinct per run, task and worker.
SEED_STRIDE_TASK = 10_007
SEED_STRIDE_RUN = 1_000_003


def env_seed(run_seed: int, task_index: int, worker: int) -> int:
  return run_seed * SEED_STRIDE_RUN + task_index * SEED_STRIDE_TASK + worker


class LocalEnv:
  """An environment stepped in the calling thread, with ``EnvProcess``'s interface."""

  def __init__(self, make_env: Callable[[int], dm_env.Environment], seed: int,
               name: str = 'env'):
    self._env = make_env(seed)
    self._timestep = None
    self.name = name
    self.restarts = 0

  def observation_spec(self):
    return self._env.observation_spec()

  def action_spec(self):
    return self._env.action_spec()

  def send_step(self, action) -> None:
    self._timestep = self._env.step(action)

  def send_reset(self) -> None:
    self._timestep = self._env.reset()

  def receive(self) -> dm_env.TimeStep:
    return self._timestep

  def reset(self) -> dm_env.TimeStep:
    return self._env.reset()

  def step(self, action) -> dm_env.TimeStep:
    return self._env.step(action)

  def close(self) -> None:
    self._env.close()


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
    self.recent_returns: dict[tuple[str, str], list[float]] = {}
    self.metrics: dict[int, dict[str, float]] = {}
    self.policy_lags: list[int] = []
    self.lock = threading.Lock()

  def add_frames(self, task: int, n: int) -> int:
    with self.lock:
      self.frames[task] += n
      return int(self.frames[task])

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


def make_act_fn(network, task_sizes: Sequence[int]) -> Callable:
  """One batched inference step of every task's pi_i over a block of environments.

  The environments are ordered by task: ``task_sizes[t]`` consecutive ones
  belong to task t and act with its policy. One call serves them all
  (``DistralNetwork.unroll_tasks``).
  """
  sizes = tuple(int(n) for n in task_sizes)

  @tf.function
  def act(observations, first, state):
    logits, state = network.unroll_tasks(sizes, observations[tf.newaxis],
                                         first[tf.newaxis], state)
    actions = tf.random.categorical(logits[0], 1, dtype=tf.int32)
    return actions[:, 0], state

  return act


def make_pi0_act_fn(network) -> Callable:
  """One batched inference step of the distilled policy pi_0."""

  @tf.function
  def act(observations, first, state):
    logits, state = network.pi0_unroll(observations[tf.newaxis], first[tf.newaxis],
                                       state)
    return tf.random.categorical(logits[0], 1, dtype=tf.int32)[:, 0], state

  return act


class Actor:
  """Steps a block of environments (of one or more tasks) and queues their unrolls.

  ``envs`` is a list of ``(task, env)`` sorted by task. Every ``unroll_length``
  steps it puts one ``(task, Unroll, updates_at_start)`` per task on ``queue``.
  """

  def __init__(self, envs: Sequence[tuple[int, Any]], network, act_fn: Callable,
               progress: Progress, recorder: EpisodeRecorder, unroll_length: int,
               frames_per_step: int, unroll_queue: queue_lib.Queue):
    self._tasks = np.array([t for t, _ in envs])
    self._envs = [e for _, e in envs]
    self._network = network
    self._act = act_fn
    self._progress = progress
    self._recorder = recorder
    self._unroll_length = unroll_length
    self._frames_per_step = frames_per_step
    self._queue = unroll_queue
    # Per task: its contiguous block of environments and the frames one step adds.
    self._blocks = {}
    for task in sorted(set(self._tasks.tolist())):
      idx = np.flatnonzero(self._tasks == task)
      self._blocks[task] = (int(idx[0]), int(idx[-1]) + 1)
    self.error: BaseException | None = None
    self.done = False

  def run(self, stop: threading.Event) -> None:
    try:
      self._run(stop)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()
    finally:
      self.done = True

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
    n = len(self._envs)
    for env in self._envs:
      env.send_reset()
    observations = np.stack([env.receive().observation for env in self._envs])
    first = np.ones(n, dtype=bool)
    state = self._network.initial_state(n)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    while not stop.is_set() and not self._done():
      initial_state = state
      updates_before = self._progress.updates
      obs_buf, first_buf = [observations], [first]
      act_buf, rew_buf, disc_buf = [], [], []
      for _ in range(self._unroll_length):
        actions, state = self._act(tf.constant(observations), tf.constant(first), state)
        actions = actions.numpy()
        for env, action in zip(self._envs, actions):
          env.send_step(int(action))
        timesteps = [env.receive() for env in self._envs]
        for task, (a, b) in self._blocks.items():
          self._progress.add_frames(task, (b - a) * self._frames_per_step)
        rewards = np.zeros(n, dtype=np.float32)
        discounts = np.ones(n, dtype=np.float32)
        first = np.zeros(n, dtype=bool)
        new_obs = []
        for i, ts in enumerate(timesteps):
          if ts.first():  # The environment process died and was restarted.
            with self._progress.lock:
              self._progress.interrupted_episodes += 1
            returns[i], lengths[i], first[i] = 0.0, 0, True
            new_obs.append(ts.observation)
            continue
          rewards[i] = ts.reward
          discounts[i] = ts.discount
          returns[i] += ts.reward
          lengths[i] += 1
          if ts.last():
            self._recorder.record(int(self._tasks[i]), float(returns[i]),
                                  int(lengths[i]))
            returns[i], lengths[i], first[i] = 0.0, 0, True
            self._envs[i].send_reset()
            new_obs.append(None)
          else:
            new_obs.append(ts.observation)
        for i, ob in enumerate(new_obs):
          if ob is None:
            new_obs[i] = self._envs[i].receive().observation
        observations = np.stack(new_obs)
        obs_buf.append(observations)
        first_buf.append(first)
        act_buf.append(actions.astype(np.int32))
        rew_buf.append(rewards)
        disc_buf.append(discounts)
      obs_seq, first_seq = np.stack(obs_buf), np.stack(first_buf)
      act_seq, rew_seq, disc_seq = np.stack(act_buf), np.stack(rew_buf), np.stack(disc_buf)
      for task, (a, b) in self._blocks.items():
        batch = learner_lib.Unroll(
            observations=tf.constant(obs_seq[:, a:b]),
            first=tf.constant(first_seq[:, a:b]),
            actions=tf.constant(act_seq[:, a:b]),
            rewards=tf.constant(rew_seq[:, a:b]),
            discounts=tf.constant(disc_seq[:, a:b]),
            initial_state=tf.nest.map_structure(lambda x, a=a, b=b: x[a:b],
                                                initial_state))
        if not self._put((task, batch, updates_before), stop):
          return


class LearnerThread:
  """Applies one asynchronous gradient step per queued unroll (shared RMSProp)."""

  def __init__(self, learner, unroll_queue: queue_lib.Queue, progress: Progress,
               actors_done: Callable[[], bool]):
    self._learner = learner
    self._queue = unroll_queue
    self._progress = progress
    self._actors_done = actors_done
    self.error: BaseException | None = None

  def run(self, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        try:
          task, batch, updates_before = self._queue.get(timeout=0.1)
        except queue_lib.Empty:
          if self._actors_done():
            return
          continue
        metrics = self._learner.train_step(task, batch)
        metrics = {k: float(v) for k, v in metrics.items()}
        with self._progress.lock:
          self._progress.policy_lags.append(self._progress.updates - updates_before)
          self._progress.updates += 1
          self._progress.metrics[task] = metrics
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()


class Evaluator:
  """Evaluates pi_0 on every task at intervals of frames (rows ``policy=distilled``)."""

  def __init__(self, envs: Sequence[Any], act_fn: Callable, network,
               progress: Progress, recorder: EpisodeRecorder, interval: int,
               episodes: int, next_eval: int = 0):
    self._envs = list(envs)  # One per task.
    self._act = act_fn
    self._network = network
    self._progress = progress
    self._recorder = recorder
    self._interval = interval
    self._episodes = episodes
    self.next_eval = next_eval
    self.error: BaseException | None = None

  def run(self, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        with self._progress.lock:
          reached = int(self._progress.frames.min())
        if reached >= self.next_eval:
          self.evaluate(stop)
          self.next_eval += self._interval
        elif self._progress.all_done():
          return
        else:
          time.sleep(0.2)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()

  def evaluate(self, stop: threading.Event) -> None:
    for task, env in enumerate(self._envs):
      with self._progress.lock:
        steps = int(self._progress.frames[task])
      for _ in range(self._episodes):
        if stop.is_set():
          return
        episode_return, length = self._episode(env)
        if np.isnan(episode_return):
          continue
        self._recorder.record(task, episode_return, length, policy='distilled',
                              env_steps=steps)

  def _episode(self, env) -> tuple[float, int]:
    ts = env.reset()
    state = self._network.pi0_initial_state(1)
    first = np.ones(1, dtype=bool)
    total, length = 0.0, 0
    while True:
      action, state = self._act(tf.constant(ts.observation[None]), tf.constant(first),
                                state)
      ts = env.step(int(action.numpy()[0]))
      first = np.zeros(1, dtype=bool)
      if ts.first():  # Interrupted by a crash; the episode is not recorded.
        return float('nan'), length
      total += ts.reward
      length += 1
      if ts.last():
        return total, length
