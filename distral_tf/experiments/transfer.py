r"""Transfer to a held-out task: ``python -m distral_tf.experiments.transfer``.

Three kinds of runs, each ``--seeds`` times (seed s of all three draws the same
tasks):

* ``pretrain``: the algorithm on every task of the level set but task K;
* ``prior``: task K alone, pi_0 initialised from the finished pretrain run of
  the same seed and kept fixed (``--tasks=K --prior_logdir=...``);
* ``scratch``: task K alone, learned from scratch (``--tasks=K``).

It then draws the learning curves of ``prior`` and ``scratch`` on task K (mean
+- std over seeds) as PNG and PDF, and a small table of final return and AUC::

  python -m distral_tf.experiments.transfer --level_set=minigrid \
      --algorithm=kl_ent_2col --holdout_task=3 --transfer_dir=transfer --seeds=2

Runs live in ``TRANSFER_DIR/<level_set>/<algorithm>/holdout<K>/<kind>/seed<S>``
and are scheduled like a sweep's: finished runs are skipped, interrupted ones
resume, the prior runs wait for their pretrain run. Flags after ``--`` go to
every run.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf.agents import algorithms
from distral_tf.envs import level_sets
from distral_tf.experiments import analysis
from distral_tf.experiments import panels
from distral_tf.experiments import schedule

_LEVEL_SET = flags.DEFINE_enum('level_set', None, level_sets.LEVEL_SET_NAMES,
                               'Level set whose tasks are used.')
_ALGORITHM = flags.DEFINE_string('algorithm', 'kl_ent_2col',
                                 'Algorithm with a distilled pi_0 (kl_*).')
_HOLDOUT = flags.DEFINE_integer('holdout_task', None,
                                'Index K of the task left out of pretraining.')
_NUM_TASKS = flags.DEFINE_integer(
    'num_tasks', None, 'Tasks in the level set (passed to every run); default: the '
    'level set\'s own.')
_TRANSFER_DIR = flags.DEFINE_string('transfer_dir', None,
                                    'Root directory of the runs.')
_SEEDS = flags.DEFINE_integer('seeds', 1, 'Seeds 0 .. seeds-1 of each kind of run.')
_ENTROPY_COST = flags.DEFINE_float('entropy_cost', None,
                                   'Entropy cost of every run; default: trainer\'s.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', None,
                                    'Learning rate of every run; default: trainer\'s.')
_ENV_STEPS = flags.DEFINE_integer('env_steps_per_task', None,
                                  'Pretraining budget per task; default: trainer\'s.')
_HOLDOUT_STEPS = flags.DEFINE_integer(
    'holdout_env_steps', None,
    'Budget of the runs on the held-out task; default: --env_steps_per_task.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
_LAUNCH_COMMAND = flags.DEFINE_string(
    'launch_command', '', 'Command that trains one run given the trainer\'s flags; '
    'default "<python> -m distral_tf.launch".')
_OUT = flags.DEFINE_string('out', None, 'Figure path without extension; default '
                           '<run dir>/transfer_<level_set>_task<K>.')

flags.mark_flags_as_required(['level_set', 'holdout_task', 'transfer_dir'])

KINDS = ('pretrain', 'prior', 'scratch')
LABELS = {'prior': 'from the pretrained $\\pi_0$', 'scratch': 'from scratch'}


def num_tasks_of(level_set: str) -> int:
  """Tasks in the level set with its default flags (``--num_tasks`` overrides)."""
  if _NUM_TASKS.value is not None:
    return _NUM_TASKS.value
  try:
    return len(level_sets.make_level_set(level_set).tasks)
  except ImportError as e:
    raise errors.UsageError(f'cannot build level set {level_set} here ({e}); give '
                            '--num_tasks') from None


def transfer_specs(root: str, level_set: str, algorithm: str, holdout: int,
                   num_tasks: int, seeds: Sequence[int],
                   extra_args: Sequence[str]) -> list[schedule.RunSpec]:
  """The pretrain, prior and scratch runs of every seed."""
  schedule.check_extra_args(extra_args, schedule.SWEEP_FLAGS + (
      'tasks', 'prior_logdir', 'num_tasks'))
  common = [f'--level_set={level_set}', f'--algorithm={algorithm}']
  for name, value in (('entropy_cost', _ENTROPY_COST.value),
                      ('learning_rate', _LEARNING_RATE.value)):
    if value is not None:
      common.append(f'--{name}={schedule.format_value(value)}')
  if _NUM_TASKS.value is not None:
    common.append(f'--num_tasks={_NUM_TASKS.value}')
  others = ','.join(str(t) for t in range(num_tasks) if t != holdout)
  holdout_steps = _HOLDOUT_STEPS.value or _ENV_STEPS.value
  specs = []
  for seed in seeds:
    logdirs = {k: os.path.join(root, k, f'seed{seed}') for k in KINDS}
    kind_args = {
        'pretrain': [f'--tasks={others}'] + (
            [f'--env_steps_per_task={_ENV_STEPS.value}'] if _ENV_STEPS.value else []),
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


def summarise(root: str, seeds: Sequence[int], stem: str, title: str) -> list[str]:
  """Draws the held-out task's curves and writes their table; returns the paths."""
  stats, names = {}, set()
  lines = ['| start | seeds | final return | AUC |', '|---|---|---|---|']
  for kind in ('prior', 'scratch'):
    logdirs = [os.path.join(root, kind, f'seed{seed}') for seed in seeds]
    runs = [analysis.load_run(d) for d in logdirs
            if os.path.exists(os.path.join(d, results.EPISODES_FILE))]
    metrics = [m for m in (analysis.run_metrics(r, 'task') for r in runs if r) if m]
    if not metrics:
      continue
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
  with open(stem + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return paths + [stem + '.md']


def main(argv: Sequence[str]) -> int:
  algo = algorithms.get(_ALGORITHM.value)
  if not algo.distilled:
    distilled = [a.name for a in algorithms.ALGORITHMS.values() if a.distilled]
    raise errors.UsageError(f'--algorithm={algo.name} has no distilled pi_0 to '
                            f'transfer; choose one of {", ".join(distilled)}')
  if _SEEDS.value < 1:
    raise errors.UsageError(f'--seeds must be >= 1, got {_SEEDS.value}')
  num_tasks = num_tasks_of(_LEVEL_SET.value)
  holdout = _HOLDOUT.value
  if not 0 <= holdout < num_tasks or num_tasks < 2:
    raise errors.UsageError(f'--holdout_task must be in [0, {num_tasks}) and the '
                            f'level set must have >= 2 tasks; got {holdout}')
  root = os.path.join(_TRANSFER_DIR.value, _LEVEL_SET.value, algo.name,
                      f'holdout{holdout}')
  seeds = range(_SEEDS.value)
  specs = transfer_specs(root, _LEVEL_SET.value, algo.name, holdout, num_tasks,
                         seeds, argv[1:])
  outcome = schedule.run_all(specs, schedule.launch_command_from_flag(
      _LAUNCH_COMMAND.value), _PARALLEL.value, name='transfer')
  schedule.report_failures(outcome)
  stem = _OUT.value or os.path.join(root, f'transfer_{_LEVEL_SET.value}_task{holdout}')
  title = (f'{_LEVEL_SET.value}, {algo.name}: task {holdout} after pretraining on '
           f'the other {num_tasks - 1}')
  for path in summarise(root, seeds, stem, title):
    print(f'wrote {path}')
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
