"""The chief's end of acting on the worker hosts: plan, policy and unrolls over gRPC.

In cluster mode the environments and the actors run on the worker hosts
(``actor_host.py``). ``ActorService`` serves them from the chief through a
gRPC server (methods and messages in ``actor_rpc``): the run's plan, the
policy of ``remote.PolicyMirror`` (the chief's copy of the parameters,
refreshed from the ps tasks) with its number, and the intake of unrolls. An
unroll that arrives is counted (frames per task and per host, its finished
episodes written to the episode log) and queued for the learner threads,
which schedule its gradient step on a worker as before. The budget is
counted here: once a task has its frames, unrolls of it are refused and the
hosts are told to stop.

To the run loop the service is the actors: ``run`` returns when every task
has its frames (or the run stops), then ``done`` is True.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue as queue_lib
import threading
import time
import uuid
from typing import Any

import grpc
import numpy as np
import tensorflow as tf

from distral_tf import errors
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import config as config_lib
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import remote
from distral_tf.distributed import topology

# A host whose last unroll is older than this is not counted as acting.
ACTING_WINDOW_SECS = 30.0
SERVER_THREADS = 8


class ActorService:
  """Serves the actor hosts; counts their frames; queues their unrolls."""

  def __init__(self, address: str, config: config_lib.DeepConfig, frames_per_step: int,
               mirror: remote.PolicyMirror, progress: actor_lib.Progress,
               recorder: actor_lib.EpisodeRecorder, num_hosts: int):
    self.address = address
    self._frames_per_step = frames_per_step
    self._mirror = mirror
    self._progress = progress
    self._recorder = recorder
    self.num_hosts = num_hosts
    self.run_id = uuid.uuid4().hex
    self._plan = actor_rpc.run_plan(self.run_id, config, num_hosts).encode()
    self._structure = actor_rpc.unroll_structure(mirror.network)
    self._variables = remote.variables_in_order(mirror.network)
    self._params = (0, b'')
    self.unroll_queue: queue_lib.Queue | None = None
    self._server: grpc.Server | None = None
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self.frames_per_host = np.zeros(num_hosts, np.int64)
    self.unrolls_per_host = np.zeros(num_hosts, np.int64)
    self.refused_unrolls = 0
    self.params_served = 0
    self.unroll_bytes = 0
    self._frames_at_restart = np.zeros(num_hosts, np.int64)
    self._last_put = np.zeros(num_hosts)
    self.done = False
    # The run loop reads ``error`` of each of its workers; a failed call is
    # the calling host's error (gRPC returns it there), so it stays None.
    self.error: BaseException | None = None

  # -- serving ------------------------------------------------------------------

  def start(self, unroll_queue: queue_lib.Queue) -> None:
    """Starts the gRPC server on every interface; unrolls go to ``unroll_queue``.

    Raises:
      errors.UsageError: its port is taken.
    """
    self.unroll_queue = unroll_queue
    self.publish(self._mirror.version)
    handlers = {
        actor_rpc.PLAN: lambda request, context: self._plan,
        actor_rpc.VERSION: lambda request, context: str(self._params[0]).encode(),
        actor_rpc.PARAMS: lambda request, context: self._serve_params(),
        actor_rpc.PUT: lambda request, context: json.dumps(
            dict(zip(('taken', 'stop'), self._receive(request)))).encode(),
    }
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(SERVER_THREADS, 'ActorService'),
        options=actor_rpc.CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        actor_rpc.SERVICE,
        {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in handlers.items()}),))
    port = topology.split_address(self.address)[1]
    if not server.add_insecure_port(f'[::]:{port}'):
      raise errors.UsageError(f'the chief cannot serve its actor hosts on port {port} '
                              f'({self.address}): it is in use')
    server.start()
    self._server = server

  def publish(self, version: int) -> None:
    """The mirror now holds the policy after ``version`` updates: serve it."""
    values = [np.int64(version)] + [v.numpy() for v in self._variables]
    self._params = (version, actor_rpc.encode(values))

  def _serve_params(self) -> bytes:
    with self._lock:
      self.params_served += 1
    return self._params[1]

  def stop(self) -> None:
    """Stops serving (calls under way are cut after a second)."""
    self._stop.set()
    if self._server is not None:
      self._server.stop(grace=1.0)

  def _receive(self, request: bytes) -> tuple[bool, bool]:
    """``put``: counts and queues one unroll; returns ``(taken, stop)``.

    Never waits: when the learner's queue is full the unroll is not taken,
    and the host sends it again.
    """
    host, task_sizes, updates_before, episodes, *flat = actor_rpc.decode(request)
    host = int(host)
    sizes = tuple(int(n) for n in task_sizes)
    unroll = tf.nest.pack_sequence_as(self._structure,
                                      [tf.convert_to_tensor(a) for a in flat])
    steps = int(unroll.actions.shape[0]) * self._frames_per_step
    tasks = [t for t, n in enumerate(sizes) if n]
    with self._lock:
      if self._stop.is_set() or all(self._progress.task_done(t) for t in tasks):
        self.refused_unrolls += 1
        return False, True
      try:
        self.unroll_queue.put_nowait((sizes, unroll, int(updates_before)))
      except queue_lib.Full:
        return False, False
      for t in tasks:
        self._progress.add_frames(t, sizes[t] * steps)
      self.frames_per_host[host] += sum(sizes) * steps
      self.unrolls_per_host[host] += 1
      self.unroll_bytes += len(request)
      self._last_put[host] = time.time()
      for task, episode_return, length in episodes:
        self._recorder.record(int(task), float(episode_return), int(length))
    return True, self._progress.all_done()

  # -- as the run loop's actors -------------------------------------------------

  def run(self, stop: threading.Event) -> None:
    """Returns once every task has its frames or ``stop`` is set."""
    try:
      while not stop.wait(0.1) and not self._progress.all_done():
        pass
    finally:
      self._stop.set()
      self.done = True

  # -- reporting ----------------------------------------------------------------

  def mark_restart(self, host: int) -> None:
    """Host ``host`` restarted: ``frames_since_restart`` counts from here."""
    with self._lock:
      self._frames_at_restart[host] = self.frames_per_host[host]

  def stats(self) -> dict[str, Any]:
    """Frames and unrolls per host, hosts acting now, unrolls refused.

    Also the policy copies served to the hosts and the bytes of the unrolls
    taken (for the cluster benchmark's traffic by construction).
    """
    now = time.time()
    with self._lock:
      return dict(
          frames_per_host=self.frames_per_host.tolist(),
          frames_since_restart=(self.frames_per_host -
                                self._frames_at_restart).tolist(),
          unrolls_per_host=self.unrolls_per_host.tolist(),
          hosts_acting=int(np.sum(now - self._last_put < ACTING_WINDOW_SECS)),
          refused_unrolls=self.refused_unrolls, params_served=self.params_served,
          unroll_bytes=self.unroll_bytes)

  def scalars(self) -> dict[str, float]:
    """TensorBoard scalars: frames acted by each worker host."""
    with self._lock:
      return {f'frames_per_host/worker_{h}': float(n)
              for h, n in enumerate(self.frames_per_host)}
