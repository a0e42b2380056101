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

The learning check on DeepMind Lab (docs/dmlab.md, "A learning check") is one:

  python -m distral_tf.experiments.sample_efficiency --level_set=mazes \
      --algorithm=a3c --num_tasks=1 --seeds=2 --env_steps_per_task=3000000 \
      --times_random=2 --out_dir=runs/learning_check \
      --records_dir=docs/dmlab/learning_check --figure=docs/dmlab/learning_check.png

``--times_random=K`` sets each task's threshold to K times the mean return of
the uniform random policy on it (``random_baseline``'s records).
``--records_dir`` records each finished run there (``run_records``) and,
before anything runs, restores the recorded runs whose log directories hold
none: the same command on a fresh checkout prints the table and draws the
figure from the records. ``--figure`` draws each run's mean return over
``--window`` consecutive episodes against frames, with the thresholds and the
random policy's return.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf.envs import level_sets
from distral_tf.experiments import analysis
from distral_tf.experiments import random_returns
from distral_tf.experiments import run_records
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
_TIMES_RANDOM = flags.DEFINE_float(
    'times_random', 0.0, 'If > 0: each task\'s threshold is this multiple of the '
    'uniform random policy\'s mean return on it (random_baseline), instead of '
    '--threshold.')
_RECORDS_DIR = flags.DEFINE_string(
    'records_dir', '', 'Record finished runs here and restore recorded ones first.')
_FIGURE = flags.DEFINE_string('figure', '', 'PNG of the runs\' curves and thresholds.')

Threshold = Callable[[str], float]


def random_thresholds(level_set: str, times: float) -> Threshold:
  """Task name -> ``times`` its recorded random return; a usage error if absent."""

  def threshold(task: str) -> float:
    value = random_returns.random_return(level_set, task)
    if value is None:
      raise errors.UsageError(
          f'--times_random: no random return recorded for {level_set}/{task}; run '
          f'python -m distral_tf.experiments.random_baseline --level_set={level_set} '
          '--write')
    return times * value

  return threshold


def task_curves(logdir: str, window: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per task: (frames, mean return of the ``window`` episodes ending there)."""
  rows = results.select(results.read_episodes(logdir), policy='task')
  out = {}
  for task in sorted({r['task'] for r in rows}):
    ordered = sorted(results.select(rows, task=task), key=lambda r: r['env_steps'])
    if len(ordered) < window:
      continue
    returns = np.array([r['episode_return'] for r in ordered])
    means = np.convolve(returns, np.ones(window) / window, mode='valid')
    frames = np.array([r['env_steps'] for r in ordered[window - 1:]])
    out[task] = (frames, means)
  return out


def draw(logdirs: Sequence[str], threshold: Threshold, window: int, level_set: str,
         path: str) -> str:
  """The curves of ``task_curves`` per run, the thresholds and random returns."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  tasks = set()
  for logdir in logdirs:
    for task, (frames, means) in task_curves(logdir, window).items():
      ax.plot(frames / 1e6, means, lw=1.2, label=f'{os.path.basename(logdir)} {task}')
      tasks.add(task)
  for task in sorted(tasks):
    ax.axhline(threshold(task), color='k', ls='--', lw=0.8,
               label=f'threshold {threshold(task):.2f} ({task})')
    rand = random_returns.random_return(level_set, task)
    if rand is not None:
      ax.axhline(rand, color='gray', ls=':', lw=0.8, label=f'random policy {rand:.2f}')
  ax.set_xlabel('frames of the task (millions)')
  ax.set_ylabel(f'mean return of pi_i over {window} episodes')
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def report(logdirs: Sequence[str], threshold: float | Threshold, window: int) -> list[str]:
  """Lines of the table and the closing ``reached: K of N``.

  ``threshold``: one for every task, or a function of the task name.
  """
  threshold_of = threshold if callable(threshold) else lambda task: threshold
  lines = [f'{"run":<50} {"task":<24} {"threshold":>9} {"frames to reach":>16} '
           f'{"final":>8}']
  reached = 0
  for logdir in logdirs:
    rows = results.select(results.read_episodes(logdir), policy='task')
    tasks = sorted({r['task'] for r in rows})
    ok = bool(tasks)
    for task in tasks:
      task_rows = results.select(rows, task=task)
      frames = results.frames_to_reach(task_rows, threshold_of(task), window)
      last = [r['episode_return'] for r in sorted(task_rows, key=lambda r: r['env_steps'])]
      final = float(np.mean(last[-window:]))
      ok = ok and frames is not None
      lines.append(f'{logdir:<50} {task:<24} {threshold_of(task):>9.3f} '
                   f'{"never" if frames is None else f"{frames:,}":>16} {final:>8.3f}')
    reached += ok
  what = threshold if not callable(threshold) else 'the threshold'
  lines.append(f'reached: {reached} of {len(logdirs)} (mean return >= {what} over '
               f'{window} consecutive episodes)')
  return lines


def main(argv: Sequence[str]) -> int:
  if _SEEDS.value < 1 or _WINDOW.value < 1:
    raise errors.UsageError('--seeds and --window must be >= 1')
  if _TIMES_RANDOM.value < 0:
    raise errors.UsageError(f'--times_random must be >= 0, got {_TIMES_RANDOM.value}')
  threshold: float | Threshold = _THRESHOLD.value
  if _TIMES_RANDOM.value > 0:
    if not random_returns.read_records().get(_LEVEL_SET.value):  # Before any run.
      raise errors.UsageError(
          f'--times_random: no random return recorded for {_LEVEL_SET.value}; run '
          f'python -m distral_tf.experiments.random_baseline --level_set='
          f'{_LEVEL_SET.value} --write')
    threshold = random_thresholds(_LEVEL_SET.value, _TIMES_RANDOM.value)
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
  records = None
  if _RECORDS_DIR.value:
    records = run_records.Records(_RECORDS_DIR.value, {_OUT_DIR.value: ''})
    print(run_records.describe(run_records.sync(specs, records), records))
  outcome = schedule.run_all(specs, schedule.default_launch_command(), _PARALLEL.value,
                             name='sample_efficiency')
  schedule.report_failures(outcome)
  if records is not None:
    run_records.sync(specs, records)
  logdirs = [s.logdir for s in specs]
  for line in report(logdirs, threshold, _WINDOW.value):
    print(line)
  if _FIGURE.value:
    if not callable(threshold):
      fixed = threshold
      threshold = lambda task: fixed
    print(f'wrote {draw(logdirs, threshold, _WINDOW.value, _LEVEL_SET.value, _FIGURE.value)}')
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
