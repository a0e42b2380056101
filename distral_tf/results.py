"""What a run writes into its log directory, and how it is read back.

Every trainer (tabular and deep, local and cluster) writes the same three files:

* ``episodes.csv``: one row per finished episode, columns ``EPISODE_FIELDS``.
  ``env_steps`` is that task's environment frames so far when the episode ended
  (action repeat included); ``policy`` is ``task`` for the acting policy pi_i and
  ``distilled`` for evaluation episodes of pi_0.
* ``config.json``: every flag of the run.
* ``summary.json``: per task and policy, the final return and the area under the
  learning curve; wall time; environment steps per second.

The figure and sweep code reads log directories through ``read_episodes`` and the
curve functions below only, so it works on any run, finished or not.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
from typing import Iterable, Mapping, Sequence

import numpy as np

from distral_tf import errors

EPISODE_FIELDS = ('algorithm', 'seed', 'task', 'env_steps', 'episode_return',
                  'episode_length', 'policy')
EPISODES_FILE = 'episodes.csv'
CONFIG_FILE = 'config.json'
SUMMARY_FILE = 'summary.json'
POLICIES = ('task', 'distilled')

# Number of equal-width bins of environment steps used for learning curves and AUC.
CURVE_BINS = 50
# Fraction of the budget at the end of training whose episodes give the final return.
FINAL_FRACTION = 0.1
# Bytes read from the end of episodes.csv to find an incomplete last row.
_TAIL_BYTES = 1 << 16


class EpisodeWriter:
  """Appends finished episodes to ``episodes.csv``.

  Each row goes out in one newline-terminated write, flushed at once, so a crash
  (or a full disk) can cut off at most the last row; ``read_episodes`` and
  ``truncate_episodes`` drop such a torn row, and so does a writer that opens the
  file again. ``fresh`` starts the file afresh; otherwise rows are appended
  (resumable: never truncates).
  """

  def __init__(self, logdir: str, algorithm: str, seed: int, fresh: bool = False):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, EPISODES_FILE)
    with errors.disk_full_is_usage_error(self.path):
      if not fresh:
        drop_torn_row(self.path)
      new = fresh or not os.path.exists(self.path) or os.path.getsize(self.path) == 0
      self._file = open(self.path, 'w' if fresh else 'a', newline='', encoding='utf-8')
    if new:
      self._write_row(EPISODE_FIELDS)
    self._algorithm = algorithm
    self._seed = seed

  def write(self, task: str, env_steps: int, episode_return: float,
            episode_length: int, policy: str = 'task') -> None:
    if policy not in POLICIES:
      raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}')
    self._write_row((self._algorithm, self._seed, task, int(env_steps),
                     f'{float(episode_return):.6g}', int(episode_length), policy))

  def _write_row(self, fields: Sequence) -> None:
    line = io.StringIO()
    csv.writer(line, lineterminator='\n').writerow(fields)
    with errors.disk_full_is_usage_error(self.path):
      self._file.write(line.getvalue())
      self._file.flush()

  def flush(self) -> None:
    """Rows are flushed as they are written; kept for callers that batch."""
    with errors.disk_full_is_usage_error(self.path):
      self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      with errors.disk_full_is_usage_error(self.path):
        self._file.close()


def drop_torn_row(path: str) -> bool:
  """Cuts an incomplete last row (no newline: a crash mid-write) off ``path``.

  Says so on stderr and returns True if there was one.
  """
  if not os.path.isfile(path):
    return False
  with open(path, 'rb+') as f:
    size = f.seek(0, os.SEEK_END)
    tail_start = max(size - _TAIL_BYTES, 0)
    f.seek(tail_start)
    tail = f.read(size - tail_start)
    if not tail or tail.endswith(b'\n'):
      return False
    newline = tail.rfind(b'\n')
    if newline < 0 and tail_start > 0:
      raise errors.UsageError(f'{path} ends in a line of over {_TAIL_BYTES} bytes: not '
                              'a results file; restore it or choose another --logdir')
    keep = tail_start + newline + 1
    f.truncate(keep)
  _say_dropped(path, size - keep)
  return True


def _say_dropped(path: str, size: int) -> None:
  print(f'warning: {path}: dropped an incomplete last row ({size} bytes) cut off when '
        'the run stopped', file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Loaded:
  """The rows of an ``episodes.csv`` read back: raw fields and typed values."""
  has_header: bool
  raw: list[list[str]]
  typed: list[dict]
  torn_bytes: int  # of an incomplete last row, left out


def _typed(row: Sequence[str]) -> dict:
  if len(row) != len(EPISODE_FIELDS):
    raise ValueError(f'{len(row)} fields instead of {len(EPISODE_FIELDS)}')
  values = dict(zip(EPISODE_FIELDS, row))
  return dict(
      algorithm=values['algorithm'], seed=int(values['seed']), task=values['task'],
      env_steps=int(values['env_steps']),
      episode_return=float(values['episode_return']),
      episode_length=int(values['episode_length']), policy=values['policy'])


def _load(path: str) -> _Loaded:
  """Reads ``path`` whole; an incomplete last row is left out (``torn_bytes``).

  Raises ``errors.UsageError`` if the file cannot be read, is not UTF-8 text, or
  has a header or a complete row that is not an episode.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise errors.UsageError(f'cannot read {path}: {e.strerror}') from None
  end = data.rfind(b'\n') + 1
  try:
    text = data[:end].decode('utf-8')
  except UnicodeDecodeError:
    raise errors.UsageError(f'{path} is not a results file (not UTF-8 text); restore '
                            'it or choose another --logdir') from None
  lines = list(csv.reader(io.StringIO(text)))
  loaded = _Loaded(has_header=bool(lines), raw=lines[1:], typed=[],
                   torn_bytes=len(data) - end)
  if lines and tuple(lines[0]) != EPISODE_FIELDS:
    raise errors.UsageError(f'{path} is not a results file: its first line is not '
                            f'{",".join(EPISODE_FIELDS)}; restore it or choose another '
                            '--logdir')
  for number, row in enumerate(loaded.raw, start=2):
    try:
      loaded.typed.append(_typed(row))
    except ValueError as e:
      raise errors.UsageError(f'{path}: line {number} is not an episode ({e}); restore '
                              'the file or choose another --logdir') from None
  return loaded


def read_episodes(logdir_or_file: str) -> list[dict]:
  """Reads ``episodes.csv`` (typed: ints, floats, strings) from a log directory.

  A run may be writing the file: an incomplete last row is left out.
  """
  path = logdir_or_file
  if os.path.isdir(path):
    path = os.path.join(path, EPISODES_FILE)
  return _load(path).typed


def truncate_episodes(logdir: str, steps_by_task: Mapping[str, int]) -> int:
  """Drops rows past the given per-task step counters (used when resuming).

  Episodes that finished after the checkpoint a run resumes from are played
  again, so their rows are removed to keep one row per episode. An incomplete
  last row is dropped too (and said so). Returns the number of complete rows
  removed. Raises ``errors.UsageError`` if the file is unreadable.
  """
  path = os.path.join(logdir, EPISODES_FILE)
  if not os.path.exists(path):
    return 0
  loaded = _load(path)
  if not loaded.has_header:
    return 0
  kept = [raw for raw, row in zip(loaded.raw, loaded.typed)
          if row['env_steps'] <= steps_by_task.get(row['task'], 0)]
  removed = len(loaded.raw) - len(kept)
  if not removed and not loaded.torn_bytes:
    return 0
  tmp = path + '.tmp'
  with errors.disk_full_is_usage_error(tmp):
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
      w = csv.writer(f, lineterminator='\n')
      w.writerow(EPISODE_FIELDS)
      w.writerows(kept)
  os.replace(tmp, path)
  if loaded.torn_bytes:
    _say_dropped(path, loaded.torn_bytes)
  return removed


def check_episodes_for_resume(logdir: str, checkpoint: str, env_steps: int,
                              recorded_rows: int | None) -> None:
  """Refuses an ``episodes.csv`` that cannot be the one ``checkpoint`` was saved with.

  The trainer writes the file's header before its first checkpoint, so a
  missing, empty or header-less file is refused, as is an unreadable one.
  ``recorded_rows`` is how many rows with ``env_steps`` at most ``env_steps``
  (the checkpoint's smallest per-task frame counter) the file held when the
  checkpoint was saved (None: not recorded). Resuming never removes such rows,
  so fewer now means the file was cut short or replaced. Raises
  ``errors.UsageError``.
  """
  path = os.path.join(logdir, EPISODES_FILE)
  fix = (f'restore it, or remove {logdir} (or choose another --logdir) to start '
         'afresh')
  if not os.path.exists(path):
    raise errors.UsageError(f'{path} is missing, but {checkpoint} holds a run that '
                            f'wrote it; {fix}')
  loaded = _load(path)
  if not loaded.has_header:
    raise errors.UsageError(f'{path} is empty, but {checkpoint} holds a run that '
                            f'wrote it; {fix}')
  have = sum(1 for row in loaded.typed if row['env_steps'] <= env_steps)
  if recorded_rows is not None and have < recorded_rows:
    raise errors.UsageError(
        f'{path} holds {have} episodes of the first {env_steps} frames per task, but '
        f'{checkpoint} was saved after {recorded_rows}: the file was cut short or '
        f'replaced; {fix}')


class RowCounter:
  """Counts the rows of an ``episodes.csv`` whose ``env_steps`` is at most a bound.

  Reads only what was appended since the previous call (complete rows only),
  so calling it at every checkpoint costs little however long the run.
  """

  def __init__(self, path: str):
    self.path = path
    self._reset()

  def _reset(self) -> None:
    self._offset = 0
    self._counted = 0
    self._pending: list[int] = []  # env_steps of rows read but above the bound so far

  def count(self, bound: int) -> int:
    try:
      size = os.path.getsize(self.path)
    except OSError:
      self._reset()
      return 0
    if size < self._offset:  # Replaced (resumed from a checkpoint): read it again.
      self._reset()
    with open(self.path, 'rb') as f:
      f.seek(self._offset)
      data = f.read(size - self._offset)
    end = data.rfind(b'\n') + 1
    text = data[:end].decode('utf-8', errors='replace')
    for row in csv.reader(io.StringIO(text)):
      if tuple(row) == EPISODE_FIELDS:
        continue
      try:
        self._pending.append(_typed(row)['env_steps'])
      except ValueError:
        continue  # Not an episode: ``check_episodes_for_resume`` reports it.
    self._offset += end
    self._counted += sum(1 for s in self._pending if s <= bound)
    self._pending = [s for s in self._pending if s > bound]
    return self._counted


def write_json(path: str, data: Mapping) -> None:
  """Writes JSON atomically (a stopped run never leaves half a file)."""
  tmp = path + '.tmp'
  with errors.disk_full_is_usage_error(tmp):
    with open(tmp, 'w') as f:
      json.dump(data, f, indent=2, sort_keys=True, default=str)
      f.write('\n')
  os.replace(tmp, path)


def select(rows: Iterable[dict], **where) -> list[dict]:
  """Rows whose fields equal every ``field=value`` given."""
  return [r for r in rows if all(r[k] == v for k, v in where.items())]


def learning_curve(rows: Sequence[dict], budget: int,
                   bins: int = CURVE_BINS) -> tuple[np.ndarray, np.ndarray]:
  """Mean episode return in ``bins`` equal bins of environment steps.

  Returns ``(bin_ends, mean_returns)``. A bin without episodes carries the
  previous bin's value; bins before the first episode take the first value.
  Bins where nothing is known at all are NaN.
  """
  edges = np.linspace(0, budget, bins + 1)
  means = np.full(bins, np.nan)
  if rows:
    steps = np.array([r['env_steps'] for r in rows], dtype=np.float64)
    rets = np.array([r['episode_return'] for r in rows], dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, steps, side='left') - 1, 0, bins - 1)
    sums = np.bincount(idx, weights=rets, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    with np.errstate(invalid='ignore', divide='ignore'):
      means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    last = np.nan
    for i in range(bins):
      if np.isnan(means[i]):
        means[i] = last
      else:
        last = means[i]
    first = np.flatnonzero(~np.isnan(means))
    if first.size:
      means[:first[0]] = means[first[0]]
  return edges[1:], means


def area_under_curve(rows: Sequence[dict], budget: int,
                     bins: int = CURVE_BINS) -> float:
  """Area under the learning curve divided by the budget: the mean return over training."""
  _, means = learning_curve(rows, budget, bins)
  return float(np.nanmean(means)) if np.any(~np.isnan(means)) else float('nan')


def final_return(rows: Sequence[dict], budget: int,
                 fraction: float = FINAL_FRACTION, min_episodes: int = 10) -> float:
  """Mean return of episodes that ended in the last ``fraction`` of the budget.

  Falls back on the last ``min_episodes`` episodes if fewer ended there.
  """
  if not rows:
    return float('nan')
  ordered = sorted(rows, key=lambda r: r['env_steps'])
  late = [r for r in ordered if r['env_steps'] >= (1.0 - fraction) * budget]
  if len(late) < min_episodes:
    late = ordered[-min_episodes:]
  return float(np.mean([r['episode_return'] for r in late]))


def steps_to_reach(rows: Sequence[dict], budget: int, threshold: float,
                   bins: int = CURVE_BINS) -> float:
  """First environment step at which the learning curve reaches ``threshold`` (inf if never)."""
  ends, means = learning_curve(rows, budget, bins)
  hit = np.flatnonzero(means >= threshold)
  return float(ends[hit[0]]) if hit.size else float('inf')


def frames_to_reach(rows: Sequence[dict], threshold: float, window: int) -> int | None:
  """First ``env_steps`` at which the mean of ``window`` consecutive returns >= threshold.

  ``rows`` are one task's episodes; None if the mean never gets there.
  """
  ordered = sorted(rows, key=lambda r: r['env_steps'])
  if len(ordered) < window:
    return None
  returns = np.array([r['episode_return'] for r in ordered])
  means = np.convolve(returns, np.ones(window) / window, mode='valid')
  hits = np.flatnonzero(means >= threshold)
  return None if not len(hits) else int(ordered[hits[0] + window - 1]['env_steps'])


def summarize(rows: Sequence[dict], budget: int) -> dict:
  """Per policy and task: episodes, final return and area under the curve."""
  out: dict = {}
  for policy in POLICIES:
    prows = select(rows, policy=policy)
    tasks = sorted({r['task'] for r in prows})
    if not tasks:
      continue
    per_task = {}
    for task in tasks:
      trows = select(prows, task=task)
      per_task[task] = dict(episodes=len(trows),
                            final_return=final_return(trows, budget),
                            auc=area_under_curve(trows, budget))
    out[policy] = dict(
        tasks=per_task,
        mean_final_return=float(np.mean([t['final_return'] for t in per_task.values()])),
        mean_auc=float(np.nanmean([t['auc'] for t in per_task.values()])))
  return out


def write_summary(logdir: str, rows: Sequence[dict], budget: int,
                  wall_time_s: float, env_steps: int, **extra) -> dict:
  """Writes ``summary.json``: ``summarize`` plus timing, and returns it."""
  summary = dict(summarize(rows, budget), budget_env_steps_per_task=int(budget),
                 total_env_steps=int(env_steps), wall_time_s=float(wall_time_s),
                 env_steps_per_second=float(env_steps / max(wall_time_s, 1e-9)),
                 **extra)
  write_json(os.path.join(logdir, SUMMARY_FILE), summary)
  return summary


def format_summary_table(summary: Mapping) -> str:
  """A per-task table of final returns for the task policies and pi_0."""
  task_part = summary.get('task', {}).get('tasks', {})
  dist_part = summary.get('distilled', {}).get('tasks', {})
  tasks = sorted(set(task_part) | set(dist_part))
  lines = [f'{"task":<40} {"pi_i final":>11} {"pi_i AUC":>10} {"pi_0 final":>11}']
  for t in tasks:
    a = task_part.get(t, {})
    b = dist_part.get(t, {})
    lines.append(f'{t:<40} {a.get("final_return", float("nan")):>11.3f} '
                 f'{a.get("auc", float("nan")):>10.3f} '
                 f'{b.get("final_return", float("nan")):>11.3f}')
  return '\n'.join(lines)
