"""Transfer runs to a held-out task: which runs, and what they show.

For a ``TransferPlan`` (level set, algorithm with a distilled pi_0, held-out task
K, seeds, budgets) and every seed s (all three kinds of run of seed s draw the
same tasks); the algorithm is an entry of ``analysis`` (``kl_ent_2col_adaptive``
runs ``kl_ent_2col`` with ``--adaptive_costs``):

* ``pretrain``: the algorithm on every task of the level set but task K;
* ``prior``: task K alone, pi_0 initialised from the finished pretrain run of
  the same seed and kept fixed (``--tasks=K --prior_logdir=...``);
* ``scratch``: task K alone, learned from scratch (``--tasks=K``).

Runs live in ``TRANSFER_DIR/<level_set>/<algorithm>/holdout<K>/<kind>/seed<S>``
(``holdout<K>/ent<E>_lr<LR>/<kind>/...`` when the plan sets either value).
``summarise`` draws the held-out task's curves of ``prior`` and ``scratch``
(mean +- std over seeds) and writes a table of final return and AUC, with the
AUC difference prior - scratch paired by seed. Used by the ``transfer`` and
``reproduce`` commands.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from distral_tf import results
from distral_tf.experiments import analysis
from distral_tf.experiments import claims
from distral_tf.experiments import panels
from distral_tf.experiments import schedule

KINDS = ('pretrain', 'prior', 'scratch')
LABELS = {'prior': 'from the pretrained $\\pi_0$', 'scratch': 'from scratch'}


@dataclasses.dataclass(frozen=True)
class TransferPlan:
  """One transfer experiment: pretrain on all tasks but ``holdout``, then learn it."""
  level_set: str
  algorithm: str
  holdout: int
  num_tasks: int
  seeds: int
  env_steps_per_task: int | None = None   # Pretraining budget; None: trainer's.
  holdout_env_steps: int | None = None    # None: ``env_steps_per_task``.
  entropy_cost: float | None = None
  learning_rate: float | None = None
  # Whether runs get ``--num_tasks`` (the level set's own count otherwise).
  set_num_tasks: bool = True

  def root(self, transfer_dir: str) -> str:
    """``<level_set>/<algorithm>/holdout<K>``, then ``ent<E>_lr<LR>`` if either is set."""
    root = os.path.join(transfer_dir, self.level_set, self.algorithm,
                        f'holdout{self.holdout}')
    if self.entropy_cost is None and self.learning_rate is None:
      return root
    value = lambda v: 'default' if v is None else schedule.format_value(v)
    return os.path.join(root, f'ent{value(self.entropy_cost)}_lr'
                              f'{value(self.learning_rate)}')

  @property
  def stem(self) -> str:
    """File name of the figure and table, without extension."""
    return f'transfer_{self.level_set}_task{self.holdout}'

  @property
  def title(self) -> str:
    return (f'{self.level_set}, {self.algorithm}: task {self.holdout} after '
            f'pretraining on the other {self.num_tasks - 1}')


def transfer_specs(plan: TransferPlan, transfer_dir: str,
                   extra_args: Sequence[str] = ()) -> list[schedule.RunSpec]:
  """The pretrain, prior and scratch runs of every seed of ``plan``."""
  schedule.check_extra_args(extra_args, schedule.SWEEP_FLAGS + (
      'tasks', 'prior_logdir', 'num_tasks'))
  root = plan.root(transfer_dir)
  common = [f'--level_set={plan.level_set}', *analysis.launch_args(plan.algorithm)]
  for name, value in (('entropy_cost', plan.entropy_cost),
                      ('learning_rate', plan.learning_rate)):
    if value is not None:
      common.append(f'--{name}={schedule.format_value(value)}')
  if plan.set_num_tasks:
    common.append(f'--num_tasks={plan.num_tasks}')
  others = ','.join(str(t) for t in range(plan.num_tasks) if t != plan.holdout)
  holdout = plan.holdout
  holdout_steps = plan.holdout_env_steps or plan.env_steps_per_task
  specs = []
  for seed in range(plan.seeds):
    logdirs = {k: os.path.join(root, k, f'seed{seed}') for k in KINDS}
    kind_args = {
        'pretrain': [f'--tasks={others}'] + (
            [f'--env_steps_per_task={plan.env_steps_per_task}']
            if plan.env_steps_per_task else []),
        'prior': [f'--tasks={holdout}', f'--prior_logdir={logdirs["pretrain"]}'],
        'scratch': [f'--tasks={holdout}'],
    }
    for kind in ('prior', 'scratch'):
      if holdout_steps:
        kind_args[kind].append(f'--env_steps_per_task={holdout_steps}')
    for kind in KINDS:
      args = common + [f'--seed={seed}'] + kind_args[kind] + list(extra_args)
      args.append(f'--logdir={logdirs[kind]}')
      requires = (logdirs['pretrain'],) if kind == 'prior' else ()
      specs.append(schedule.RunSpec(logdirs[kind], tuple(args), requires))
  return specs


def paired_difference(prior: dict[int, float], scratch: dict[int, float]) -> str:
  """AUC of prior minus scratch per seed (same tasks), its mean, spread and interval.

  The interval is a percentile bootstrap of the mean over seeds
  (``claims.NUM_REPLICATES`` resamples of the seeds' differences).
  """
  seeds = sorted(set(prior) & set(scratch))
  if not seeds:
    return 'AUC difference prior - scratch: no seed has both runs.'
  diffs = np.array([prior[s] - scratch[s] for s in seeds])
  rng = np.random.default_rng(claims.BOOTSTRAP_SEED)
  means = diffs[rng.integers(0, len(diffs), (claims.NUM_REPLICATES, len(diffs)))]
  low, high = np.percentile(means.mean(axis=1), [2.5, 97.5])
  per_seed = ', '.join(f'{d:+.3f}' for d in diffs)
  return (f'AUC difference prior - scratch, paired by seed: {diffs.mean():+.3f} +- '
          f'{analysis.std_over_runs(list(diffs)):.3f} over {len(seeds)} seeds '
          f'({per_seed}); 95% bootstrap interval of the mean [{low:+.3f}, {high:+.3f}].')


def _load_started(logdir: str) -> analysis.Run | None:
  """The run in ``logdir``, or None where it has not written episodes yet."""
  if not os.path.exists(os.path.join(logdir, results.EPISODES_FILE)):
    return None
  return analysis.load_run(logdir)


def pretraining_line(pretrain_root: str, seeds: Sequence[int]) -> str:
  """Final returns of the pretraining runs, per seed: a prior helps once pi_0 is good."""
  finals: dict[str, list[str]] = {'task': [], 'distilled': []}
  for seed in seeds:
    run = _load_started(os.path.join(pretrain_root, f'seed{seed}'))
    for policy, values in finals.items():
      metrics = analysis.run_metrics(run, policy) if run else None
      values.append('-' if metrics is None else f'{metrics.mean_final:.3f}')
  return (f'Pretraining, final return per seed ({", ".join(map(str, seeds))}; mean over '
          f'its tasks): task policies {", ".join(finals["task"])}; pi_0 '
          f'{", ".join(finals["distilled"])}.')


def summarise(root: str, seeds: Sequence[int], stem: str, title: str) -> list[str]:
  """Draws the held-out task's curves and writes their table; returns the paths."""
  stats, names = {}, set()
  aucs: dict[str, dict[int, float]] = {}
  lines = ['| start | seeds | final return | AUC |', '|---|---|---|---|']
  for kind in ('prior', 'scratch'):
    logdirs = [os.path.join(root, kind, f'seed{seed}') for seed in seeds]
    runs = [_load_started(d) for d in logdirs]
    metrics = [m for m in (analysis.run_metrics(r, 'task') for r in runs if r) if m]
    if not metrics:
      continue
    aucs[kind] = {m.run.seed: m.mean_auc for m in metrics}
    names.update(t for m in metrics for t in m.finals)
    budget = max(m.run.budget for m in metrics)
    cs = stats[LABELS[kind]] = analysis.curve_stats(metrics, budget)
    lines.append(f'| {kind} | {len(metrics)} | {analysis.mean_and_std(cs.finals)} | '
                 f'{analysis.mean_and_std(cs.aucs)} |')
  if not stats:
    return []
  if names:
    title += f' (held out: {", ".join(sorted(names))})'
  paths = panels.plot_transfer(stats, title, stem)
  lines += ['', paired_difference(aucs.get('prior', {}), aucs.get('scratch', {})),
            '', pretraining_line(os.path.join(root, 'pretrain'), seeds)]
  with open(stem + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return paths + [stem + '.md']
