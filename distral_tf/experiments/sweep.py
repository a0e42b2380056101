r"""Hyperparameter sweep: ``python -m distral_tf.experiments.sweep``.

Runs every algorithm on a grid of entropy costs x initial learning rates x
seeds (by default 3 x 3 x 4 = 36 runs per algorithm, as in the paper), each as
its own ``python -m distral_tf.launch`` process, at most ``--parallel`` at a
time, one log directory per run::

  SWEEP_DIR/<level_set>/<algorithm>/ent<E>_lr<LR>/seed<S>/

  python -m distral_tf.experiments.sweep --level_set=mazes \
      --algorithms=a3c,kl_ent_2col --sweep_dir=sweeps --parallel=1 \
      -- --workers_per_task=32

``--algorithms`` takes the paper's seven deep algorithms and their variants
(``analysis.ENTRIES``), e.g. ``kl_ent_2col_adaptive``: ``kl_ent_2col`` with
``--adaptive_costs``, in ``SWEEP_DIR/<level_set>/kl_ent_2col_adaptive/...``.

Flags after ``--`` go to every run. Running the same command again skips the
finished runs and resumes the interrupted ones; while a sweep runs, its
``--sweep_dir`` is its own (a second sweep there is refused, naming it), and
its runs die with it. A failed run does not stop the others; its stderr tail
is kept in ``failure.txt`` in its log directory and printed at the end, and
the exit status is 1.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.envs import level_sets
from distral_tf.experiments import analysis
from distral_tf.experiments import schedule

_LEVEL_SET = flags.DEFINE_enum('level_set', None, level_sets.LEVEL_SET_NAMES,
                               'Level set to sweep on.')
_ALGORITHMS = flags.DEFINE_list(
    'algorithms', list(analysis.ALGORITHM_ORDER),
    'Deep algorithms to sweep (default: the paper\'s seven); also '
    f'{", ".join(v.name for v in analysis.VARIANTS)}.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None,
                                 'Root directory of the sweep\'s log directories.')
_ENTROPY_COSTS = flags.DEFINE_list(
    'entropy_costs', [schedule.format_value(v) for v in schedule.DEFAULT_ENTROPY_COSTS],
    'Entropy costs 1/beta = c_KL + c_Ent to try.')
_LEARNING_RATES = flags.DEFINE_list(
    'learning_rates',
    [schedule.format_value(v) for v in schedule.DEFAULT_LEARNING_RATES],
    'Initial learning rates to try (the trainer\'s --lr_schedule applies).')
_SEEDS = flags.DEFINE_integer('seeds', schedule.DEFAULT_NUM_SEEDS,
                              'Seeds per setting: 0 .. seeds-1.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
_ENV_STEPS = flags.DEFINE_integer(
    'env_steps_per_task', None,
    'Budget of every run in frames per task; default: the trainer\'s own.')
_LAUNCH_COMMAND = flags.DEFINE_string(
    'launch_command', '',
    'Command that trains one run given the trainer\'s flags; default '
    '"<python> -m distral_tf.launch".')
_DRY_RUN = flags.DEFINE_boolean('dry_run', False,
                                'Print the commands of unfinished runs and exit.')

flags.mark_flags_as_required(['level_set', 'sweep_dir'])


def build_specs(extra_args: Sequence[str]) -> list[schedule.RunSpec]:
  """The sweep's runs from the flags; raises ``errors.UsageError``."""
  analysis.check_entries(_ALGORITHMS.value, 'algorithms')
  if _SEEDS.value < 1:
    raise errors.UsageError(f'--seeds must be >= 1, got {_SEEDS.value}')
  if _ENV_STEPS.value is not None and _ENV_STEPS.value < 1:
    raise errors.UsageError(
        f'--env_steps_per_task must be >= 1, got {_ENV_STEPS.value}')
  return schedule.sweep_specs(
      _SWEEP_DIR.value, _LEVEL_SET.value, _ALGORITHMS.value,
      schedule.parse_positive_floats('entropy_costs', _ENTROPY_COSTS.value),
      schedule.parse_positive_floats('learning_rates', _LEARNING_RATES.value),
      range(_SEEDS.value), _ENV_STEPS.value, extra_args)


def main(argv: Sequence[str]) -> int:
  specs = build_specs(argv[1:])
  command = schedule.launch_command_from_flag(_LAUNCH_COMMAND.value)
  if _DRY_RUN.value:
    for spec in specs:
      if not schedule.is_finished(spec.logdir):
        print(' '.join(command + list(spec.args)))
    return 0
  # One sweep at a time in a directory; each run holds its own too.
  with run_dir.held({'sweep_dir': _SWEEP_DIR.value}):
    outcome = schedule.run_all(specs, command, _PARALLEL.value,
                               name=f'sweep {_LEVEL_SET.value}')
  schedule.report_failures(outcome)
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
