"""The costs of a cluster run, read over windows of it (``distributed.bench``).

A window is two samples (``Sample``): ``cluster.json`` as the chief just wrote
it (frames, steps, calls, reports, its threads' CPU), the CPU of every process
(``/proc``) and the bytes through the cluster's TCP connections by the roles
at their two ends (``socket_bytes``). ``measured_costs`` turns a window into
``projection.Costs``; a second window with the worker hosts' environments
stopped (``environments_stopped``, ``idle_window``: no unroll, so no call)
tells the chief's CPU per second from its CPU per call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from typing import Iterator

from distral_tf.distributed import actor_service
from distral_tf.distributed import projection
from distral_tf.distributed import steps as steps_lib
from distral_tf.distributed import topology

_BYTES = re.compile(r'bytes_(acked|received):(\d+)')
_PID = re.compile(r'pid=(\d+)')
SAMPLE_TIMEOUT_SECS = 600.0
# With the environments stopped, the queued unrolls' calls end within this.
IDLE_DRAIN_SECS = 10.0
# The chief's threads whose work recurs at a rate of their own, not per step
# (``ActorService-`` is its run-loop thread, which looks for silent hosts).
FIXED_RATE_THREADS = ('MainThread', 'Evaluator', 'LocalClusterSupervisor',
                      'WorkerPreemptionHandler', 'ActorService-')
# The actor service's gRPC threads: one report per unroll (grpcio's own thread
# that takes each call in and hands it to them is named '... (_serve)').
REPORT_THREADS = (actor_service.HANDLER_THREADS, '(_serve)')


WITHIN_A_HOST = ('host', 'within')


def socket_bytes(ports: set[int], roles: dict[int, str]) -> dict[tuple[str, str], int] | None:
  """Bytes acknowledged plus received on the server side of the cluster's
  connections (a server port in ``ports``), by the roles of their two ends.

  Every connection of the cluster has one end on a server port, so each byte
  is counted once. ``roles``: process id -> role ('chief', 'ps', 'worker');
  the key is the two ends' roles, sorted ('other' for a process not named).
  A connection whose two ends are the same process (a worker host's own
  client of its own server) counts under ``WITHIN_A_HOST``. None if ``ss`` is
  unavailable.
  """
  try:
    out = subprocess.run(['ss', '-tinpH', 'state', 'established'], check=True,
                         capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  records, current = [], None  # [local port, peer port, pid, bytes]
  for line in out.splitlines():
    if not line.startswith((' ', '\t')):  # "Recv-Q Send-Q local:port peer:port users:..".
      fields = line.split()
      current = None
      if len(fields) >= 4:
        local, peer = (f.rpartition(':')[2] for f in fields[2:4])
        pid = _PID.search(line)
        if local.isdigit() and peer.isdigit():
          current = [int(local), int(peer), int(pid.group(1)) if pid else None, 0]
          records.append(current)
    elif current is not None:
      current[3] += sum(int(n) for _, n in _BYTES.findall(line))
  pid_of_port = {r[0]: r[2] for r in records}
  totals: dict[tuple[str, str], int] = {}
  for local, peer, pid, moved in records:
    if local in ports:
      client = pid_of_port.get(peer)
      if pid is not None and client == pid:
        key = WITHIN_A_HOST
      else:
        key = tuple(sorted((roles.get(pid, 'other'), roles.get(client, 'other'))))
      totals[key] = totals.get(key, 0) + moved
  return totals


def moved_bytes(start: dict, end: dict, involving: str | None = None) -> int:
  """Bytes moved between two ``socket_bytes`` readings: between processes, or
  (``involving``) on the connections with that role at one end, or within a
  host (``involving=WITHIN_A_HOST``)."""
  def take(key) -> bool:
    if involving == WITHIN_A_HOST:
      return key == WITHIN_A_HOST
    return key != WITHIN_A_HOST and (involving is None or involving in key)
  return sum(n - start.get(k, 0) for k, n in end.items() if take(k))

class Sample:
  """One reading: ``cluster.json`` as just written, socket and CPU counters."""

  def __init__(self, data: dict, ports: set[int], roles: dict[int, str]):
    self.data = data
    self.time = data['time']
    self.frames = data['frames']
    self.steps = sum(data['stats']['steps'])
    self.refreshes = data['stats']['policy_refreshes']
    self.calls = data['stats'].get('calls', 0)
    self.frames_per_host = data['stats'].get('frames_per_host', [])
    self.unrolls = sum(data['stats'].get('unrolls_per_host', []))
    self.params_served = data['stats'].get('params_served', 0)
    self.report_bytes = data['stats'].get('report_bytes', 0)
    self.bytes = socket_bytes(ports, roles)
    self.cpu = projection.read_process_cpu()


def next_sample(path: str, after: float, ports: set[int], roles: dict[int, str],
                 proc) -> Sample:
  """Waits for ``cluster.json`` newer than ``after``; samples at once."""
  deadline = time.time() + SAMPLE_TIMEOUT_SECS
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f'the trainer exited with status {proc.returncode}')
    try:
      if os.path.getmtime(path) > after:
        with open(path) as f:
          return Sample(json.load(f), ports, roles)
    except (OSError, ValueError, KeyError):
      pass
    time.sleep(0.02)
  raise RuntimeError(f'no update of {path}')


def server_pids(sample: Sample, job: str, count: int) -> list[int | None]:
  """The process ids of ``job``'s tasks 0..count-1 as ``cluster.json`` names
  them (None for a task it does not name)."""
  servers = {(s['job'], s['index']): s['pid'] for s in sample.data.get('servers', ())}
  return [servers.get((job, i)) for i in range(count)]


@contextlib.contextmanager
def environments_stopped(sample: Sample, cluster: topology.ClusterDef) -> Iterator[None]:
  """The worker hosts' environment processes stopped (SIGSTOP) while inside.

  Their actors wait on them, so no unroll is made and, once the queued ones
  are taken, the chief schedules no call; the servers themselves keep running.
  Within a window well short of ``process.STEP_TIMEOUT_SECS`` and
  ``tickets.SILENT_HOST_SECS`` nothing takes them for lost.
  """
  table = projection.read_process_cpu() or {}
  workers = server_pids(sample, 'worker', len(cluster.workers))
  envs = set().union(*(projection.descendants(table, w) for w in workers if w))
  stopped = []
  try:
    for pid in sorted(envs):
      try:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
      except ProcessLookupError:
        pass
    yield
  finally:
    for pid in stopped:
      try:
        os.kill(pid, signal.SIGCONT)
      except ProcessLookupError:
        pass


def idle_window(path: str, ports: set[int], roles: dict[int, str], proc,
                seconds: float) -> tuple[Sample, Sample]:
  """Two samples ``seconds`` apart, taken once the calls stop
  (at most ``IDLE_DRAIN_SECS`` after the environments did)."""
  deadline = time.time() + IDLE_DRAIN_SECS
  last = next_sample(path, os.path.getmtime(path), ports, roles, proc)
  while time.time() < deadline:
    sample = next_sample(path, os.path.getmtime(path), ports, roles, proc)
    calls_stopped = sample.calls == last.calls
    last = sample
    if calls_stopped:
      break
  end = last
  while end.time < last.time + seconds:
    end = next_sample(path, os.path.getmtime(path), ports, roles, proc)
  return last, end


def chief_window(start: Sample, end: Sample) -> dict[str, float]:
  """The chief's CPU seconds from ``start`` to ``end``: its fixed-rate threads,
  its report threads, the rest (``other``) and of the rest, what ran outside
  Python (``native``); with the window's calls and seconds. The chief's own
  process only: not its servers (loopback) nor pi_0's evaluator environments."""
  chief_cpu = projection.cpu_used(start.cpu, end.cpu, {end.data['chief_pid']})
  threads = lambda sample, names: sum(
      v for k, v in sample.data.get('thread_cpu', {}).items()
      if any(k.startswith(n) or k.endswith(n) for n in names))
  used = lambda names: threads(end, names) - threads(start, names)
  fixed, reports = used(FIXED_RATE_THREADS), used(REPORT_THREADS)
  python = sum(end.data.get('thread_cpu', {}).values()) - sum(
      start.data.get('thread_cpu', {}).values())
  return dict(fixed=fixed, reports=reports, other=chief_cpu - fixed - reports,
              native=max(chief_cpu - python, 0.0), calls=end.calls - start.calls,
              seconds=max(end.time - start.time, 1e-9))


def measured_costs(start: Sample, end: Sample, cluster: topology.ClusterDef,
                   idle: tuple[Sample, Sample] | None = None
                   ) -> projection.Costs | None:
  """The projection's inputs over the window from ``start`` to ``end``.

  With ``idle`` (a later window with no call, ``idle_window``), the chief's
  CPU outside its fixed-rate and report threads is split into a part per call
  and a part per second (``projection.split_per_call``); without it the calls
  take it all. None without ``/proc`` or ``ss``, or when the worker hosts ran
  no environment processes (their CPU could not be told from acting's).
  """
  if None in (start.cpu, end.cpu, start.bytes, end.bytes):
    return None
  table = end.cpu
  workers = server_pids(end, 'worker', len(cluster.workers))
  ps = server_pids(end, 'ps', len(cluster.ps))
  if None in workers or None in ps:
    return None
  envs = set().union(*(projection.descendants(table, w) for w in workers))
  if not envs:
    return None
  ps_tree = set(ps).union(*(projection.descendants(table, p) for p in ps))
  frames = max(end.frames - start.frames, 1)
  steps = max(end.steps - start.steps, 1)
  busy = chief_window(start, end)
  calls = max(busy['calls'], 1)
  per_call, native_per_call, recurring = busy['other'] / calls, busy['native'] / calls, 0.0
  if idle is not None and None not in (idle[0].cpu, idle[1].cpu):
    quiet = chief_window(*idle)
    window = lambda w, part: (w[part], w['calls'], w['seconds'])
    try:
      per_call, recurring = projection.split_per_call(window(busy, 'other'),
                                                      window(quiet, 'other'))
      native_per_call, _ = projection.split_per_call(window(busy, 'native'),
                                                     window(quiet, 'native'))
    except ValueError:  # As many calls per second with the environments stopped.
      pass
  unrolls = max(end.unrolls - start.unrolls, 1)
  return projection.Costs(
      env_seconds_per_frame=projection.cpu_used(start.cpu, end.cpu, envs) / frames,
      host_seconds_per_frame=projection.cpu_used(start.cpu, end.cpu, set(workers)) / frames,
      chief_fixed_cores=busy['fixed'] / busy['seconds'],
      chief_seconds_per_report=busy['reports'] / unrolls,
      chief_seconds_per_call=per_call,
      steps_per_call=steps / calls, unrolls_per_call=steps_lib.UNROLLS_PER_CALL,
      ps_seconds_per_update=projection.cpu_used(start.cpu, end.cpu, ps_tree) / steps,
      # Every connection with the chief (or a ps) at one end, whichever started it.
      chief_bytes_per_update=moved_bytes(start.bytes, end.bytes, 'chief') / steps,
      ps_bytes_per_update=moved_bytes(start.bytes, end.bytes, 'ps') / steps,
      # Both counted as unrolls are reported: a step lags its unroll, and a
      # window of a few steps would otherwise count a few more or fewer of them.
      frames_per_update=frames / unrolls,
      chief_native_seconds_per_call=native_per_call,
      chief_recurring_cores=recurring)
