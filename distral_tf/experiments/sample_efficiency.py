r"""Sample efficiency: frames until the returns reach a threshold, over seeds.

  python -m distral_tf.experiments.sample_efficiency --level_set=two_rooms \
      --algorithm=a3c --num_tasks=1 --seeds=3 --env_steps_per_task=120000 \
      --threshold=0.5 --window=100 --out_dir=runs/sample_efficiency

Trains ``--seeds`` runs (seeds 0 .. seeds-1; with ``--num_tasks=1`` each seed
draws its own task) like a sweep: finished runs are skipped, interrupted ones
resume. Then, per run and task, it finds the first frame count at which the
mean return of the task policy over ``--window`` consecutive episodes reaches
``--threshold``, prints a table, and last ``reached: K of N`` (runs in which
every task reached it within the budget). Flags after ``--`` go to every run.
``--algorithm`` may name a variant of ``analysis`` (``kl_ent_2col_adaptive``:
``kl_ent_2col`` with ``--adaptive_costs``), whose runs go under its name.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf.envs import level_sets
from distral_tf.experiments import analysis
from distral_tf.experiments import schedule

_LEVEL_SET = flags.DEFINE_enum('level_set', 'two_rooms', level_sets.LEVEL_SET_NAMES,
                               'Level set of the runs.')
_ALGORITHM = flags.DEFINE_string('algorithm', 'a3c', 'Deep algorithm of the runs.')
_NUM_TASKS = flags.DEFINE_integer('num_tasks', None,
                                  'Tasks of every run; default: the level set\'s own.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds 0 .. seeds-1.')
_ENV_STEPS = flags.DEFINE_integer('env_steps_per_task', 120_000, 'Budget of every run.')
_THRESHOLD = flags.DEFINE_float('threshold', 0.5, 'Return to reach.')
_WINDOW = flags.DEFINE_integer('window', 100, 'Consecutive episodes averaged.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'runs/sample_efficiency',
                               'Root directory of the runs.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at a time.')


def report(logdirs: Sequence[str], threshold: float, window: int) -> list[str]:
  """Lines of the table and the closing ``reached: K of N``."""
  lines = [f'{"run":<50} {"task":<24} {"frames to reach":>16} {"final":>8}']
  reached = 0
  for logdir in logdirs:
    rows = results.select(results.read_episodes(logdir), policy='task')
    tasks = sorted({r['task'] for r in rows})
    ok = bool(tasks)
    for task in tasks:
      task_rows = results.select(rows, task=task)
      frames = results.frames_to_reach(task_rows, threshold, window)
      last = [r['episode_return'] for r in sorted(task_rows, key=lambda r: r['env_steps'])]
      final = float(np.mean(last[-window:]))
      ok = ok and frames is not None
      lines.append(f'{logdir:<50} {task:<24} '
                   f'{"never" if frames is None else f"{frames:,}":>16} {final:>8.3f}')
    reached += ok
  lines.append(f'reached: {reached} of {len(logdirs)} (mean return >= {threshold} over '
               f'{window} consecutive episodes)')
  return lines


def main(argv: Sequence[str]) -> int:
  if _SEEDS.value < 1 or _WINDOW.value < 1:
    raise errors.UsageError('--seeds and --window must be >= 1')
  extra = list(argv[1:])
  schedule.check_extra_args(extra, ('level_set', 'algorithm', 'seed', 'logdir',
                                    'num_tasks', 'env_steps_per_task'))
  root = os.path.join(_OUT_DIR.value, _LEVEL_SET.value, _ALGORITHM.value)
  specs = []
  for seed in range(_SEEDS.value):
    logdir = os.path.join(root, f'seed{seed}')
    args = [f'--level_set={_LEVEL_SET.value}', *analysis.launch_args(_ALGORITHM.value),
            f'--seed={seed}', f'--env_steps_per_task={_ENV_STEPS.value}',
            f'--logdir={logdir}'] + extra
    if _NUM_TASKS.value is not None:
      args.append(f'--num_tasks={_NUM_TASKS.value}')
    specs.append(schedule.RunSpec(logdir, tuple(args), ()))
  outcome = schedule.run_all(specs, schedule.default_launch_command(), _PARALLEL.value,
                             name='sample_efficiency')
  schedule.report_failures(outcome)
  for line in report([s.logdir for s in specs], _THRESHOLD.value, _WINDOW.value):
    print(line)
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
