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
import json
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

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


class EpisodeWriter:
  """Appends finished episodes to ``episodes.csv`` (resumable: never truncates)."""

  def __init__(self, logdir: str, algorithm: str, seed: int):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, EPISODES_FILE)
    new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
    self._file = open(self.path, 'a', newline='')
    self._writer = csv.writer(self._file)
    if new:
      self._writer.writerow(EPISODE_FIELDS)
      self._file.flush()
    self._algorithm = algorithm
    self._seed = seed

  def write(self, task: str, env_steps: int, episode_return: float,
            episode_length: int, policy: str = 'task') -> None:
    if policy not in POLICIES:
      raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}')
    self._writer.writerow((self._algorithm, self._seed, task, int(env_steps),
                           f'{float(episode_return):.6g}', int(episode_length),
                           policy))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def read_episodes(logdir_or_file: str) -> list[dict]:
  """Reads ``episodes.csv`` (typed: ints, floats, strings) from a log directory."""
  path = logdir_or_file
  if os.path.isdir(path):
    path = os.path.join(path, EPISODES_FILE)
  rows = []
  with open(path, newline='') as f:
    for row in csv.DictReader(f):
      rows.append(dict(
          algorithm=row['algorithm'], seed=int(row['seed']), task=row['task'],
          env_steps=int(row['env_steps']),
          episode_return=float(row['episode_return']),
          episode_length=int(row['episode_length']), policy=row['policy']))
  return rows


def truncate_episodes(logdir: str, steps_by_task: Mapping[str, int]) -> int:
  """Drops rows past the given per-task step counters (used when resuming).

  Episodes that finished after the checkpoint a run resumes from are played
  again, so their rows are removed to keep one row per episode. Returns the
  number of rows removed.
  """
  path = os.path.join(logdir, EPISODES_FILE)
  if not os.path.exists(path):
    return 0
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows:
    return 0
  header, body = rows[0], rows[1:]
  task_col, steps_col = header.index('task'), header.index('env_steps')
  kept = [r for r in body
          if int(r[steps_col]) <= steps_by_task.get(r[task_col], 0)]
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(kept)
  os.replace(tmp, path)
  return len(body) - len(kept)


def write_json(path: str, data: Mapping) -> None:
  """Writes JSON atomically (a stopped run never leaves half a file)."""
  tmp = path + '.tmp'
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
