"""What Figure 4 and its table show, computed from log directories alone.

Runs are found by their ``episodes.csv`` (finished or not) and described by
their ``config.json``; all curves, areas under the curve (AUC) and final returns
come from ``distral_tf.results``. Conventions (paper, section 4.2 and B.2):

* Per run and task, AUC and final return are those of ``results``; a run's
  score is their mean over its tasks.
* An algorithm's best setting (entropy cost, learning rate) is the one with the
  highest mean AUC over its seeds and tasks. Each panel chooses on its own
  curves: the task policies' panel on pi_i, the distilled panel on pi_0.
* Spread is the standard deviation over the runs (seeds) at the best setting
  of their task-averaged curve, final return or AUC.
* The distilled panel shows pi_0 (``policy=distilled`` rows) of the Distral
  algorithms and the one shared network of A3C_multitask (its task rows).
* On navigation and lasertag every return of task t is divided by the best A3C
  score on t: the highest final return of the task policy among all ``a3c``
  runs of that level set.

**Entries.** What the experiments compare are *entries* (``ENTRIES``): the
paper's seven deep algorithms, and ``VARIANTS``, a deep algorithm run with
trainer switches of its own (``kl_ent_2col_adaptive``: ``kl_ent_2col`` with
``--adaptive_costs``). Sweeps, plans, transfer runs, tables, panels and claims
name an entry; its runs live under its name and are launched with
``launch_args``; a run is the entry its ``config.json`` says (``entry_name``:
its algorithm and which of ``SWITCHES`` it has on).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from distral_tf import errors
from distral_tf import results
from distral_tf.agents import algorithms

# The paper's seven deep algorithms, in the order of its Figure 4.
ALGORITHM_ORDER = tuple(algorithms.ALGORITHMS)
BASELINE_ALGORITHM = 'a3c'
NORMALISED_LEVEL_SETS = ('navigation', 'lasertag')
PANELS = ('task', 'distilled')
_SETTING_RE = re.compile(r'^ent([^_]+)_lr(.+)$')


@dataclasses.dataclass(frozen=True)
class Entry:
  """A deep algorithm as the experiments name it: an algorithm and its switches.

  Its runs are launched with ``--algorithm=<algorithm>`` and ``--<switch>``
  for each of ``switches`` (boolean trainer flags turned on), and go to
  directories under ``name``.
  """
  name: str
  algorithm: str
  switches: tuple[str, ...] = ()

  @property
  def launch_args(self) -> tuple[str, ...]:
    return (f'--algorithm={self.algorithm}', *(f'--{s}' for s in self.switches))


# Entries beyond the paper's algorithms: a Distral algorithm run with a trainer
# option, drawn and compared beside the fixed-cost algorithms.
VARIANTS = (
    # Per-task costs tuned by a dual step (docs/agents.md, "Adaptive costs").
    Entry('kl_ent_2col_adaptive', 'kl_ent_2col', ('adaptive_costs',)),
)


def _entries() -> dict[str, Entry]:
  """The seven algorithms, each followed by its variants."""
  entries = {}
  for name in ALGORITHM_ORDER:
    entries[name] = Entry(name, name)
    entries.update((v.name, v) for v in VARIANTS if v.algorithm == name)
  return entries


ENTRIES: dict[str, Entry] = _entries()
ENTRY_ORDER = tuple(ENTRIES)
# The trainer switches that tell entries apart (off when a config.json lacks them).
SWITCHES = tuple(sorted({s for v in VARIANTS for s in v.switches}))
_ENTRY_OF_RUN = {(e.algorithm, frozenset(e.switches)): e.name for e in ENTRIES.values()}


def entry_name(algorithm: str, config: Mapping[str, Any]) -> str | None:
  """The entry of a run of ``algorithm`` whose flags are ``config``; None if none."""
  on = frozenset(s for s in SWITCHES if config.get(s) is True)
  return _ENTRY_OF_RUN.get((algorithm, on))


def run_name(algorithm: str, config: Mapping[str, Any]) -> str:
  """``entry_name``, or the algorithm and its switches (``kl_1col --adaptive_costs``)."""
  name = entry_name(algorithm, config)
  if name is not None:
    return name
  return ' '.join([algorithm] + [f'--{s}' for s in SWITCHES if config.get(s) is True])


def launch_args(name: str) -> tuple[str, ...]:
  """The trainer flags that make a run of entry ``name``.

  A name that is no entry is passed on as ``--algorithm`` (the trainer judges it).
  """
  entry = ENTRIES.get(name)
  return entry.launch_args if entry else (f'--algorithm={name}',)


def check_entries(names: Sequence[str], flag: str) -> None:
  """Raises ``errors.UsageError`` unless ``names`` (``--flag``) are entries, one at least."""
  unknown = [a for a in names if a not in ENTRIES]
  if unknown or not names:
    raise errors.UsageError(
        f'--{flag}: unknown {",".join(unknown) or "(none given)"}; valid choices: '
        f'{", ".join(ENTRY_ORDER)}')


def distilled_source(algorithm: str) -> str | None:
  """Which rows hold an entry's policy shared by all tasks, if it has one."""
  entry = ENTRIES.get(algorithm)
  algo = algorithms.ALGORITHMS.get(entry.algorithm) if entry else None
  if algo is None:
    return None
  if algo.distilled:
    return 'distilled'
  if algo.architecture == 'shared':
    return 'task'
  return None


@dataclasses.dataclass
class Scores:
  """Per task: learning curve, final return and AUC (of ``results``)."""
  curves: dict[str, np.ndarray]
  finals: dict[str, float]
  aucs: dict[str, float]


@dataclasses.dataclass
class Run:
  """One run's log directory: its settings and the scores of its episodes."""
  logdir: str
  level_set: str
  # Its entry (``ENTRIES``), from its config.json; ``run_name`` if it is none.
  algorithm: str
  seed: int
  entropy_cost: float | None
  learning_rate: float | None
  budget: int
  finished: bool
  config: dict
  # 'task' (pi_i) and 'distilled' (pi_0) -> raw scores; a policy without
  # episodes is absent.
  scores: dict[str, Scores]

  @property
  def setting(self) -> tuple[float | None, float | None]:
    return (self.entropy_cost, self.learning_rate)


def read_json(path: str) -> dict:
  """A JSON object from ``path``; {} when missing or unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}


def _float_or_none(x) -> float | None:
  try:
    return None if x is None else float(x)
  except (TypeError, ValueError):
    return None


def score_episodes(rows: Sequence[dict], budget: int) -> Scores:
  """Per-task curve, final return and AUC of one policy's episodes."""
  scores = Scores({}, {}, {})
  for task in sorted({r['task'] for r in rows}):
    trows = results.select(rows, task=task)
    scores.curves[task] = results.learning_curve(trows, budget)[1]
    scores.finals[task] = results.final_return(trows, budget)
    scores.aucs[task] = results.area_under_curve(trows, budget)
  return scores


def load_run(logdir: str, root: str | None = None) -> Run | None:
  """Reads and scores one run (episodes are not kept); None without episodes.

  Settings come from ``config.json``; where it lacks them, from the sweep's
  directory names (``<level_set>/<algorithm>/ent<E>_lr<LR>/seed<S>`` under
  ``root``). The budget is the run's ``--env_steps_per_task``, else the one in
  ``summary.json``, else the last episode's step count.
  """
  rows = results.read_episodes(logdir)
  if not rows:
    return None
  config = read_json(os.path.join(logdir, results.CONFIG_FILE))
  summary = read_json(os.path.join(logdir, results.SUMMARY_FILE))
  parts = os.path.relpath(logdir, root).split(os.sep) if root else []
  setting = _SETTING_RE.match(parts[-2]) if len(parts) >= 2 else None
  level_set = config.get('level_set') or (parts[0] if len(parts) >= 4 else 'unknown')
  entropy_cost = _float_or_none(config.get('entropy_cost'))
  learning_rate = _float_or_none(config.get('learning_rate'))
  if setting and entropy_cost is None:
    entropy_cost = _float_or_none(setting.group(1))
  if setting and learning_rate is None:
    learning_rate = _float_or_none(setting.group(2))
  budget = max(1, int(config.get('env_steps_per_task') or
                      summary.get('budget_env_steps_per_task') or
                      max(r['env_steps'] for r in rows)))
  scores = {}
  for policy in results.POLICIES:
    prows = results.select(rows, policy=policy)
    if prows:
      scores[policy] = score_episodes(prows, budget)
  algorithm = str(config.get('algorithm') or rows[0]['algorithm'])
  return Run(logdir=logdir, level_set=str(level_set),
             algorithm=run_name(algorithm, config),
             seed=int(config.get('seed', rows[0]['seed'])),
             entropy_cost=entropy_cost, learning_rate=learning_rate, budget=budget,
             finished=summary.get('finished') is True, config=config, scores=scores)


def discover_runs(root: str) -> tuple[list[Run], list[str]]:
  """Every multitask run under ``root`` (a sweep directory), and notes.

  Runs trained on a subset of tasks or from a prior (transfer runs) and runs
  that are no entry (not a deep algorithm, or one with switches no entry has)
  are left out, with a note.
  """
  runs, notes = [], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != 'checkpoints')
    if results.EPISODES_FILE not in filenames:
      continue
    run = load_run(dirpath, root)
    if run is None:
      continue
    if run.config.get('tasks') or run.config.get('prior_logdir'):
      notes.append(f'{dirpath}: left out (trained on chosen tasks or from a prior)')
    elif run.algorithm not in ENTRIES:
      base = run.algorithm.split(' ')[0]
      why = (f'{run.algorithm} is none of the entries {", ".join(ENTRY_ORDER)}'
             if base in algorithms.ALGORITHMS else
             f'{run.algorithm} is not a deep algorithm')
      notes.append(f'{dirpath}: left out ({why})')
    else:
      runs.append(run)
  return runs, notes


@dataclasses.dataclass
class RunMetrics:
  """One run seen through one policy, returns divided by per-task scales."""
  run: Run
  curves: dict[str, np.ndarray]
  finals: dict[str, float]
  aucs: dict[str, float]

  @property
  def mean_curve(self) -> np.ndarray:
    with np.errstate(all='ignore'):
      return np.nanmean(np.stack(list(self.curves.values())), axis=0)

  @property
  def mean_final(self) -> float:
    return float(np.nanmean(list(self.finals.values())))

  @property
  def mean_auc(self) -> float:
    return float(np.nanmean(list(self.aucs.values())))


def run_metrics(run: Run, policy: str,
                scales: dict[str, float] | None = None) -> RunMetrics | None:
  """``run``'s scores of ``policy`` with task t's divided by ``scales[t]``, or None."""
  raw = run.scores.get(policy)
  if raw is None:
    return None
  scales = scales or {}
  return RunMetrics(run, {t: c / scales.get(t, 1.0) for t, c in raw.curves.items()},
                    {t: v / scales.get(t, 1.0) for t, v in raw.finals.items()},
                    {t: v / scales.get(t, 1.0) for t, v in raw.aucs.items()})


def baseline_scales(runs: Iterable[Run]) -> dict[str, float]:
  """Best A3C score per task: the highest final return of any ``a3c`` run's pi_i."""
  best: dict[str, float] = {}
  for run in runs:
    if run.algorithm != BASELINE_ALGORITHM:
      continue
    metrics = run_metrics(run, 'task')
    for task, value in (metrics.finals.items() if metrics else ()):
      if not math.isnan(value):
        best[task] = max(best.get(task, -math.inf), value)
  return best


def std_over_runs(values: Sequence[float]) -> float:
  """Sample standard deviation of the non-NaN values (0 for fewer than two)."""
  values = [v for v in values if not math.isnan(v)]
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_and_std(values: Sequence[float]) -> str:
  """``'mean +- std'`` of runs' scores."""
  with np.errstate(all='ignore'):
    mean = float(np.nanmean(values)) if len(values) else math.nan
  return f'{mean:.4g} +- {std_over_runs(values):.4g}'


@dataclasses.dataclass
class CurveStats:
  """Runs' task-averaged curves and scores: their mean and spread."""
  x: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  finals: list[float]
  aucs: list[float]


def curve_stats(metrics: Sequence[RunMetrics], budget: int) -> CurveStats:
  """Mean and standard deviation over runs of their task-averaged curves."""
  x = np.linspace(0, budget, results.CURVE_BINS + 1)[1:]
  curves = np.stack([m.mean_curve for m in metrics])
  with np.errstate(all='ignore'):
    mean = np.nanmean(curves, axis=0)
    std = (np.nanstd(curves, axis=0, ddof=1) if len(metrics) > 1
           else np.zeros_like(mean))
  return CurveStats(x=x, mean=mean, std=std,
                    finals=[m.mean_final for m in metrics],
                    aucs=[m.mean_auc for m in metrics])


@dataclasses.dataclass
class AlgorithmResult:
  """One algorithm in one panel of one level set."""
  algorithm: str
  panel: str
  best_setting: tuple[float | None, float | None]
  setting_scores: dict[tuple, float]     # mean AUC per setting
  best: CurveStats                        # runs at the best setting
  best_logdirs: list[str]
  sorted_finals: list[float]             # every run's final return, decreasing
  num_runs: int
  num_finished: int


@dataclasses.dataclass
class LevelSetResult:
  level_set: str
  normalised: bool
  scales: dict[str, float]
  panels: dict[str, list[AlgorithmResult]]
  notes: list[str]


def _setting_key(setting: tuple) -> tuple:
  return tuple(-math.inf if v is None else v for v in setting)


def best_setting(metrics: Sequence[RunMetrics]) -> tuple[tuple, dict[tuple, float]]:
  """The setting with the highest mean AUC over its runs and tasks, and all scores."""
  by_setting: dict[tuple, list[float]] = {}
  for m in metrics:
    by_setting.setdefault(m.run.setting, []).extend(m.aucs.values())
  scores = {}
  for setting in sorted(by_setting, key=_setting_key):
    values = [v for v in by_setting[setting] if not math.isnan(v)]
    scores[setting] = float(np.mean(values)) if values else -math.inf
  best = max(scores, key=lambda s: scores[s])  # First of equals in sorted order.
  return best, scores


def analyse_algorithm(runs: Sequence[Run], panel: str, budget: int,
                      scales: dict[str, float]) -> AlgorithmResult | None:
  """Best setting, its curves and every run's final return for one algorithm."""
  source = 'task' if panel == 'task' else distilled_source(runs[0].algorithm)
  if source is None:
    return None
  metrics = [m for m in (run_metrics(r, source, scales) for r in runs) if m]
  if not metrics:
    return None
  best, scores = best_setting(metrics)
  at_best = [m for m in metrics if m.run.setting == best]
  at_best.sort(key=lambda m: m.run.seed)
  finals = sorted((m.mean_final for m in metrics), reverse=True,
                  key=lambda v: -math.inf if math.isnan(v) else v)
  return AlgorithmResult(
      algorithm=runs[0].algorithm, panel=panel, best_setting=best,
      setting_scores=scores, best=curve_stats(at_best, budget),
      best_logdirs=[m.run.logdir for m in at_best], sorted_finals=finals,
      num_runs=len(metrics), num_finished=sum(m.run.finished for m in metrics))


def analyse_level_set(runs: Sequence[Run], level_set: str) -> LevelSetResult:
  """Both panels (task policies, distilled policies) of one level set."""
  runs = [r for r in runs if r.level_set == level_set]
  notes: list[str] = []
  budgets = sorted({r.budget for r in runs})
  budget = budgets[-1]
  if len(budgets) > 1:
    notes.append(f'{level_set}: runs have different budgets {budgets}; curves are '
                 f'averaged by fraction of budget and drawn over {budget} frames')
  normalised = level_set in NORMALISED_LEVEL_SETS
  scales: dict[str, float] = {}
  if normalised:
    best_a3c = baseline_scales(runs)
    tasks = sorted({t for run in runs for sc in run.scores.values() for t in sc.finals})
    for task in tasks:
      if best_a3c.get(task, 0.0) > 0:
        scales[task] = best_a3c[task]
      else:
        notes.append(f'{level_set}: task {task} not normalised (no positive A3C '
                     'score)')
  unfinished = sum(not r.finished for r in runs)
  if unfinished:
    notes.append(f'{level_set}: {unfinished} of {len(runs)} runs are not finished; '
                 'their curves hold their last value')
  present = [a for a in ENTRY_ORDER if any(r.algorithm == a for r in runs)]
  # The paper's algorithms are noted when missing; a variant is drawn when run.
  missing = [a for a in ALGORITHM_ORDER if a not in present]
  if missing:
    notes.append(f'{level_set}: no runs of {", ".join(missing)} (skipped)')
  panels: dict[str, list[AlgorithmResult]] = {p: [] for p in PANELS}
  for algorithm in present:
    algo_runs = [r for r in runs if r.algorithm == algorithm]
    for panel in PANELS:
      result = analyse_algorithm(algo_runs, panel, budget, scales)
      if result is not None:
        panels[panel].append(result)
      elif panel == 'distilled' and distilled_source(algorithm):
        notes.append(f'{level_set}: {algorithm} has no pi_0 episodes yet')
  return LevelSetResult(level_set=level_set, normalised=normalised and bool(scales),
                        scales=scales, panels=panels, notes=notes)
