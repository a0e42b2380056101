r"""Where a cluster's learner side saturates, from costs measured on loopback.

``distributed.bench`` measures, over one steady window of a loopback run, the
CPU seconds of every process of the cluster (``/proc``) and the bytes through
its ports, and divides them by the frames acted and the gradient steps taken:

* ``env_seconds_per_frame``: the worker hosts' environment processes (the
  level set measured, a stand-in for DeepMind Lab);
* ``host_seconds_per_frame``: the worker hosts' server processes: acting
  (batched inference), putting unrolls into their own queue and reporting
  them, taking the policy copies the steps leave there, and computing the
  gradient steps the coordinator schedules there;
* the chief's process, split by its threads (``thread_cpu``) into what
  recurs at a fixed rate whatever the number of hosts (``chief_fixed_cores``:
  the run loop's summaries and progress, pi_0's evaluator acting, the actor
  service's own thread looking for silent hosts; not the evaluator's
  environment processes), the actor service's gRPC threads taking the hosts'
  reports (``chief_seconds_per_report``: one per unroll, so per gradient step)
  and everything else, split between what recurs per second whatever the
  calls (``chief_recurring_cores``: gRPC's and TensorFlow's runtimes idling,
  the learner threads waiting for unrolls) and what each call of gradient
  steps the learner threads schedule costs (``chief_seconds_per_call``: the
  learner threads and the coordinator scheduling a call and taking its
  results, in Python and in gRPC's and TensorFlow's threads; of it,
  ``chief_native_seconds_per_call`` in threads outside Python). The split
  comes from two windows at different call rates, the second with no call
  (``split_per_call``); ``steps_per_call`` is what the calls took in the
  first;
* ``ps_seconds_per_update``: every parameter server (reads, RMSProp updates);
* ``chief_bytes_per_update`` (reports in, schedules out and results back,
  the chief's policy copies) and ``ps_bytes_per_update`` (variables read and
  gradients sent by the workers, the chief's policy copies); the bytes between
  a worker host and its own server (unrolls into its queue, policy copies out)
  stay within the host and are counted apart;
* ``frames_per_update``: frames per unroll reported, one gradient step each
  (the unroll's shape).

With DeepMind Lab stepping ``frames_per_core`` frames/s on one core, a worker
host with ``host_cores`` cores acts at

    host_fps = host_cores / (1 / frames_per_core + host_seconds_per_frame),

and the learner side takes at most

    U = min((chief_cores - chief_fixed_cores - chief_recurring_cores)
                / chief_seconds_per_update,
            num_ps * ps_cores / ps_seconds_per_update,
            link / chief_bytes_per_update,
            num_ps * link / ps_bytes_per_update)

gradient steps/s (the parameters are split over the ps tasks, so their work
and traffic divide), that is ``U * frames_per_update`` frames/s, which
``ceil(U * frames_per_update / host_fps)`` worker hosts reach. Every cost is
held at the measured unroll shape and network. At saturation the hosts' queues
are full and every call takes ``unrolls_per_call`` steps (``steps.
UNROLLS_PER_CALL``), so the chief's CPU per step is

    chief_seconds_per_update = chief_seconds_per_report
                               + chief_seconds_per_call / unrolls_per_call

(on loopback, where a queue seldom holds a second unroll, calls take fewer:
the per-call cost is measured there, the per-step cost projected from it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading


# The learner-side limits, in the order they are named.
LIMITS = ('chief CPU', 'ps CPU', 'chief link', 'ps link')


def _read_stat(path: str) -> tuple[int, float] | None:
  """(parent pid, CPU seconds used: user + system) from a ``/proc`` stat file.

  None if it cannot be read (the process or thread ended; no ``/proc``).
  """
  try:
    with open(path) as f:
      stat = f.read()
  except OSError:
    return None
  # Fields after the command (which may hold spaces): state, ppid, ... utime is
  # field 14 of the file, stime 15.
  rest = stat.rpartition(')')[2].split()
  return int(rest[1]), (int(rest[11]) + int(rest[12])) / os.sysconf('SC_CLK_TCK')


def read_process_cpu() -> dict[int, tuple[int, float]] | None:
  """pid -> (parent pid, CPU seconds used) of every process; None without ``/proc``."""
  if not os.path.isdir('/proc'):
    return None
  table = {}
  for name in os.listdir('/proc'):
    if name.isdigit() and (stat := _read_stat(f'/proc/{name}/stat')) is not None:
      table[int(name)] = stat
  return table


def thread_cpu() -> dict[str, float]:
  """This process's Python threads: name -> CPU seconds used (empty without /proc)."""
  used = {}
  for th in threading.enumerate():
    stat = _read_stat(f'/proc/self/task/{th.native_id}/stat')
    if stat is not None:
      used[th.name] = stat[1]
  return used


def descendants(table: dict[int, tuple[int, float]], pid: int) -> set[int]:
  """Every process below ``pid`` in ``table`` (not ``pid`` itself)."""
  children: dict[int, list[int]] = {}
  for child, (parent, _) in table.items():
    children.setdefault(parent, []).append(child)
  found, todo = set(), [pid]
  while todo:
    for child in children.get(todo.pop(), ()):
      if child not in found:
        found.add(child)
        todo.append(child)
  return found


def cpu_used(start: dict[int, tuple[int, float]], end: dict[int, tuple[int, float]],
             pids: set[int]) -> float:
  """CPU seconds ``pids`` used between two readings.

  A process started in between counts from zero; one that ended in between
  is missing from ``end`` and counts nothing.
  """
  return sum(end[p][1] - (start[p][1] if p in start else 0.0)
             for p in pids if p in end)


def split_per_call(busy: tuple[float, float, float],
                   idle: tuple[float, float, float]) -> tuple[float, float]:
  """(a, b): CPU seconds per call and per second, from two windows' CPU
  seconds C, calls n and seconds T, each window taken as C = a n + b T.

  ``busy`` must have the higher call rate (``idle``: fewer calls per second,
  none when the hosts are stopped); solved exactly, b = (C2 n1 - C1 n2) /
  (n1 T2 - n2 T1) and a = (C1 - b T1) / n1, then each held at 0 or more (a
  short window's noise). Raises ``ValueError`` if the rates do not differ.
  """
  (c1, n1, t1), (c2, n2, t2) = busy, idle
  det = n1 * t2 - n2 * t1
  if det <= 0 or t1 <= 0 or t2 <= 0:
    raise ValueError(f'no split: {n1} calls in {t1:g} s and {n2} in {t2:g} s')
  b = max((c2 * n1 - c1 * n2) / det, 0.0)
  return max((c1 - b * t1) / n1, 0.0), b


@dataclasses.dataclass(frozen=True)
class Costs:
  """What one frame and one gradient step cost, measured (see the module doc)."""
  env_seconds_per_frame: float
  host_seconds_per_frame: float
  chief_fixed_cores: float
  chief_seconds_per_report: float
  chief_seconds_per_call: float
  steps_per_call: float      # measured
  unrolls_per_call: int      # the most a call takes: at saturation, every call
  ps_seconds_per_update: float
  chief_bytes_per_update: float
  ps_bytes_per_update: float
  frames_per_update: float
  # Of ``chief_seconds_per_call``: the chief's threads outside Python (gRPC's
  # and TensorFlow's runtimes), shown apart; the rest is its Python threads.
  chief_native_seconds_per_call: float = 0.0
  # The chief's CPU (outside the fixed-rate threads and the reports) that
  # recurs per second whatever the calls; not in ``chief_seconds_per_call``.
  chief_recurring_cores: float = 0.0

  @property
  def chief_seconds_per_update(self) -> float:
    """The chief's CPU per gradient step at saturation (module doc)."""
    return self.chief_seconds_per_report + self.chief_seconds_per_call / self.unrolls_per_call


@dataclasses.dataclass(frozen=True)
class Resources:
  """The cluster projected: cores of each machine, parameter servers, links."""
  host_cores: int = 16
  chief_cores: int = 1
  ps_cores: int = 4
  num_ps: int = 4
  link_gbit: float = 10.0


@dataclasses.dataclass(frozen=True)
class Projection:
  level_set: str
  frames_per_core: float
  host_fps: float
  updates_per_second: float
  limit: str
  frames_per_second: float
  hosts: int


def project(costs: Costs, res: Resources, level_set: str,
            frames_per_core: float) -> Projection:
  """The module doc's formulas for one level set."""
  host_fps = res.host_cores / (1.0 / frames_per_core + costs.host_seconds_per_frame)
  link = res.link_gbit * 1e9 / 8
  chief_free = res.chief_cores - costs.chief_fixed_cores - costs.chief_recurring_cores
  # A cost measured as nothing (a window too short to see it) sets no limit.
  rate = lambda capacity, cost: capacity / cost if cost > 0 else math.inf
  per_limit = (rate(max(chief_free, 0.0), costs.chief_seconds_per_update),
               rate(res.num_ps * res.ps_cores, costs.ps_seconds_per_update),
               rate(link, costs.chief_bytes_per_update),
               rate(res.num_ps * link, costs.ps_bytes_per_update))
  i = min(range(len(LIMITS)), key=lambda k: per_limit[k])
  fps = per_limit[i] * costs.frames_per_update
  return Projection(level_set, frames_per_core, host_fps, per_limit[i], LIMITS[i], fps,
                    max(1, math.ceil(fps / host_fps)))


def format_costs(costs: Costs) -> str:
  return '\n'.join([
      '| cost (measured on loopback) | value |', '|---|---:|',
      f'| environment CPU per frame (worker hosts\' environment processes) | '
      f'{costs.env_seconds_per_frame * 1e6:,.0f} µs |',
      f'| worker host CPU per frame (acting, messages, its gradient steps) | '
      f'{costs.host_seconds_per_frame * 1e6:,.0f} µs |',
      f'| chief CPU at a fixed rate (run loop, pi_0\'s evaluator) | '
      f'{costs.chief_fixed_cores:.2f} cores |',
      f'| chief CPU recurring per second (gRPC\'s and TensorFlow\'s runtimes, '
      f'learner threads waiting; measured with no call) | '
      f'{costs.chief_recurring_cores:.3f} cores |',
      f'| chief CPU per report of an unroll (actor service) | '
      f'{costs.chief_seconds_per_report * 1e3:,.1f} ms |',
      f'| chief CPU per call of gradient steps (the rest; '
      f'{costs.steps_per_call:.2f} steps per call measured) | '
      f'{costs.chief_seconds_per_call * 1e3:,.1f} ms |',
      f'| ... of which in gRPC\'s and TensorFlow\'s native threads | '
      f'{costs.chief_native_seconds_per_call * 1e3:,.1f} ms |',
      f'| chief CPU per gradient step at saturation (calls of '
      f'{costs.unrolls_per_call} steps) | {costs.chief_seconds_per_update * 1e3:,.1f} ms |',
      f'| parameter servers\' CPU per gradient step | '
      f'{costs.ps_seconds_per_update * 1e3:,.1f} ms |',
      f'| chief traffic per gradient step | {costs.chief_bytes_per_update / 1e6:.2f} MB |',
      f'| parameter servers\' traffic per gradient step | '
      f'{costs.ps_bytes_per_update / 1e6:.2f} MB |',
      f'| frames per gradient step (per unroll) | {costs.frames_per_update:,.0f} |'])


def format_projections(rows: list[Projection], res: Resources) -> str:
  head = (f'| level set | DeepMind Lab frames/s per core | frames/s per worker host '
          f'({res.host_cores} cores) | learner side: gradient steps/s (limit) | '
          f'frames/s at saturation | worker hosts at saturation |')
  lines = [head, '|---|---:|---:|---:|---:|---:|']
  for p in rows:
    lines.append(f'| {p.level_set} | {p.frames_per_core:,.0f} | {p.host_fps:,.0f} | '
                 f'{p.updates_per_second:,.1f} ({p.limit}) | '
                 f'{p.frames_per_second:,.0f} | {p.hosts} |')
  return '\n'.join(lines)
