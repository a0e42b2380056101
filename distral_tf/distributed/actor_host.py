"""A worker host's actors: its own environments, acting for the chief's run.

Every worker task of a cluster (``distributed/server.py``) runs an
``ActorHost`` beside its TensorFlow server. It asks the chief's
``actor_service.ActorService`` (over ``actor_rpc``) for the run's plan and a
first policy, starts its share of the environments (worker ``w`` of every
task belongs to host ``w mod H`` of ``H``; ``envs.batch.make_env_batches``),
builds the same network as the chief's and runs the trainer's own
``actor.Actor`` threads on it. Each unroll goes into a queue on this host's
own server (``host_queue``), where the gradient steps the chief schedules on
this worker take it; the chief only gets a report (the unroll's shape and the
episodes finished in it). The steps leave the parameters they read in the
host's policy queue, which the host looks at every ``remote.REFRESH_SECS``.
An unroll carries the number of the policy its first action was taken with,
so the step measures the policy lag as on one machine.

When the chief says the run is done, or cannot be reached, the host closes
its environments and waits for a chief with a new run (the queues of the run
it acted in are emptied then): a chief that is restarted (resuming from its
checkpoint) finds its hosts acting again, and a host that is restarted
rejoins the run.
"""

from __future__ import annotations

import queue as queue_lib
import random
import threading
import time
from typing import Callable

import numpy as np
from absl import logging

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import builders
from distral_tf.agents import config as config_lib
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import host_queue
from distral_tf.distributed import remote
from distral_tf.distributed import topology
from distral_tf.envs import batch as batch_lib

POLL_SECS = 1.0
# Seconds a put into the host's full queue waits before the host checks that
# the chief is still there.
PUT_WAIT_SECS = 0.1
CHIEF_CHECK_SECS = 2.0
# Wait after an unroll the chief did not count (its budget is met).
REFUSED_WAIT_SECS = 0.1
RUN_DONE = 'the chief has the frames it needs'
JOIN_SECS = 30.0
# Frames per task this host's actors may act: the chief counts the budget.
_NO_BUDGET = 1 << 62


class EpisodeBuffer:
  """The ``EpisodeRecorder`` of a host's actors: keeps episodes until sent."""

  def __init__(self):
    self._rows: list[tuple[int, float, int]] = []
    self._lock = threading.Lock()

  def record(self, task: int, episode_return: float, length: int, **_) -> None:
    with self._lock:
      self._rows.append((task, episode_return, length))

  def take(self) -> list[tuple[int, float, int]]:
    with self._lock:
      rows, self._rows = self._rows, []
      return rows


class ActorHost:
  """Acts in the chief's runs, one after the other, with this host's environments."""

  def __init__(self, chief_address: str, host: int, target: str):
    """``target``: this host's own server (``grpc://...``), which keeps its queues."""
    self.chief_address = chief_address
    self.host = host
    self._target = target
    self._finished_run = ''
    # Tells the chief that this process is not the one before it (a restart).
    self._incarnation = random.getrandbits(31)  # Exact as a float64 too.
    self._queues: host_queue.HostQueues | None = None  # The last run's.

  def serve(self, keep_going: Callable[[], bool] = lambda: True) -> None:
    """Acts in every run a chief offers while ``keep_going()``."""
    while keep_going():
      if not topology.is_reachable(self.chief_address):
        time.sleep(POLL_SECS)  # No chief (yet, or any more).
        continue
      client = actor_rpc.Client(self.chief_address)
      try:
        run_id, num_hosts, config = actor_rpc.read_plan(client.plan())
      except actor_rpc.RpcError:
        client.close()
        time.sleep(POLL_SECS)  # Its service is not up yet.
        continue
      if run_id == self._finished_run:
        client.close()
        time.sleep(POLL_SECS)
        continue
      print(f'worker {self.host}: acting in run {run_id[:8]} of {config.algorithm} on '
            f'{config.level_set}', flush=True)
      try:
        reason = self.act(client, run_id, num_hosts, config, keep_going)
        if reason == RUN_DONE:  # Otherwise the same run is joined again.
          self._finished_run = run_id
      except actor_rpc.RpcError as e:
        reason = f'lost the chief ({_describe(e)})'
      except Exception as e:  # pylint: disable=broad-except
        # The server goes on serving gradient steps; the run is tried again.
        logging.exception('worker %d: acting failed', self.host)
        reason = f'failed ({type(e).__name__}: {e}); trying again'
        time.sleep(POLL_SECS)
      finally:
        client.close()
      print(f'worker {self.host}: run {run_id[:8]} ended: {reason}', flush=True)

  def act(self, client: actor_rpc.Client, run_id: str, num_hosts: int,
          config: config_lib.DeepConfig, keep_going: Callable[[], bool]) -> str:
    """Acts until the chief stops taking unrolls; returns why it ended."""
    if self._queues is not None and self._queues.run_id != run_id:
      self._queues.close()  # The run before is over: free its unrolls.
      self._queues = None
    setup = builders.make_setup(config)
    level_set = setup.level_set
    batches = batch_lib.make_env_batches(
        level_set, config.seed, config.workers_per_task, config.actor_threads,
        config.env_processes, config.env_niceness, host=(self.host, num_hosts))
    if not batches:  # More hosts than workers per task: nothing to act here.
      while keep_going():
        client.version()  # Raises RpcError once the chief's service is gone.
        time.sleep(POLL_SECS)
      return 'no environments on this host'
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
      network = builders.build_network(config, setup, batches[0][0].observation_spec())
      variables = remote.variables_in_order(network)
      if self._queues is None:  # Rejoining the same run keeps its queues and numbers.
        self._queues = host_queue.HostQueues(
            self._target, self.host, run_id, host_queue.policy_spec(variables))
      queues = self._queues
      progress = actor_lib.Progress(level_set.task_names, _NO_BUDGET)
      episodes = EpisodeBuffer()
      unrolls = queue_lib.Queue(maxsize=2 * len(batches))
      actors = builders.make_actors(config, level_set, batches, network, progress,
                                    episodes, unrolls)
      self._refresh(client, variables, progress)
      threads = [threading.Thread(target=a.run, args=(stop,), daemon=True)
                 for a in actors]
      refresher = threading.Thread(
          target=self._refresh_loop, args=(queues, variables, progress, stop),
          daemon=True)
      for th in threads + [refresher]:
        th.start()
      return self._send_loop(client, queues, unrolls, episodes, actors, stop, keep_going)
    finally:
      stop.set()
      for th in threads:  # Each ends within one step of its environments.
        th.join(timeout=JOIN_SECS)
      for env_batch, _ in batches:
        env_batch.close()

  def _send_loop(self, client, queues: host_queue.HostQueues, unrolls: queue_lib.Queue,
                 episodes: EpisodeBuffer, actors, stop: threading.Event, keep_going) -> str:
    """Reports each unroll to the chief and, if counted, puts it into this
    host's queue. It waits for room first, so the put follows the report at
    once; an unroll not counted (the budget is met) is not put, so no step
    trains it, and numbers go to counted unrolls only."""
    specs: dict[tuple[int, ...], str] = {}
    while keep_going():
      failed = [a.error for a in actors if a.error is not None]
      if failed:
        raise failed[0]
      if stop.is_set():
        return 'the policy could not be refreshed'
      try:
        task_sizes, unroll, updates_before = unrolls.get(timeout=0.1)
      except queue_lib.Empty:
        continue
      key = tuple(int(n) for n in task_sizes)
      number = queues.number(key)
      element = host_queue.unroll_element(self._incarnation, number, updates_before,
                                          unroll)
      if key not in specs:
        specs[key] = host_queue.ElementSpec.of(element).to_json()
      checked = time.monotonic()
      while not queues.wait_for_room(key, element, timeout=PUT_WAIT_SECS):
        if not keep_going():  # Full: the steps are behind.
          return 'this host is stopping'
        if time.monotonic() - checked > CHIEF_CHECK_SECS:
          client.version()  # Raises RpcError once the chief is gone.
          checked = time.monotonic()
      rows = np.asarray(episodes.take(), np.float32).reshape(-1, 3)
      counted, done = client.report(self.host, self._incarnation, number, key, rows,
                                    specs[key])
      if done:
        return RUN_DONE
      if not counted:  # The budget is met; the run ends once its steps are taken.
        time.sleep(REFUSED_WAIT_SECS)
        continue
      queues.commit(key)
      queues.put(key, element, timeout=PUT_WAIT_SECS)  # There is room: no wait.
    return 'this host is stopping'

  @staticmethod
  def _refresh(client, variables, progress: actor_lib.Progress) -> None:
    """The first policy of a run, from the chief."""
    version, values = client.params()
    _assign(variables, values, version, progress)

  def _refresh_loop(self, queues: host_queue.HostQueues, variables,
                    progress: actor_lib.Progress, stop: threading.Event) -> None:
    """Takes each policy a step left in this host's queue."""
    try:
      while not stop.is_set():
        policy = queues.take_policy(timeout=remote.REFRESH_SECS)
        if policy is not None:
          _assign(variables, policy[1], policy[0], progress)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('worker %d: policy refresh failed: %s', self.host, e)
      stop.set()


def _assign(variables, values, version: int, progress: actor_lib.Progress) -> None:
  for variable, value in zip(variables, values):
    variable.assign(value)
  with progress.lock:
    progress.updates = version


def _describe(error: actor_rpc.RpcError) -> str:
  """A gRPC error in a few words."""
  details = getattr(error, 'details', None)
  return (details() if callable(details) else None) or type(error).__name__
