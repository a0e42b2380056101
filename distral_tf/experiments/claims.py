"""The paper's Figure 4 claims, checked on a sweep with their spread over seeds.

For one level set, each claim compares two algorithms (or the best of a group)
on the runs of a sweep (``analysis.discover_runs``):

1. Distral (2col) >= the A3C baselines in AUC of the task policies pi_i.
2. Distral's share of good runs over the whole grid >= the baselines' (panel
   A2: robustness). A run is *good* when its final return (mean over its tasks)
   is at least ``GOOD_FRACTION`` of the optimum: the tasks' optimal return where
   the level set knows it (``two_rooms``); otherwise, where the uniform random
   policy's returns of the run's tasks are recorded and positive
   (``random_returns``: DeepMind Lab), ``TIMES_RANDOM`` times their mean (the
   learning check's bar, docs/dmlab.md); otherwise ``GOOD_FRACTION`` of the best
   final return of any run of the level set.
3. Two columns learn faster than one: AUC of pi_i, 2col - 1col.
4. KL+ent >= KL at the end of training: final return of pi_i.
5. pi_0 of the 2col algorithms is the best distilled policy: AUC of pi_0.

**Variants.** A variant of a Distral algorithm (``analysis.VARIANTS``, e.g.
``kl_ent_2col_adaptive``) that ran on the level set is compared with the A3C
baselines too, in claims 1 and 2, each line beside its algorithm's
(``VARIANT_CLAIMS``), and with its own algorithm last (``VARIANT_KEEPS``: its
final return >= the algorithm's, of pi_i and, where the algorithm has one,
pi_0: does the option cost the algorithm anything at the end); a variant not
run adds no line.

Numbers are those of Figure 4's table: an algorithm's score is the mean over
seeds at its best setting (highest mean AUC); a group's is the best member's.

**Algorithms not run.** A sweep may run a subset of the algorithms. A group is
then scored by the members that have runs, and the line names the others as not
run; a comparison with no scored member on one side is not made, and its line
says *not run* (or *no episodes yet*, when that side's algorithms have runs but
none with episodes of the policy compared).

**Bootstrap.** ``NUM_REPLICATES`` replicates (fixed generator seed, so the
numbers are reproducible). In each, every algorithm's seeds are resampled with
replacement, independently for each setting (entropy cost, learning rate); each
algorithm's best setting is chosen again on the resampled AUCs, so the
uncertainty of choosing the setting is included; the difference is computed as
for the point estimate. The interval is the 2.5th to 97.5th percentile of the
replicates' differences. Shares of good runs resample the same way (every
setting's runs).

**Verdict** for "left >= right": *agrees* when the interval lies above 0 and the
difference exceeds the seeds' spread (the largest standard deviation over seeds
at the best setting among the algorithms compared); *disagrees* when the
interval lies below 0 and minus the difference exceeds that spread; otherwise
*cannot tell*. With one seed at some setting of either algorithm compared (a
sweep part way through) there is no spread to judge by and resampling one run
changes nothing: *cannot tell*, whatever the difference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from distral_tf.agents import algorithms
from distral_tf.experiments import analysis
from distral_tf.experiments import random_returns

GOOD_FRACTION = 0.8
TIMES_RANDOM = 2.0
NUM_REPLICATES = 2000
BOOTSTRAP_SEED = 0
BASELINES = ('a3c', 'a3c_multitask', 'a3c_2col')
# Columns of a run's sample: task-averaged AUC, final return, good (1 or 0).
AUC, FINAL, GOOD = 0, 1, 2
METRIC_NAMES = {AUC: 'AUC', FINAL: 'final return', GOOD: 'share of good runs'}

# setting (entropy cost, learning rate) -> [runs, 3] array of (AUC, final, good).
Samples = dict[tuple, np.ndarray]
# (claim, panel, metric, left group, right group).
ClaimSpec = tuple[str, str, int, Sequence[str], Sequence[str]]

DISTRAL_AUC = 'Distral (2col) >= the A3C baselines in AUC'
DISTRAL_GOOD = 'Distral\'s share of good runs >= the baselines\''
CLAIM_SPECS: tuple[ClaimSpec, ...] = (
    (DISTRAL_AUC, 'task', AUC, ['kl_ent_2col'], BASELINES),
    (DISTRAL_AUC, 'task', AUC, ['kl_2col'], BASELINES),
    (DISTRAL_GOOD, 'task', GOOD, ['kl_ent_2col'], BASELINES),
    (DISTRAL_GOOD, 'task', GOOD, ['kl_2col'], BASELINES),
    ('2col learns faster than 1col (AUC)', 'task', AUC, ['kl_2col'], ['kl_1col']),
    ('2col learns faster than 1col (AUC)', 'task', AUC, ['kl_ent_2col'],
     ['kl_ent_1col']),
    ('KL+ent >= KL at the end of training', 'task', FINAL, ['kl_ent_2col'],
     ['kl_2col']),
    ('KL+ent >= KL at the end of training', 'task', FINAL, ['kl_ent_1col'],
     ['kl_1col']),
    ('pi_0 of the 2col algorithms is the best distilled policy (AUC)', 'distilled',
     AUC, ['kl_2col', 'kl_ent_2col'], ['kl_1col', 'kl_ent_1col', 'a3c_multitask']),
)
# The claims a variant of the algorithm on their left joins, on a line of its own.
VARIANT_CLAIMS = (DISTRAL_AUC, DISTRAL_GOOD)
# Each variant that ran against its own algorithm, at the end of training.
VARIANT_KEEPS = 'A variant ends at least where its algorithm does'


@dataclasses.dataclass(frozen=True)
class Comparison:
  """``left`` against ``right`` on one metric and panel, with its verdict."""
  claim: str
  panel: str
  metric: int
  left: str                  # Algorithm (best member of a group) on the left.
  right: str
  left_value: float
  right_value: float
  left_std: float
  right_std: float
  difference: float
  ci: tuple[float, float]
  spread: float
  verdict: str
  # Members of the groups compared that have no runs on the level set.
  not_run: tuple[str, ...] = ()
  # Fewest seeds at any setting of ``left`` and ``right``; below 2: *cannot tell*.
  seeds: int = 2


@dataclasses.dataclass(frozen=True)
class Missing:
  """A comparison that was not made: one side has no scored algorithm."""
  claim: str
  panel: str
  metric: int
  left: tuple[str, ...]
  right: tuple[str, ...]
  not_run: tuple[str, ...]     # Algorithms compared without runs on the level set.
  unscored: tuple[str, ...]    # With runs, but none with episodes of the policy.

  @property
  def verdict(self) -> str:
    return 'no episodes yet' if self.unscored else 'not run'


def _replicate_means(samples: Samples, rng: np.random.Generator | None,
                     num: int) -> dict[tuple, np.ndarray]:
  """Per setting, the [num, 3] means over (resampled) runs; num=1 without rng."""
  out = {}
  for setting, values in samples.items():
    if rng is None:
      out[setting] = values.mean(axis=0)[None]
    else:
      idx = rng.integers(0, len(values), size=(num, len(values)))
      out[setting] = values[idx].mean(axis=1)
  return out


def best_setting_scores(samples: Samples, metric: int,
                        rng: np.random.Generator | None = None,
                        num: int = 1) -> np.ndarray:
  """The metric's mean at the best setting by mean AUC, per replicate ([num]).

  Without ``rng`` the single value of the runs as they are (Figure 4's table);
  ties go to the first setting in ``analysis``'s order, as there.
  """
  means = _replicate_means(samples, rng, num)
  settings = sorted(means, key=analysis._setting_key)  # pylint: disable=protected-access
  stack = np.stack([means[s] for s in settings])       # [settings, num, 3]
  best = np.argmax(stack[..., AUC], axis=0)
  return stack[best, np.arange(stack.shape[1]), metric]


def share_of_good(samples: Samples, rng: np.random.Generator | None = None,
                  num: int = 1) -> np.ndarray:
  """Fraction of good runs over every setting, per replicate ([num])."""
  means = _replicate_means(samples, rng, num)
  counts = {s: len(v) for s, v in samples.items()}
  total = sum(counts.values())
  return sum(means[s][:, GOOD] * counts[s] for s in samples) / total


def best_setting_std(samples: Samples, metric: int) -> float:
  """Standard deviation over seeds of the metric at the best setting."""
  scores = {s: float(np.mean(v[:, AUC])) for s, v in samples.items()}
  settings = sorted(scores, key=analysis._setting_key)  # pylint: disable=protected-access
  best = max(settings, key=lambda s: scores[s])
  return analysis.std_over_runs(list(samples[best][:, metric]))


def _score(samples: Samples, metric: int, rng=None, num: int = 1) -> np.ndarray:
  if metric == GOOD:
    return share_of_good(samples, rng, num)
  return best_setting_scores(samples, metric, rng, num)


def compare(claim: str, panel: str, metric: int, left: Sequence[str],
            right: Sequence[str], samples: Mapping[str, Samples],
            num_replicates: int = NUM_REPLICATES,
            seed: int = BOOTSTRAP_SEED) -> Comparison | None:
  """Best of ``left`` minus best of ``right``; None unless both sides have runs."""
  left = [a for a in left if samples.get(a)]
  right = [a for a in right if samples.get(a)]
  if not left or not right:
    return None
  point = {a: float(_score(samples[a], metric)[0]) for a in left + right}
  best_left = max(left, key=lambda a: point[a])
  best_right = max(right, key=lambda a: point[a])
  rng = np.random.default_rng(seed)
  reps = {a: _score(samples[a], metric, rng, num_replicates) for a in left + right}
  diffs = (np.max([reps[a] for a in left], axis=0) -
           np.max([reps[a] for a in right], axis=0))
  difference = point[best_left] - point[best_right]
  if metric == GOOD:
    stds = {a: 0.0 for a in left + right}
  else:
    stds = {a: best_setting_std(samples[a], metric) for a in left + right}
  spread = max(stds[best_left], stds[best_right])
  low, high = (float(v) for v in np.percentile(diffs, [2.5, 97.5]))
  seeds = min(len(v) for a in (best_left, best_right) for v in samples[a].values())
  if seeds < 2:
    verdict = 'cannot tell'
  elif low > 0 and difference > spread:
    verdict = 'agrees'
  elif high < 0 and -difference > spread:
    verdict = 'disagrees'
  else:
    verdict = 'cannot tell'
  return Comparison(claim=claim, panel=panel, metric=metric, left=best_left,
                    right=best_right, left_value=point[best_left],
                    right_value=point[best_right], left_std=stds[best_left],
                    right_std=stds[best_right], difference=difference,
                    ci=(low, high), spread=spread, verdict=verdict, seeds=seeds)


def optimal_return(run: analysis.Run) -> float | None:
  """The mean optimal return of ``run``'s tasks where the level set knows it."""
  if run.level_set != 'two_rooms':
    return None
  from distral_tf.envs import two_rooms_tasks  # pylint: disable=g-import-not-at-top
  try:
    optimum = two_rooms_tasks.optimal_returns(run.config or None, _tasks(run))
  except ValueError:
    return None
  return float(np.mean(list(optimum.values())))


def random_return(run: analysis.Run, scales: Mapping[str, float]) -> float | None:
  """The mean over ``run``'s tasks of the random policy's recorded return (each
  divided by its task's scale), or None when a task has none."""
  values = []
  for task in _tasks(run):
    value = random_returns.random_return(run.level_set, task)
    if value is None:
      return None
    values.append(value / scales.get(task, 1.0))
  return float(np.mean(values)) if values else None


def good_threshold(run: analysis.Run, scales: Mapping[str, float]
                   ) -> tuple[float, str] | None:
  """The final return from which ``run`` is good, and what it is; None when
  the level set has no reference (see the module doc)."""
  optimum = optimal_return(run)
  if optimum is not None:
    return (GOOD_FRACTION * optimum,
            f'final return >= {GOOD_FRACTION:g} x the tasks\' optimal return')
  rand = random_return(run, scales)
  if rand is not None and rand > 0:
    return (TIMES_RANDOM * rand, f'final return >= {TIMES_RANDOM:g} x the uniform '
            'random policy\'s (mean over the tasks, random_returns.json)')
  return None


def _tasks(run: analysis.Run) -> list[str]:
  return sorted({t for s in run.scores.values() for t in s.finals})


def collect_samples(runs: Sequence[analysis.Run], panel: str,
                    scales: Mapping[str, float] | None = None,
                    reference: Callable[[analysis.Run, Mapping[str, float]],
                                        tuple[float, str] | None] = good_threshold
                    ) -> tuple[dict[str, Samples], str]:
  """Per algorithm, its runs' (AUC, final, good) by setting; and what *good* meant.

  Good: final >= ``reference``'s threshold where every run has one (of the same
  meaning), else >= ``GOOD_FRACTION`` of the best run's final return.
  """
  scales = dict(scales or {})
  metrics = []
  for run in runs:
    source = 'task' if panel == 'task' else analysis.distilled_source(run.algorithm)
    m = analysis.run_metrics(run, source, scales) if source else None
    if m is not None and not (math.isnan(m.mean_auc) or math.isnan(m.mean_final)):
      metrics.append(m)
  refs = [reference(m.run, scales) for m in metrics]
  if metrics and all(r is not None for r in refs) and len({r[1] for r in refs}) == 1:
    thresholds, good_means = [r[0] for r in refs], refs[0][1]
  else:
    best = max((m.mean_final for m in metrics), default=math.nan)
    thresholds = [GOOD_FRACTION * best] * len(metrics)
    good_means = (f'final return >= {GOOD_FRACTION:g} x the best run\'s final return '
                  f'({best:.3g})')
  out: dict[str, dict[tuple, list]] = {}
  for m, threshold in zip(metrics, thresholds):
    good = float(threshold > 0 and m.mean_final >= threshold)
    out.setdefault(m.run.algorithm, {}).setdefault(m.run.setting, []).append(
        (m.mean_auc, m.mean_final, good))
  return ({a: {s: np.asarray(v, dtype=np.float64) for s, v in by_s.items()}
           for a, by_s in out.items()}, good_means)


def compare_or_missing(claim: str, panel: str, metric: int, left: Sequence[str],
                       right: Sequence[str], samples: Mapping[str, Samples],
                       ran: Collection[str], num_replicates: int = NUM_REPLICATES
                       ) -> Comparison | Missing:
  """``compare``, naming the algorithms without runs (``ran``: those with runs).

  Returns ``Missing`` when a side has no algorithm with samples.
  """
  not_run = tuple(a for a in (*left, *right) if a not in ran)
  c = compare(claim, panel, metric, left, right, samples, num_replicates)
  if c is not None:
    return dataclasses.replace(c, not_run=not_run)
  empty = [a for side in (left, right) if not any(samples.get(x) for x in side)
           for a in side]
  return Missing(claim=claim, panel=panel, metric=metric, left=tuple(left),
                 right=tuple(right), not_run=not_run,
                 unscored=tuple(a for a in empty if a in ran))


def level_set_comparisons(runs: Sequence[analysis.Run], level_set: str,
                          scales: Mapping[str, float] | None = None,
                          num_replicates: int = NUM_REPLICATES
                          ) -> tuple[list[Comparison | Missing], str]:
  """Every claim's comparison on one level set, and what a good run is.

  A comparison that cannot be made (a side without runs) is a ``Missing``.
  """
  runs = [r for r in runs if r.level_set == level_set]
  ran = {r.algorithm for r in runs}
  task, good_means = collect_samples(runs, 'task', scales)
  distilled, _ = collect_samples(runs, 'distilled', scales)
  n = num_replicates
  comparisons = [
      compare_or_missing(claim, panel, metric, left, right,
                         task if panel == 'task' else distilled, ran, n)
      for claim, panel, metric, left, right in
      _with_variants(CLAIM_SPECS, ran) + _variant_specs(ran)]
  return comparisons, good_means


def _variant_specs(ran: Collection[str]) -> list[ClaimSpec]:
  """``VARIANT_KEEPS`` for each variant that ran: final return of pi_i (and pi_0)."""
  specs = []
  for v in analysis.VARIANTS:
    if v.name in ran:
      panels = ('task', 'distilled') if algorithms.get(v.algorithm).has_pi0 else ('task',)
      specs += [(VARIANT_KEEPS, panel, FINAL, [v.name], [v.algorithm]) for panel in panels]
  return specs


def _with_variants(specs: Sequence[ClaimSpec], ran: Collection[str]) -> list[ClaimSpec]:
  """``specs``, each of ``VARIANT_CLAIMS`` followed by its variants' that ran."""
  out = []
  for spec in specs:
    out.append(spec)
    claim, panel, metric, left, right = spec
    if claim in VARIANT_CLAIMS and len(left) == 1:
      out += [(claim, panel, metric, [v.name], right) for v in analysis.VARIANTS
              if v.algorithm == left[0] and v.name in ran]
  return out


def _policy(panel: str) -> str:
  return 'pi_i' if panel == 'task' else 'pi_0'


def missing_sentence(m: Missing) -> str:
  """One Markdown line for a comparison that was not made, and why."""
  what = f'{METRIC_NAMES[m.metric]} of {_policy(m.panel)}'
  reasons = []
  if m.not_run:
    reasons.append(f'not run on this level set: {", ".join(m.not_run)}')
  if m.unscored:
    reasons.append(f'no {_policy(m.panel)} episodes yet: {", ".join(m.unscored)}')
  return (f'- *{m.verdict}*: {m.claim}. {what}: {" / ".join(m.left)} vs '
          f'{" / ".join(m.right)} not compared ({"; ".join(reasons)}).')


def sentence(c: Comparison | Missing) -> str:
  """One Markdown line: verdict, claim, numbers, interval and spread."""
  if isinstance(c, Missing):
    return missing_sentence(c)
  what = f'{METRIC_NAMES[c.metric]} of {_policy(c.panel)}'
  if c.metric == GOOD:
    numbers = f'{c.left} {c.left_value:.2f} vs {c.right} {c.right_value:.2f}'
    spread = ''
  else:
    numbers = (f'{c.left} {c.left_value:.3f} +- {c.left_std:.3f} vs {c.right} '
               f'{c.right_value:.3f} +- {c.right_std:.3f}')
    spread = f', seeds\' spread {c.spread:.3f}'
  not_run = (f' Not run on this level set, so not in its group: '
             f'{", ".join(c.not_run)}.' if c.not_run else '')
  one_seed = (' One seed at some setting: no spread to judge the difference by.'
              if c.seeds < 2 else '')
  return (f'- *{c.verdict}*: {c.claim}. {what}: {numbers}; difference '
          f'{c.difference:+.3f}, 95% bootstrap interval [{c.ci[0]:+.3f}, '
          f'{c.ci[1]:+.3f}]{spread}.{not_run}{one_seed}')


def claims_markdown(runs: Sequence[analysis.Run],
                    level_results: Sequence[analysis.LevelSetResult],
                    num_replicates: int = NUM_REPLICATES) -> str:
  """The claims of every level set in ``level_results``, as Markdown."""
  lines = []
  for lr in level_results:
    comparisons, good_means = level_set_comparisons(
        runs, lr.level_set, lr.scales, num_replicates)
    lines += [f'**{lr.level_set}** (good run: {good_means}; best of a group in its '
              'place)', '']
    ran = {r.algorithm for r in runs if r.level_set == lr.level_set}
    not_run = [a for a in analysis.ALGORITHM_ORDER if a not in ran]
    if not_run:
      lines += [f'Not run on {lr.level_set}: {", ".join(not_run)}; the claims that '
                'need them say so.', '']
    lines += [sentence(c) for c in comparisons]
    lines.append('')
  lines.append(
      f'Verdicts: *agrees* when the 95% bootstrap interval of the difference lies '
      f'above 0 and the difference exceeds the seeds\' spread; *disagrees* when both '
      f'hold the other way; otherwise *cannot tell* (always with one seed at a '
      f'setting); *not run* when a side\'s '
      f'algorithms were not run on the level set (*no episodes yet* when they ran '
      f'without episodes of that policy). Bootstrap: {num_replicates} '
      'replicates; in each, every algorithm\'s seeds are resampled with replacement '
      'within each setting and its best setting is chosen again by AUC '
      '(`distral_tf/experiments/claims.py`).')
  return '\n'.join(lines) + '\n'
