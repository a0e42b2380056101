"""A worker host's actors: its own environments, acting for the chief's run.

Every worker task of a cluster (``distributed/server.py``) runs an
``ActorHost`` beside its TensorFlow server. It asks the chief's
``actor_service.ActorService`` (over ``actor_rpc``) for the run's plan, starts
its share of the environments (worker ``w`` of every task belongs to host
``w mod H`` of ``H``; ``envs.batch.make_env_batches``), builds the same
network as the chief's and runs the trainer's own ``actor.Actor`` threads on
it. The policy is copied from the chief whenever its number changes (looked
at every ``remote.REFRESH_SECS``); each unroll goes to the chief with the
episodes finished in it. An unroll carries the number of the policy its first
action was taken with, so the learner measures the policy lag as on one
machine.

When the chief says the run is done, or cannot be reached, the host closes
its environments and waits for a chief with a new run: a chief that is
restarted (resuming from its checkpoint) finds its hosts acting again, and a
host that is restarted rejoins the run.
"""

from __future__ import annotations

import queue as queue_lib
import threading
import time
from typing import Callable

import numpy as np
from absl import logging

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import builders
from distral_tf.agents import config as config_lib
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import remote
from distral_tf.distributed import topology
from distral_tf.envs import batch as batch_lib

POLL_SECS = 1.0
RUN_DONE = 'the chief has the frames it needs'
JOIN_SECS = 30.0
# Wait before sending again an unroll the chief had no room for.
RESEND_SECS = 0.02
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

  def __init__(self, chief_address: str, host: int):
    self.chief_address = chief_address
    self.host = host
    self._finished_run = ''

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
        reason = self.act(client, num_hosts, config, keep_going)
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

  def act(self, client: actor_rpc.Client, num_hosts: int,
          config: config_lib.DeepConfig, keep_going: Callable[[], bool]) -> str:
    """Acts until the chief stops taking unrolls; returns why it ended."""
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
      progress = actor_lib.Progress(level_set.task_names, _NO_BUDGET)
      episodes = EpisodeBuffer()
      unrolls = queue_lib.Queue(maxsize=2 * len(batches))
      actors = builders.make_actors(config, level_set, batches, network, progress,
                                    episodes, unrolls)
      self._refresh(client, variables, progress)
      threads = [threading.Thread(target=a.run, args=(stop,), daemon=True)
                 for a in actors]
      refresher = threading.Thread(
          target=self._refresh_loop, args=(client, variables, progress, stop),
          daemon=True)
      for th in threads + [refresher]:
        th.start()
      return self._send_loop(client, unrolls, episodes, actors, stop, keep_going)
    finally:
      stop.set()
      for th in threads:  # Each ends within one step of its environments.
        th.join(timeout=JOIN_SECS)
      for env_batch, _ in batches:
        env_batch.close()

  def _send_loop(self, client, unrolls: queue_lib.Queue, episodes: EpisodeBuffer,
                 actors, stop: threading.Event, keep_going) -> str:
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
      rows = np.asarray(episodes.take(), np.float32).reshape(-1, 3)
      done = False
      while keep_going():  # Until the chief's queue has room for it.
        taken, done = client.put(self.host, task_sizes, updates_before, rows, unroll)
        if taken or done:
          break
        time.sleep(RESEND_SECS)
      if done:
        return RUN_DONE
    return 'this host is stopping'

  @staticmethod
  def _refresh(client, variables, progress: actor_lib.Progress) -> None:
    version, values = client.params()
    for variable, value in zip(variables, values):
      variable.assign(value)
    with progress.lock:
      progress.updates = version

  def _refresh_loop(self, client, variables, progress: actor_lib.Progress,
                    stop: threading.Event) -> None:
    try:
      while not stop.wait(remote.REFRESH_SECS):
        with progress.lock:
          current = progress.updates
        if client.version() != current:
          self._refresh(client, variables, progress)
    except actor_rpc.RpcError as e:
      logging.warning('worker %d: policy refresh failed: %s', self.host, _describe(e))
      stop.set()


def _describe(error: actor_rpc.RpcError) -> str:
  """A gRPC error in a few words."""
  details = getattr(error, 'details', None)
  return (details() if callable(details) else None) or type(error).__name__
