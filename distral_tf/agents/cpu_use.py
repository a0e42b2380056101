"""Where a run's CPU goes: seconds by part of the trainer, per training frame.

Every part is measured, none inferred from another:

* environment processes: each reports with every answer its CPU seconds
  inside the environment's ``step``/``reset`` (stepping and rendering) and in
  all (``envs.process.EnvProcess.cpu_seconds``); the difference is what the
  process spends receiving actions and sending observations;
* actor and learner threads: ``ThreadClock`` splits each thread's own CPU time
  (``time.thread_time``) into sections where the thread marks them:
  inference, moving observations, bookkeeping; gradient steps, waiting;
* the evaluator's thread likewise (one section), and its environments;
* the main thread (progress, summaries, checkpoints) and every other Python
  thread, from ``/proc`` (Linux); the rest of the process's CPU is
  TensorFlow's own threads, which run the kernels of inference and learning;
* idle: the cores' time that nothing used.

Beside the parts, not in their sum: how long the trainer's threads and the
environment processes were runnable but waiting for a core (the scheduler's
run-queue wait, ``/proc/<id>/schedstat``, Linux): with idle cores, time lost
handing work from one thread or process to another.

``Accounting.snapshot`` reads them all; ``breakdown`` turns two snapshots
into milliseconds of CPU per training frame. ``summary.json`` carries the
breakdown of a run's steady window (``cpu_ms_per_frame``) and
``python -m distral_tf.bench`` prints it, the mean over its rounds.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Iterable, Mapping, Sequence

# Part names, in the order a table shows them.
ENV_STEP = 'environment step and render'
ENV_IPC = 'environment processes: actions in, observations out'
INFERENCE = 'actors: inference calls'
OBSERVATIONS = 'actors: sending actions, receiving observations'
ACTOR_OTHER = 'actors: unrolls, returns, counters'
LEARNING = 'learner: gradient step calls'
LEARNER_OTHER = 'learner: queue, metrics'
EVALUATOR = 'evaluator of pi_0 (thread and its environments)'
MAIN = 'main thread: progress, summaries, checkpoints'
TF_THREADS = "TensorFlow's threads: kernels of inference and learning"
OTHER_THREADS = 'other threads of the trainer'
IDLE = 'idle'
WAITING = 'threads waiting for a core (runnable; not in the sum)'
PARTS = (ENV_STEP, ENV_IPC, INFERENCE, OBSERVATIONS, ACTOR_OTHER, LEARNING,
         LEARNER_OTHER, EVALUATOR, MAIN, TF_THREADS, OTHER_THREADS, IDLE)


class ThreadClock:
  """The CPU time of one thread, split into the sections it marks.

  ``start`` in the thread, then ``mark(section)`` at the end of each
  section: the thread's CPU since the previous mark goes to ``section``.
  """

  def __init__(self):
    self.seconds: collections.Counter[str] = collections.Counter()
    self.native_id: int | None = None
    self._last = 0.0
    self._lock = threading.Lock()

  def start(self) -> None:
    self.native_id = threading.get_native_id()
    self._last = time.thread_time()

  def mark(self, section: str) -> None:
    now = time.thread_time()
    with self._lock:
      self.seconds[section] += now - self._last
    self._last = now

  def read(self) -> dict[str, float]:
    with self._lock:
      return dict(self.seconds)


def _cpu_seconds(stat_path: str) -> float | None:
  """User + system CPU seconds in a ``/proc/.../stat`` file; None if it is gone."""
  try:
    with open(stat_path, encoding='ascii') as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except OSError:
    return None
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _run_queue_seconds(schedstat_path: str) -> float:
  """Seconds a thread waited runnable for a core (``schedstat``); 0 if unreadable."""
  try:
    with open(schedstat_path, encoding='ascii') as f:
      return int(f.read().split()[1]) / 1e9
  except (OSError, IndexError, ValueError):
    return 0.0


def thread_cpu_seconds() -> dict[int, float]:
  """CPU seconds of every running thread of this process, by native id."""
  out = {}
  for tid in os.listdir('/proc/self/task'):
    seconds = _cpu_seconds(f'/proc/self/task/{tid}/stat')
    if seconds is not None:
      out[int(tid)] = seconds
  return out


class Accounting:
  """Reads the CPU seconds of every part of a run (see the module docstring).

  ``actor_clocks``/``learner_clocks``/``evaluator_clock``: the threads'
  ``ThreadClock``s (they keep a thread's time after it ends);
  ``env_processes``/``eval_processes``: objects with ``cpu_seconds()``;
  ``main_thread``: its native id. The process's own total (``/proc/self/stat``)
  counts threads that ended too; what no clock and no running Python thread
  accounts for is TensorFlow's.
  """

  def __init__(self, actor_clocks: Sequence[ThreadClock],
               learner_clocks: Sequence[ThreadClock], env_processes: Iterable,
               eval_processes: Iterable, evaluator_clock: ThreadClock | None,
               main_thread: int):
    self._actors = list(actor_clocks)
    self._learners = list(learner_clocks)
    self._evaluator = evaluator_clock
    self._envs = [e for e in env_processes if hasattr(e, 'cpu_seconds')]
    self._eval_envs = [e for e in eval_processes if hasattr(e, 'cpu_seconds')]
    self._main = main_thread

  def snapshot(self) -> dict[str, float]:
    """Seconds of CPU of every part so far (``PARTS`` but ``IDLE``), and 'wall'."""
    parts = collections.Counter()
    process_total = _cpu_seconds('/proc/self/stat') or 0.0
    threads = thread_cpu_seconds()
    clocked = 0.0
    roles = [(self._actors, {'inference': INFERENCE, 'observations': OBSERVATIONS,
                             'other': ACTOR_OTHER}),
             (self._learners, {'learning': LEARNING, 'other': LEARNER_OTHER}),
             ([self._evaluator] if self._evaluator else [], {'evaluation': EVALUATOR})]
    for clocks, sections in roles:
      for clock in clocks:
        for section, seconds in clock.read().items():
          parts[sections[section]] += seconds
          clocked += seconds
    parts[MAIN] += threads.get(self._main, 0.0)
    clocked_ids = {c.native_id for clocks, _ in roles for c in clocks}
    others = {t.native_id for t in threading.enumerate()} - clocked_ids - {self._main}
    parts[OTHER_THREADS] += sum(threads.get(t, 0.0) for t in others if t is not None)
    parts[TF_THREADS] += max(process_total - clocked - parts[MAIN] - parts[OTHER_THREADS],
                             0.0)
    for env in self._envs:
      inside, total = env.cpu_seconds()
      parts[ENV_STEP] += inside
      parts[ENV_IPC] += total - inside
    for env in self._eval_envs:
      parts[EVALUATOR] += env.cpu_seconds()[1]
    parts[WAITING] = sum(_run_queue_seconds(f'/proc/self/task/{tid}/schedstat')
                         for tid in threads)
    parts[WAITING] += sum(_run_queue_seconds(f'/proc/{env.pid}/schedstat')
                          for env in self._envs + self._eval_envs if hasattr(env, 'pid'))
    parts['wall'] = time.monotonic()
    return dict(parts)


def breakdown(before: Mapping[str, float], after: Mapping[str, float], frames: int,
              cores: int | None = None) -> dict[str, float]:
  """Milliseconds of CPU per training frame of every part between two snapshots.

  ``IDLE`` is what the ``cores`` (default: this machine's) did not use;
  'total' is the cores' time per frame.
  """
  cores = cores or os.cpu_count() or 1
  wall = after['wall'] - before['wall']
  if frames <= 0 or wall <= 0:
    return {}
  out = {part: 1e3 * (after.get(part, 0.0) - before.get(part, 0.0)) / frames
         for part in PARTS if part != IDLE}
  out['total'] = 1e3 * cores * wall / frames
  out[IDLE] = out['total'] - sum(out[p] for p in PARTS if p != IDLE)
  if WAITING in after and WAITING in before:  # A thread or process gone takes its own.
    out[WAITING] = max(1e3 * (after[WAITING] - before[WAITING]) / frames, 0.0)
  return out


def format_table(ms_per_frame: Mapping[str, float]) -> list[str]:
  """Lines of a table: part, ms of CPU per frame, share of the cores' time."""
  total = ms_per_frame.get('total', 0.0)
  lines = [f'{"where the CPU goes":<58} {"ms/frame":>9} {"share":>6}']
  for part in PARTS:
    value = ms_per_frame.get(part, 0.0)
    share = f'{100 * value / total:5.1f}%' if total else '     ?'
    lines.append(f'{part:<58} {value:>9.3f} {share:>6}')
  lines.append(f'{"all cores":<58} {total:>9.3f} {"100.0%":>6}')
  if WAITING in ms_per_frame:
    lines.append(f'{WAITING:<58} {ms_per_frame[WAITING]:>9.3f}')
  return lines
