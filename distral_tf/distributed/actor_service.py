"""The chief's end of acting on the worker hosts: plan, first policy, reports.

In cluster mode the environments and the actors run on the worker hosts
(``actor_host.py``). ``ActorService`` serves them from the chief through a
gRPC server (methods and messages in ``actor_rpc``): the run's plan, a first
copy of the policy (``remote.PolicyMirror``, the chief's copy of the
parameters, refreshed from the ps tasks when older than ``PARAMS_MAX_AGE_SECS``)
with its number, and the hosts' reports. A host keeps each unroll in its own
queue (``host_queue``) and reports it: the report is counted here (frames per
task and per host, its finished episodes written to the episode log) and
filed as a ticket (``tickets.Tickets``) for the chief's learner threads, which
schedule a step that takes the unroll on its worker. The budget is counted
here: once a task has its frames, reports of it are not counted; the hosts
are told to stop once every counted unroll was taken by a step (until then a
host that died could still lose some, whose frames are then acted again).

A host that restarted (a new incarnation in its reports, or the loopback
launcher's word) lost the unrolls it held: their tickets are dropped and
their frames are acted again.

To the run loop the service is the actors: ``run`` returns when every task
has its frames (or the run stops), then ``done`` is True.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from typing import Any, Callable

import grpc
from absl import logging
import numpy as np

from distral_tf import errors
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import config as config_lib
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import host_queue
from distral_tf.distributed import remote
from distral_tf.distributed import tickets as tickets_lib
from distral_tf.distributed import topology

# A host whose last unroll is older than this is not counted as acting.
ACTING_WINDOW_SECS = 30.0
SERVER_THREADS = 8
# The names of the gRPC server's threads, which run the hosts' calls.
HANDLER_THREADS = 'ActorRpc'
# A host asking for the policy gets a copy at most this old.
PARAMS_MAX_AGE_SECS = 5.0


class ActorService:
  """Serves the actor hosts; counts their frames; files their unrolls' tickets."""

  def __init__(self, address: str, config: config_lib.DeepConfig, frames_per_step: int,
               mirror: remote.PolicyMirror, progress: actor_lib.Progress,
               recorder: actor_lib.EpisodeRecorder, num_hosts: int,
               tickets: tickets_lib.Tickets,
               host_alive: Callable[[int], bool] = lambda host: False):
    """``host_alive(host)``: whether that host's server still answers (a silent
    host that does is only slow, and keeps its unrolls)."""
    self.address = address
    self._host_alive = host_alive
    self._frames_per_step = frames_per_step
    self._unroll_frames = config.unroll_length * frames_per_step
    self.tickets = tickets
    self._mirror = mirror
    self._progress = progress
    self._recorder = recorder
    self.num_hosts = num_hosts
    self.run_id = uuid.uuid4().hex
    self._plan = actor_rpc.run_plan(self.run_id, config, num_hosts).encode()
    self._variables = remote.variables_in_order(mirror.network)
    self._params = (0, b'')
    self._server: grpc.Server | None = None
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self.frames_per_host = np.zeros(num_hosts, np.int64)
    self.unrolls_per_host = np.zeros(num_hosts, np.int64)
    self.refused_unrolls = 0
    self.params_served = 0
    self.report_bytes = 0
    self.unroll_bytes = 0  # Of the largest unroll reported (it stays on its host).
    self._specs: dict[bytes, host_queue.ElementSpec] = {}
    self.lost_unrolls = 0
    self._incarnations = [None] * num_hosts
    self._frames_at_restart = np.zeros(num_hosts, np.int64)
    self._last_put = np.zeros(num_hosts)
    self.done = False
    # The run loop reads ``error`` of each of its workers; a failed call is
    # the calling host's error (gRPC returns it there), so it stays None.
    self.error: BaseException | None = None

  # -- serving ------------------------------------------------------------------

  def start(self) -> None:
    """Starts the gRPC server on every interface.

    Raises:
      errors.UsageError: its port is taken.
    """
    self.publish(self._mirror.version)
    handlers = {
        actor_rpc.PLAN: lambda request, context: self._plan,
        actor_rpc.VERSION: lambda request, context: str(self._params[0]).encode(),
        actor_rpc.PARAMS: lambda request, context: self._serve_params(),
        actor_rpc.REPORT: lambda request, context: actor_rpc.encode_answer(
            *self._report(request)),
    }
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(SERVER_THREADS, HANDLER_THREADS),
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
    self._mirror.refresh_if_older(PARAMS_MAX_AGE_SECS)
    with self._lock:
      self.params_served += 1
    return self._params[1]

  def stop(self) -> None:
    """Stops serving (calls under way are cut after a second)."""
    self._stop.set()
    if self._server is not None:
      self._server.stop(grace=1.0)

  def _report(self, request: bytes) -> tuple[bool, bool]:
    """``report``: counts an unroll a host holds and files its ticket.

    Returns ``(counted, stop)``. Never waits.
    """
    report = actor_rpc.decode_report(request)
    host, incarnation, sizes = report.host, report.incarnation, report.task_sizes
    tasks = [t for t, n in enumerate(sizes) if n]
    with self._lock:
      if self._incarnations[host] != incarnation:
        # A new process (it restarted, whether the launcher said so or not).
        self._drop_host(host)
        self._incarnations[host] = incarnation
        self.tickets.set_incarnation(host, incarnation)
      if self._stop.is_set() or all(self._progress.task_done(t) for t in tasks):
        self.refused_unrolls += 1
        return False, self._stop.is_set()
      for t in tasks:
        self._progress.add_frames(t, sizes[t] * self._unroll_frames)
      self.frames_per_host[host] += sum(sizes) * self._unroll_frames
      self.unrolls_per_host[host] += 1
      self.report_bytes += len(request)
      self._last_put[host] = time.time()
      for task, episode_return, length in report.episodes.tolist():
        self._recorder.record(int(task), episode_return, int(length))
      element = self._specs.get(report.spec)
      if element is None:  # A host sends the same few specs (one per shape) over and over.
        element = self._specs[report.spec] = host_queue.ElementSpec.from_json(
            report.spec.decode())
        self.unroll_bytes = max(self.unroll_bytes, element.num_bytes)
      self.tickets.add(host, sizes, element, report.number)
    return True, False

  def _drop_host(self, host: int) -> None:
    """``host``'s unrolls are gone: forget their tickets, act their frames again."""
    lost = self.tickets.drop_host(host)
    for sizes, count in lost.items():
      for t, n in enumerate(sizes):
        self._progress.add_frames(t, -count * n * self._unroll_frames)
      self.frames_per_host[host] -= count * sum(sizes) * self._unroll_frames
      self.lost_unrolls += count

  # -- as the run loop's actors -------------------------------------------------

  def run(self, stop: threading.Event) -> None:
    """Returns once every task has its frames and every counted unroll was
    taken by a step, or ``stop`` is set.

    Meanwhile drops the unrolls of hosts gone silent (``Tickets.silent_hosts``)
    whose server no longer answers (``host_alive``): a worker that died for
    good, which nobody restarts, holds them where no step can reach; their
    frames are acted again by the others. A silent host whose server answers
    is only slow (a loaded machine): steps still take its unrolls, which must
    then not be acted again as well.
    """
    try:
      while not stop.wait(0.1) and not (self._progress.all_done() and
                                        self.tickets.pending() <= 0):
        self.drop_silent_hosts()
    finally:
      self._stop.set()
      self.done = True

  def drop_silent_hosts(self) -> None:
    for host in self.tickets.silent_hosts():
      if self._host_alive(host):
        continue
      with self._lock:
        lost = self.lost_unrolls
        self._drop_host(host)
      logging.warning('worker %d: no report and no unroll taken for %.0f s, and its '
                      'server does not answer; its %d unrolls are taken for lost',
                      host, tickets_lib.SILENT_HOST_SECS,
                      self.lost_unrolls - lost)

  # -- reporting ----------------------------------------------------------------

  def mark_restart(self, host: int) -> None:
    """Host ``host`` restarted: its unrolls are lost; ``frames_since_restart``
    counts from here."""
    with self._lock:
      self._drop_host(host)
      self._incarnations[host] = None
      self.tickets.set_incarnation(host, None)
      self._frames_at_restart[host] = self.frames_per_host[host]

  def stats(self) -> dict[str, Any]:
    """Frames and unrolls per host, hosts acting now, unrolls refused.

    Also the policy copies served to the hosts, the bytes of the reports (for
    the cluster benchmark's traffic by construction) and the unrolls lost with
    a host that restarted.
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
          report_bytes=self.report_bytes, unroll_bytes=self.unroll_bytes,
          lost_unrolls=self.lost_unrolls)

  def scalars(self) -> dict[str, float]:
    """TensorBoard scalars: frames acted by each worker host."""
    with self._lock:
      return {f'frames_per_host/worker_{h}': float(n)
              for h, n in enumerate(self.frames_per_host)}
