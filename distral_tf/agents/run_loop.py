"""The run loop of both deep trainers: what a run shows and writes while it trains.

``RunLoop`` owns what the local trainer (``agents/train.py``) and the
cluster trainer (``distributed/trainer.py``) report alike, in the spirit of
acme's loggers and counters: the episode log (``episodes.csv``, through the
``EpisodeRecorder`` the actors share) and the progress counters, the progress
line and TensorBoard summaries every ``--log_interval_secs``, a checkpoint
every ``--checkpoint_secs`` (through the trainer's ``save``), the
``--max_seconds`` limit, Ctrl-C, the steady frames/s, and at the end
``summary.json``, the learning-curve PNG and the table of returns. The
trainers keep what differs: how they build the learner, save a checkpoint and
stop their threads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from distral_tf import plotting
from distral_tf import results
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import config as config_lib
from distral_tf.agents import cpu_use
from distral_tf.agents import evaluator as evaluator_lib

# Seconds between two looks of the loop at its threads and clocks.
TICK_SECS = 0.2


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')


def progress_line(progress: actor_lib.Progress, fps: float, evaluating: str = '',
                  eta_fps: float | None = None) -> str:
  """Frames done of the budget, frames/s, recent returns, policy lag and ETA.

  ``evaluating``: what the evaluator of pi_0 is doing, if anything. The ETA
  comes from ``eta_fps`` (default ``fps``); 0 shows it as unknown.
  """
  with progress.lock:
    frames = int(progress.frames.sum())
    total = progress.budget * len(progress.task_names)
    task_ret = [np.mean(v) for (t, p), v in progress.recent_returns.items()
                if p == 'task' and v]
    pi0_ret = [np.mean(v) for (t, p), v in progress.recent_returns.items()
               if p == 'distilled' and v]
  lag = progress.recent_lag()
  shown = min(frames, total)  # Actors may overshoot the budget by an unroll.
  rate = fps if eta_fps is None else eta_fps
  eta = max(total - frames, 0) / rate if rate > 0 else float('inf')
  returns = f'{np.mean(task_ret):.3f}' if task_ret else 'none finished yet'
  line = (f'frames {shown:,}/{total:,} ({100.0 * shown / total:.1f}%)  '
          f'fps {fps:,.0f}  return pi_i {returns}')
  if pi0_ret:
    line += f'  pi_0 {np.mean(pi0_ret):.3f}'
  line += f'  lag {lag:.1f}  ETA {_format_duration(eta)}'
  return line + (f'  ({evaluating})' if evaluating else '')


def write_summaries(writer, progress: actor_lib.Progress, fps: float,
                    learning_rate: float,
                    extra: Mapping[str, float] | None = None) -> None:
  """TensorBoard scalars at the frames done: returns, learner metrics, pace, lag.

  ``extra``: more scalars by name (a cluster's frames per host).
  """
  with progress.lock:
    step = int(progress.frames.sum())
    returns = {k: float(np.mean(v)) for k, v in progress.recent_returns.items() if v}
    metrics = {t: dict(m) for t, m in progress.metrics.items()}
  lag = progress.recent_lag()
  lag_stats = progress.lag_stats()
  with writer.as_default(step=step):
    for (task, policy), value in returns.items():
      prefix = 'return' if policy == 'task' else 'return_pi0'
      tf.summary.scalar(f'{prefix}/{task}', value)
    for t, m in metrics.items():
      for key, value in m.items():
        tf.summary.scalar(f'{key}/{progress.task_names[t]}', value)
    tf.summary.scalar('learning_rate', learning_rate)
    tf.summary.scalar('frames_per_second', fps)
    tf.summary.scalar('policy_lag', lag)
    for task, stats in lag_stats['policy_lag_per_task'].items():
      tf.summary.scalar(f'policy_lag_mean/{task}', stats['mean'])
      tf.summary.scalar(f'policy_lag_max/{task}', stats['max'])
    tf.summary.scalar('dropped_unrolls', lag_stats['dropped_unrolls'])
    for name, value in (extra or {}).items():
      tf.summary.scalar(name, value)
  writer.flush()


def exit_interrupted(logdir: str, status: int) -> None:
  """After Ctrl-C (or SIGTERM) and a checkpoint: one line, then exit ``status``."""
  print(f'Stopped; checkpoint saved in {logdir}. Run the same command to resume.',
        file=sys.stderr, flush=True)
  sys.exit(status)


def _accounting(workers: Sequence) -> cpu_use.Accounting:
  """Reads the CPU use of the trainer's threads and environments (``cpu_use``)."""
  actors = [w for w in workers if isinstance(w, actor_lib.Actor)]
  evaluator = [w for w in workers if isinstance(w, evaluator_lib.Evaluator)]
  return cpu_use.Accounting(
      [a.clock for a in actors],
      [w.clock for w in workers if getattr(w, 'learns', False)],
      [env for a in actors for env in a.environments],
      evaluator[0].environments if evaluator else [],
      evaluator[0].clock if evaluator else None, threading.get_native_id())


class RunLoop:
  """Counters, episode log, progress lines, summaries and cadence of one run.

  Build it once the checkpoint is restored (``frames`` and ``wall_time``
  restored): its ``progress`` and ``recorder`` go to the workers. ``train``
  runs them to the budget; ``finish`` writes the run's summary.
  """

  def __init__(self, config: config_lib.DeepConfig, level_set_name: str,
               task_names: Sequence[str], frames: np.ndarray, wall_time: float):
    """``frames``: per task at the start; ``wall_time``: seconds of earlier attempts."""
    self.config = config
    self.level_set_name = level_set_name
    self.writer = results.EpisodeWriter(config.logdir, config.algorithm, config.seed)
    self.progress = actor_lib.Progress(task_names, config.env_steps_per_task, frames)
    self.recorder = actor_lib.EpisodeRecorder(self.writer, self.progress)
    self.resumed_from = int(self.progress.frames.sum())
    self.wall_before = wall_time
    self.start_time = time.time()
    self.steady_start: tuple[float, int] | None = None
    # CPU use by part (``cpu_use``) and frames at the steady start and when
    # training stopped.
    self._cpu_window: list[tuple[dict[str, float], int]] = []

  def start_clock(self) -> None:
    """Training starts now: ``--max_seconds`` and the wall time count from here."""
    self.start_time = time.time()

  @property
  def frames(self) -> int:
    """Frames acted so far, summed over tasks (earlier attempts included)."""
    return int(self.progress.frames.sum())

  def wall_time(self, now: float | None = None) -> float:
    """Seconds of training, earlier attempts included, at ``now`` (default: now)."""
    return self.wall_before + (time.time() if now is None else now) - self.start_time

  def announce(self, workers_per_task: int, where: str = '') -> None:
    """The first line of training; ``where`` (e.g. the cluster) goes before the logdir."""
    config = self.config
    print(f'Training {config.algorithm} on {self.level_set_name} '
          f'({len(self.progress.task_names)} tasks, {workers_per_task} workers each)'
          f'{where} -> {config.logdir}', flush=True)

  def train(self, workers: Sequence, threads: Sequence[threading.Thread],
            stop: threading.Event, learner, save: Callable[[float], object],
            steady: Callable[[], bool], before_tick: Callable[[], None] = lambda: None,
            after_log: Callable[[], None] = lambda: None,
            scalars: Callable[[], Mapping[str, float]] = dict) -> bool:
    """Watches the started ``threads`` of ``workers`` until the run ends.

    It ends when every worker but the evaluator is done (the evaluator then
    finishes its last evaluation), ``stop`` is set, ``--max_seconds`` have
    passed or Ctrl-C comes. Every ``--log_interval_secs`` prints the progress
    line, writes summaries (``learner.learning_rate`` and ``scalars()``),
    flushes the episodes and calls ``after_log``; every ``--checkpoint_secs`` calls
    ``save(wall_time)``. The steady frames/s count from the first progress
    line at which ``steady()`` holds. ``before_tick`` runs at every look (it
    may raise). Returns whether Ctrl-C (or SIGTERM) stopped the run.
    """
    config = self.config
    summary_writer = tf.summary.create_file_writer(
        os.path.join(config.logdir, 'tensorboard'))
    training = [th for th, w in zip(threads, workers)
                if not isinstance(w, evaluator_lib.Evaluator)]
    evaluators = [w for w in workers if isinstance(w, evaluator_lib.Evaluator)]
    evaluating = lambda: evaluators[0].status() if evaluators else ''
    accounting = _accounting(workers)
    last_log = last_ckpt = time.time()
    last_frames = self.frames
    try:
      while any(th.is_alive() for th in training) and not stop.is_set():
        before_tick()
        time.sleep(TICK_SECS)
        now = time.time()
        if now - last_log >= config.log_interval_secs:
          frames = self.frames
          fps = (frames - last_frames) / (now - last_log)
          # The time left at the steady rate: start-up (TensorFlow building the
          # steps, maps compiled) would make the first lines' ETA far too long.
          eta_fps = 0.0
          if self.steady_start is not None and now > self.steady_start[0]:
            eta_fps = (frames - self.steady_start[1]) / (now - self.steady_start[0])
          print(progress_line(self.progress, fps, evaluating(), eta_fps), flush=True)
          if self.steady_start is None and steady():
            self.steady_start = (now, frames)
            self._cpu_window = [(accounting.snapshot(), frames)]
          write_summaries(summary_writer, self.progress, fps,
                          float(learner.learning_rate.numpy()), scalars())
          self.recorder.flush()
          after_log()
          last_log, last_frames = now, frames
        if now - last_ckpt >= config.checkpoint_secs:
          save(self.wall_time(now))
          self.recorder.flush()
          last_ckpt = now
        if config.max_seconds and now - self.start_time >= config.max_seconds:
          break
      if self._cpu_window:
        self._cpu_window.append((accounting.snapshot(), self.frames))
      if not stop.is_set() and self.progress.all_done():
        # The evaluator's last evaluation: one episode per task, side by side.
        last_log = time.time()
        for th in threads:
          while th.is_alive():
            th.join(TICK_SECS)
            if time.time() - last_log >= config.log_interval_secs and evaluating():
              print(f'Training done; {evaluating()}', flush=True)
              last_log = time.time()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (``interruption``'s handler).
      return True
    return False

  def cpu_ms_per_frame(self) -> dict[str, float]:
    """Milliseconds of CPU per training frame by part (``cpu_use``) over the
    steady window, to where training stopped; {} without a steady window."""
    if len(self._cpu_window) < 2:
      return {}
    (before, start), (after, end) = self._cpu_window[0], self._cpu_window[-1]
    return cpu_use.breakdown(before, after, end - start)

  def steady_fps(self, end: float) -> float:
    """Frames/s from the steady start to ``end``; NaN before any progress line."""
    if self.steady_start is None or end <= self.steady_start[0] + 1e-3:
      return float('nan')
    return (self.frames - self.steady_start[1]) / (end - self.steady_start[0])

  def finish(self, interrupted: bool, counts: Mapping | None = None,
             extra: Mapping | None = None) -> dict:
    """Writes ``summary.json`` and the learning-curve PNG, prints the table.

    ``counts`` follow the number of updates in ``summary.json``, ``extra``
    come last. Call once the workers are stopped and the writer is closed.
    """
    config = self.config
    end = time.time()
    rows = results.read_episodes(config.logdir)
    summary = results.write_summary(
        config.logdir, rows, config.env_steps_per_task, self.wall_time(end),
        self.frames, finished=self.progress.all_done() and not interrupted,
        algorithm=config.algorithm, level_set=self.level_set_name,
        updates=int(self.progress.updates), **(counts or {}),
        **self.progress.lag_stats(),
        interrupted_episodes=int(self.progress.interrupted_episodes),
        steady_frames_per_second=self.steady_fps(end),
        cpu_ms_per_frame=self.cpu_ms_per_frame(), **(extra or {}))
    plotting.plot_run(config.logdir, rows, config.env_steps_per_task,
                      f'{config.algorithm} on {self.level_set_name}')
    print(results.format_summary_table(summary), flush=True)
    return summary
