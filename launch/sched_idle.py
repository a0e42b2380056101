"""Why the cores idle during training: a scheduler trace, summed.

Records the kernel's scheduler events for ``--seconds`` with ``perf sched
record`` (Linux ``perf``; root, or ``kernel.perf_event_paranoid`` at -1) while a
training run goes on, and prints how long each core sat idle and, of that, how
long some runnable thread or process was waiting in another core's run queue
at the same time: work the kernel had but did not move to the idle core. With
``--pid`` of the trainer, waiting work is named by what it is (environment
processes, TensorFlow's threads, the trainer's other threads); without it, by
its command name.

  python -m distral_tf.launch --level_set=lasertag --num_tasks=2 \\
      --workers_per_task=2 --eval_share=0 --env_steps_per_task=1000000000 \\
      --max_seconds=90 --logdir=/tmp/sched_idle_run &
  sleep 50; python launch/sched_idle.py --seconds=8 --pid=$!

docs/dmlab.md ("The lock step, and the environments' own speed") has what it
measured.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Iterable

_LINE = re.compile(r'\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+)\s+(.*)')
_SWITCH = re.compile(r'prev_comm=(.*) prev_pid=(\d+) .*prev_state=(\S+) ==> '
                     r'next_comm=(.*) next_pid=(\d+)')
_WAKING = re.compile(r'comm=(.*) pid=(\d+) prio=\d+ target_cpu=(\d+)')
_MIGRATE = re.compile(r'comm=(.*) pid=(\d+) prio=\d+ orig_cpu=(\d+) dest_cpu=(\d+)')
# The recorder's own processes are not the work being traced.
_IGNORED = ('perf', 'sleep')


def _events(lines: Iterable[str]) -> list[tuple[float, int, str, str, int, str]]:
  """``(time, core, event, comm, tid, fields)`` of every event line, in order."""
  events = []
  for line in lines:
    m = _LINE.match(line)
    if m:
      comm, tid, cpu, t, event, rest = m.groups()
      events.append((float(t), int(cpu), event, comm, int(tid), rest))
  return events


def _first_running(events: list, cores: Iterable[int]) -> dict[int, int]:
  """What each core ran when the trace began.

  The task its first switch switched away from; on a core with no switch, the
  task its events ran in (a task that kept the core all along); a core with
  no event at all was idle all along (pid 0).
  """
  first: dict[int, int] = {}
  seen: dict[int, int] = {}
  for _, cpu, event, _, tid, rest in events:
    if cpu in first:
      continue
    s = _SWITCH.search(rest) if event.startswith('sched:sched_switch') else None
    if s:
      first[cpu] = int(s.group(2))
    else:
      seen.setdefault(cpu, tid)
  return {core: first.get(core, seen.get(core, 0)) for core in cores}


def analyse(lines: Iterable[str], kinds: dict[int, str] | None = None,
            cores: int | None = None) -> dict:
  """Idle time of every core, split by whether work waited on another core.

  ``lines``: ``perf script -F comm,tid,cpu,time,event,trace`` of a ``perf sched
  record``. ``kinds``: a name for some thread ids (default: their command).
  ``cores``: how many the machine has (default: those in the trace; a core
  with no event at all was idle).
  A task waits from its wake-up (``sched_waking``, on its target core) or its
  preemption until it runs; a core is idle while it runs the idle task (pid 0).
  Returns seconds: ``idle`` per core, ``idle_while_waiting`` (some task waited
  on another core meanwhile) per kind of the longest-waiting one, the
  ``seconds`` traced (first event to last), and the lengths of the idle
  periods that began and ended within the trace.
  """
  kinds = kinds or {}
  events = _events(lines)
  core_ids = set(range(cores)) if cores else set()
  core_ids |= {cpu for _, cpu, *_ in events}
  running = _first_running(events, core_ids)  # core -> pid running there
  names: dict[int, str] = {}
  waiting: dict[int, tuple[float, int]] = {}  # pid -> (since, core)
  idle: collections.Counter = collections.Counter({core: 0.0 for core in core_ids})
  elsewhere: collections.Counter = collections.Counter()
  idle_since: dict[int, float] = {}
  periods: list[float] = []
  last = events[0][0] if events else 0.0
  for t, cpu, event, _, _, rest in events:
    for core, pid in running.items():
      if pid == 0:
        idle[core] += t - last
        others = [(since, p) for p, (since, c) in waiting.items() if c != core]
        if others:
          elsewhere[_kind(min(others)[1], names, kinds)] += t - last
    last = t
    if event.startswith('sched:sched_switch'):
      s = _SWITCH.search(rest)
      if not s:
        continue
      prev_comm, prev, state, next_comm, nxt = s.groups()
      prev, nxt = int(prev), int(nxt)
      names[prev], names[nxt] = prev_comm, next_comm
      if prev == 0 and cpu in idle_since:
        periods.append(t - idle_since.pop(cpu))
      if nxt == 0:
        idle_since[cpu] = t
      running[cpu] = nxt
      waiting.pop(nxt, None)
      if state.startswith('R') and prev != 0 and not prev_comm.startswith(_IGNORED):
        waiting[prev] = (t, cpu)  # Preempted: runnable, not running.
    elif event.startswith('sched:sched_waking'):
      s = _WAKING.search(rest)
      if s and not s.group(1).startswith(_IGNORED):
        pid = int(s.group(2))
        names[pid] = s.group(1)
        if pid not in running.values():
          waiting[pid] = (t, int(s.group(3)))
    elif event.startswith('sched:sched_migrate_task'):
      s = _MIGRATE.search(rest)
      if s and int(s.group(2)) in waiting:
        pid = int(s.group(2))
        waiting[pid] = (waiting[pid][0], int(s.group(4)))
  return dict(seconds=(events[-1][0] - events[0][0]) if events else 0.0,
              idle=dict(sorted(idle.items())), idle_while_waiting=dict(elsewhere),
              idle_periods=periods)


def _kind(pid: int, names: dict[int, str], kinds: dict[int, str]) -> str:
  return kinds.get(pid, names.get(pid, '?'))


def trainer_kinds(pid: int) -> dict[int, str]:
  """Names for the threads of a trainer and of its environment processes.

  ``pid`` and every process below it: a process with TensorFlow's threads
  is a trainer, the processes it started are its environments, any other is
  a launcher (a shell or ``timeout`` around the trainer).
  """
  kinds: dict[int, str] = {}

  def walk(process: int, under_trainer: bool) -> None:
    threads = {}
    children = []
    for tid in os.listdir(f'/proc/{process}/task'):
      try:
        with open(f'/proc/{process}/task/{tid}/comm') as f:
          threads[int(tid)] = f.read().strip()
        with open(f'/proc/{process}/task/{tid}/children') as f:
          children += [int(c) for c in f.read().split()]
      except OSError:  # The thread ended meanwhile.
        continue
    trainer = any(comm.startswith('tf_') for comm in threads.values())
    for tid, comm in threads.items():
      if trainer:
        kinds[tid] = ("TensorFlow's threads" if comm.startswith('tf_')
                      else "the trainer's other threads")
      else:
        kinds[tid] = 'environment processes' if under_trainer else 'the launcher'
    for child in children:
      if os.path.isdir(f'/proc/{child}'):
        walk(child, under_trainer or trainer)

  walk(pid, False)
  return kinds


def record(seconds: float) -> list[str]:
  """``perf sched record`` of the whole machine for ``seconds``, as text."""
  if shutil.which('perf') is None:
    raise SystemExit('error: perf is not installed (Debian/Ubuntu: apt-get install '
                     'linux-perf, or linux-tools for the running kernel)')
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'sched.data')
    rec = subprocess.run(['perf', 'sched', 'record', '-o', data, '--', 'sleep',
                          f'{seconds:g}'], capture_output=True, text=True)
    if rec.returncode != 0 or not os.path.exists(data):
      raise SystemExit('error: perf sched record failed (it needs root or '
                       'kernel.perf_event_paranoid=-1): '
                       + (rec.stderr.strip().splitlines() or ['no output'])[-1])
    out = subprocess.run(['perf', 'script', '-i', data, '-F',
                          'comm,tid,cpu,time,event,trace'],
                         capture_output=True, text=True, check=True)
  return out.stdout.splitlines()


def report(result: dict) -> str:
  """The summary as printed."""
  seconds, idle = result['seconds'], result['idle']
  cores = len(idle) or 1
  total = sum(idle.values())
  waiting = result['idle_while_waiting']
  lines = [f'traced {seconds:.2f} s on {cores} cores',
           f'idle: {total:.3f} core-seconds, {100 * total / max(seconds * cores, 1e-9):.1f}% '
           f'of the cores (' + ', '.join(f'core {c}: {v:.3f}' for c, v in idle.items()) + ')',
           f'  of which another core had runnable work waiting: {sum(waiting.values()):.3f} '
           f'({100 * sum(waiting.values()) / max(total, 1e-9):.0f}% of the idle time); '
           'the longest-waiting was:']
  for kind, value in sorted(waiting.items(), key=lambda kv: -kv[1]):
    if value >= 0.001 * max(total, 1e-9):
      lines.append(f'    {kind:40s} {value:.3f}')
  periods = sorted(result['idle_periods'])
  if periods:
    median = periods[len(periods) // 2]
    lines.append(f'idle periods: {len(periods)}, median {1e3 * median:.2f} ms, '
                 f'{sum(p >= 1e-3 for p in periods)} of 1 ms or longer '
                 f'({sum(p for p in periods if p >= 1e-3):.3f} core-seconds)')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seconds', type=float, default=8.0, help='seconds to trace')
  parser.add_argument('--pid', type=int, help='the trainer\'s process id')
  args = parser.parse_args(argv)
  if args.seconds <= 0:
    parser.error('--seconds must be > 0')
  kinds = {}
  if args.pid is not None:
    if not os.path.isdir(f'/proc/{args.pid}'):
      parser.error(f'--pid={args.pid}: no such process')
    kinds = trainer_kinds(args.pid)
  print(report(analyse(record(args.seconds), kinds, os.cpu_count())))


if __name__ == '__main__':
  main(sys.argv[1:])
