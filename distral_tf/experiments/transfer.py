r"""Transfer to a held-out task: ``python -m distral_tf.experiments.transfer``.

Pretrains the algorithm on every task but K, then learns task K from the
pretrained, fixed pi_0 (``prior``) and from scratch (``scratch``), ``--seeds``
times each (``distral_tf.experiments.transfer_runs``); draws both learning
curves on task K (mean +- std over seeds) as PNG and PDF and writes a table of
final return and AUC with the AUC difference paired by seed::

  python -m distral_tf.experiments.transfer --level_set=minigrid \
      --algorithm=kl_ent_2col --holdout_task=3 --transfer_dir=transfer --seeds=2

Runs are scheduled like a sweep's: finished runs are skipped, interrupted ones
resume, the prior runs wait for their pretrain run; a second transfer command
on the same ``--transfer_dir`` is refused while one runs. Flags after ``--`` go
to every run.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.agents import algorithms
from distral_tf.envs import level_sets
from distral_tf.experiments import analysis
from distral_tf.experiments import schedule
from distral_tf.experiments import transfer_runs

_LEVEL_SET = flags.DEFINE_enum('level_set', None, level_sets.LEVEL_SET_NAMES,
                               'Level set whose tasks are used.')
_ALGORITHM = flags.DEFINE_string(
    'algorithm', 'kl_ent_2col', 'Algorithm with a distilled pi_0 (kl_*, and '
    f'{", ".join(v.name for v in analysis.VARIANTS)}).')
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



def num_tasks_of(level_set: str) -> int:
  """Tasks in the level set with its default flags (``--num_tasks`` overrides)."""
  if _NUM_TASKS.value is not None:
    return _NUM_TASKS.value
  try:
    return len(level_sets.make_level_set(level_set).tasks)
  except ImportError as e:
    raise errors.UsageError(f'cannot build level set {level_set} here ({e}); give '
                            '--num_tasks') from None


def main(argv: Sequence[str]) -> int:
  analysis.check_entries([_ALGORITHM.value], 'algorithm')
  distilled = [e.name for e in analysis.ENTRIES.values()
               if algorithms.ALGORITHMS[e.algorithm].distilled]
  if _ALGORITHM.value not in distilled:
    raise errors.UsageError(f'--algorithm={_ALGORITHM.value} has no distilled pi_0 to '
                            f'transfer; choose one of {", ".join(distilled)}')
  if _SEEDS.value < 1:
    raise errors.UsageError(f'--seeds must be >= 1, got {_SEEDS.value}')
  num_tasks = num_tasks_of(_LEVEL_SET.value)
  holdout = _HOLDOUT.value
  if not 0 <= holdout < num_tasks or num_tasks < 2:
    raise errors.UsageError(f'--holdout_task must be in [0, {num_tasks}) and the '
                            f'level set must have >= 2 tasks; got {holdout}')
  plan = transfer_runs.TransferPlan(
      level_set=_LEVEL_SET.value, algorithm=_ALGORITHM.value, holdout=holdout,
      num_tasks=num_tasks, seeds=_SEEDS.value, env_steps_per_task=_ENV_STEPS.value,
      holdout_env_steps=_HOLDOUT_STEPS.value, entropy_cost=_ENTROPY_COST.value,
      learning_rate=_LEARNING_RATE.value, set_num_tasks=_NUM_TASKS.value is not None)
  specs = transfer_runs.transfer_specs(plan, _TRANSFER_DIR.value, argv[1:])
  # One transfer command at a time in a directory; each run holds its own too.
  with run_dir.held({'transfer_dir': _TRANSFER_DIR.value}):
    outcome = schedule.run_all(specs, schedule.launch_command_from_flag(
        _LAUNCH_COMMAND.value), _PARALLEL.value, name='transfer')
    schedule.report_failures(outcome)
    root = plan.root(_TRANSFER_DIR.value)
    stem = _OUT.value or os.path.join(root, plan.stem)
    for path in transfer_runs.summarise(root, range(plan.seeds), stem, plan.title):
      print(f'wrote {path}')
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
