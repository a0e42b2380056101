"""A batch of environments stepped together: what an actor thread acts in.

``EnvBatch`` is the interface: ``reset()`` starts every episode, ``step``
takes one action per environment and returns a ``BatchStep``. Finished
episodes restart inside ``step``: the observations it returns are the next
ones to act on (a new episode's first where one ended), and the final
observations of episodes cut by a time limit come separately, for the
bootstrap value of their last step (``learner.Unroll``).

Two implementations: ``ProcessEnvBatch`` over single ``dm_env`` environments
(each in its own process, ``envs.process.EnvProcess``, or stepped in the
calling thread, ``LocalEnv``), and level sets' own vectorised ones (the
two-room grid world steps all its copies at once in numpy,
``two_rooms.TwoRoomsEnvBatch``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import dm_env
import numpy as np

from distral_tf.envs import level_sets
from distral_tf.envs import process

# Seeds of environments: distinct per run, task and worker.
SEED_STRIDE_TASK = 10_007
SEED_STRIDE_RUN = 1_000_003


def env_seed(run_seed: int, task_index: int, worker: int) -> int:
  return run_seed * SEED_STRIDE_RUN + task_index * SEED_STRIDE_TASK + worker


class BatchStep(NamedTuple):
  """What one step of every environment of a batch returned."""
  rewards: np.ndarray        # [N] float32; 0 where the step was lost.
  discounts: np.ndarray      # [N] float32; 0 at a terminal step, else 1.
  ends: np.ndarray           # [N] bool; the step ended its episode (terminal, cut or lost).
  lost: np.ndarray           # [N] bool; the environment crashed and was restarted.
  observations: np.ndarray   # [N, ...] the next observations to act on.
  # [N, ...] equal to ``observations`` except where an episode was cut by a
  # time limit (ends, discount 1, not lost): there its final observation.
  # None when no episode was cut at this step.
  final_observations: np.ndarray | None

  @property
  def cut(self) -> np.ndarray:
    """Episodes cut by a time limit at this step (they bootstrap)."""
    return self.ends & (self.discounts > 0) & ~self.lost


class EnvBatch(Protocol):
  """Environments stepped together (see the module docstring)."""

  def observation_spec(self) -> Any: ...

  def reset(self) -> np.ndarray: ...

  def step(self, actions: np.ndarray) -> BatchStep: ...

  def close(self) -> None: ...


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


class ProcessEnvBatch:
  """Single environments (``EnvProcess`` or ``LocalEnv``) stepped as a batch.

  Every environment is sent its action before any reply is awaited, so the
  processes step in parallel; the resets of finished episodes likewise.
  """

  def __init__(self, envs: Sequence[Any]):
    self.envs = list(envs)

  def observation_spec(self):
    return self.envs[0].observation_spec()

  def reset(self) -> np.ndarray:
    for env in self.envs:
      env.send_reset()
    return np.stack([env.receive().observation for env in self.envs])

  def step(self, actions: np.ndarray) -> BatchStep:
    n = len(self.envs)
    for env, action in zip(self.envs, actions):
      env.send_step(int(action))
    timesteps = [env.receive() for env in self.envs]
    rewards = np.zeros(n, np.float32)
    discounts = np.ones(n, np.float32)
    ends = np.zeros(n, bool)
    lost = np.zeros(n, bool)
    observations: list[Any] = [None] * n
    finals: dict[int, np.ndarray] = {}
    for i, ts in enumerate(timesteps):
      if ts.first():  # The process died and was restarted: the step is lost.
        ends[i] = lost[i] = True
        observations[i] = ts.observation
        continue
      rewards[i] = ts.reward
      discounts[i] = ts.discount
      if ts.last():
        ends[i] = True
        if ts.discount > 0:
          finals[i] = ts.observation
        self.envs[i].send_reset()
      else:
        observations[i] = ts.observation
    for i in np.flatnonzero(ends & ~lost):
      observations[i] = self.envs[i].receive().observation
    observations = np.stack(observations)
    final_observations = None
    if finals:
      final_observations = observations.copy()
      for i, ob in finals.items():
        final_observations[i] = ob
    return BatchStep(rewards, discounts, ends, lost, observations, final_observations)

  def close(self) -> None:
    for env in self.envs:
      env.close()


def start_envs(level_set: level_sets.LevelSet, specs: Sequence[tuple[int, int, str]],
               use_processes: bool, niceness: int = 0) -> list:
  """A single environment per ``(task index, seed, name)``.

  Each in its own process (``envs.process.EnvProcess``, all started at once,
  at ``niceness``), or stepped in the caller's thread (``LocalEnv``).
  """
  if use_processes:
    return process.start_all([(level_set.tasks[t].make_env, seed, name)
                              for t, seed, name in specs], niceness)
  return [LocalEnv(level_set.tasks[t].make_env, seed, name=name) for t, seed, name in specs]


def thread_specs(level_set: level_sets.LevelSet, seed: int, workers_per_task: int,
                 actor_threads: int, host: tuple[int, int] = (0, 1)
                 ) -> list[list[tuple[int, int, str]]]:
  """Per actor thread of this host, ``(task, seed, 'task_name/worker')`` of its envs.

  See ``make_env_batches``; threads without a worker are left out.
  """
  index, num_hosts = host
  workers = list(range(index, workers_per_task, num_hosts))
  return [[(t, env_seed(seed, t, w), f'{task.name}/{w}')
           for t, task in enumerate(level_set.tasks)
           for w in workers[k::actor_threads]]
          for k in range(min(actor_threads, len(workers)))]


def make_env_batches(level_set: level_sets.LevelSet, seed: int, workers_per_task: int,
                     actor_threads: int, use_processes: bool, niceness: int = 0,
                     host: tuple[int, int] = (0, 1)
                     ) -> list[tuple[EnvBatch, list[int]]]:
  """Per actor thread, its ``EnvBatch`` and the task of each environment in it.

  ``host = (h, H)``: this process steps workers h, h + H, ... of every task
  (one of H hosts of a cluster; ``(0, 1)``: all of them). Of those, thread k
  steps the k-th, (k + K)-th, ... (K actor threads), ordered by task; a
  thread left without workers is left out. A level set with a vectorised
  batch (``LevelSet.make_batch``) steps it in the caller's process unless
  ``use_processes``; otherwise every environment is a single one
  (``start_envs``), seeded apart.
  """
  per_thread = thread_specs(level_set, seed, workers_per_task, actor_threads, host)
  if level_set.make_batch is not None and not use_processes:
    return [(level_set.make_batch([level_set.tasks[t] for t, _, _ in specs],
                                  specs[0][1]),  # Its first environment's seed.
             [t for t, _, _ in specs]) for specs in per_thread]
  specs = [s for specs in per_thread for s in specs]
  if use_processes:
    print(f'Starting {len(specs)} environment processes ...', flush=True)
  start = time.time()
  envs = start_envs(level_set, specs, use_processes, niceness)
  if use_processes:
    print(f'{len(envs)} environments ready in {time.time() - start:.0f} s', flush=True)
  batches, offset = [], 0
  for specs in per_thread:
    batches.append((ProcessEnvBatch(envs[offset:offset + len(specs)]),
                    [t for t, _, _ in specs]))
    offset += len(specs)
  return batches
