r"""A reduced reproduction on a CPU: ``python -m distral_tf.experiments.reproduce``.

Sweeps all seven deep algorithms on ``two_rooms`` and on the pixel level set
``minigrid`` with reduced grids and budgets (``--preset=cpu``, 1.5 hours on
2 cores; ``--preset=smoke`` checks the whole pipeline in minutes), then writes
Figure 4's panels, the results table and ``results.md`` into ``--out``::

  python -m distral_tf.experiments.reproduce --out=docs/reproduction \
      --results_doc=docs/reproduction.md

With ``--results_doc`` the text between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines of that Markdown file is replaced by the results.
Resumable: run the same command again after an interruption. The sweeps are the
same as ``python -m distral_tf.experiments.sweep`` with the flags that
``--print_commands`` prints.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf.experiments import analysis
from distral_tf.experiments import panels
from distral_tf.experiments import schedule


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """One level set's reduced sweep."""
  level_set: str
  entropy_costs: tuple[float, ...]
  learning_rates: tuple[float, ...]
  seeds: int
  env_steps_per_task: int
  num_tasks: int
  workers_per_task: int

  @property
  def extra_args(self) -> tuple[str, ...]:
    return (f'--num_tasks={self.num_tasks}',
            f'--workers_per_task={self.workers_per_task}')

  @property
  def num_runs(self) -> int:
    return (len(analysis.ALGORITHM_ORDER) * len(self.entropy_costs) *
            len(self.learning_rates) * self.seeds)

  @property
  def total_frames(self) -> int:
    return self.num_runs * self.env_steps_per_task * self.num_tasks


# Reduced grids: 2 entropy costs x 1 learning rate x 2 seeds on two_rooms and
# x 1 seed on minigrid (4 and 2 instead of 36 runs per algorithm), 4 tasks,
# 8 workers per task. At about 4,200 (two_rooms) and 1,650 (minigrid) training
# frames/s on 2 idle cores, plus ~15 s start-up per run: about 35 + 40 minutes.
PRESETS: dict[str, tuple[SweepPlan, ...]] = {
    'cpu': (
        SweepPlan('two_rooms', (0.01, 0.03), (1e-3,), seeds=2,
                  env_steps_per_task=60_000, num_tasks=4, workers_per_task=8),
        SweepPlan('minigrid', (0.003, 0.01), (5e-4,), seeds=1,
                  env_steps_per_task=60_000, num_tasks=4, workers_per_task=8),
    ),
    'smoke': (
        SweepPlan('two_rooms', (0.03,), (1e-3,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
        SweepPlan('minigrid', (0.01,), (5e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
    ),
}
BEGIN_MARK = '<!-- results:begin -->'
END_MARK = '<!-- results:end -->'

_PRESET = flags.DEFINE_enum('preset', 'cpu', list(PRESETS),
                            'cpu: the reduced reproduction; smoke: minutes, to check '
                            'the pipeline.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', 'runs/reproduction',
                                 'Root directory of the runs.')
_OUT = flags.DEFINE_string('out', 'docs/reproduction',
                           'Directory for figures, table and results.md.')
_RESULTS_DOC = flags.DEFINE_string(
    'results_doc', '', 'Markdown file whose results block is replaced (optional).')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
_LAUNCH_COMMAND = flags.DEFINE_string(
    'launch_command', '', 'Command that trains one run given the trainer\'s flags; '
    'default "<python> -m distral_tf.launch".')
_PRINT_COMMANDS = flags.DEFINE_boolean(
    'print_commands', False, 'Print the equivalent sweep and figure commands and exit.')
_FIGURES_ONLY = flags.DEFINE_boolean(
    'figures_only', False, 'Only draw figures and tables from the runs there are.')


def sweep_command(plan: SweepPlan, sweep_dir: str, parallel: int) -> str:
  """The ``sweep`` command line equivalent to ``plan``."""
  args = ['python', '-m', 'distral_tf.experiments.sweep',
          f'--level_set={plan.level_set}',
          f'--algorithms={",".join(analysis.ALGORITHM_ORDER)}',
          f'--entropy_costs={",".join(map(schedule.format_value, plan.entropy_costs))}',
          f'--learning_rates={",".join(map(schedule.format_value, plan.learning_rates))}',
          f'--seeds={plan.seeds}', f'--env_steps_per_task={plan.env_steps_per_task}',
          f'--sweep_dir={sweep_dir}', f'--parallel={parallel}', '--',
          *plan.extra_args]
  return shlex.join(args)


def plan_specs(plan: SweepPlan, sweep_dir: str) -> list[schedule.RunSpec]:
  return schedule.sweep_specs(sweep_dir, plan.level_set, analysis.ALGORITHM_ORDER,
                              plan.entropy_costs, plan.learning_rates,
                              range(plan.seeds), plan.env_steps_per_task,
                              plan.extra_args)


def measured_cost(specs: Sequence[schedule.RunSpec]) -> tuple[int, float, int]:
  """(finished runs, their wall time in seconds, their environment frames)."""
  count, wall, frames = 0, 0.0, 0
  for spec in specs:
    summary = analysis.read_json(os.path.join(spec.logdir, results.SUMMARY_FILE))
    if summary.get('finished') is True:
      count += 1
      wall += float(summary.get('wall_time_s', 0.0))
      frames += int(summary.get('total_env_steps', 0))
  return count, wall, frames


def results_markdown(report: dict, plans: Sequence[SweepPlan], specs, base_dir: str,
                     commands: Sequence[str]) -> str:
  """The results section: figures (paths relative to ``base_dir``), table, cost."""
  count, wall, frames = measured_cost(specs)
  lines = [f'Produced by `python -m distral_tf.experiments.reproduce '
           f'--preset={_PRESET.value}`: {count} of {len(specs)} runs finished, '
           f'{frames:,} environment frames in {wall / 3600:.2f} hours of run wall '
           f'time ({frames / max(wall, 1e-9):,.0f} frames/s per run).', '']
  for plan in plans:
    png = os.path.join(_OUT.value, f'figure4_{plan.level_set}.png')
    if os.path.exists(png):
      lines += [f'![Figure 4 panels, {plan.level_set}]'
                f'({os.path.relpath(png, base_dir)})', '']
  with open(report['table_md']) as f:
    lines += [f.read().rstrip(), '']
  lines += ['Equivalent commands:', '', '```sh', *commands, '```']
  return '\n'.join(lines) + '\n'


def replace_block(path: str, text: str) -> None:
  """Replaces what lies between ``BEGIN_MARK`` and ``END_MARK`` lines of ``path``."""
  with open(path) as f:
    doc = f.read()
  start, end = doc.find(BEGIN_MARK), doc.find(END_MARK)
  if start < 0 or end < start:
    raise errors.UsageError(f'--results_doc {path} lacks the lines {BEGIN_MARK} and '
                            f'{END_MARK}')
  doc = doc[:start + len(BEGIN_MARK)] + '\n' + text + doc[end:]
  with open(path, 'w') as f:
    f.write(doc)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  plans = PRESETS[_PRESET.value]
  commands = [sweep_command(p, _SWEEP_DIR.value, _PARALLEL.value) for p in plans]
  commands.append(f'python -m distral_tf.experiments.figure4 '
                  f'--sweep_dir={_SWEEP_DIR.value} --out={_OUT.value}')
  if _PRINT_COMMANDS.value:
    print('\n'.join(commands))
    return 0
  specs = [s for p in plans for s in plan_specs(p, _SWEEP_DIR.value)]
  failed = False
  if not _FIGURES_ONLY.value:
    frames = sum(p.total_frames for p in plans)
    print(f'{len(specs)} runs, {frames:,} environment frames in all')
    outcome = schedule.run_all(
        specs, schedule.launch_command_from_flag(_LAUNCH_COMMAND.value),
        _PARALLEL.value, name='reproduce')
    schedule.report_failures(outcome)
    failed = not outcome.ok
  report = panels.write_figure4(_SWEEP_DIR.value, _OUT.value,
                                [p.level_set for p in plans])
  results_md = os.path.join(_OUT.value, 'results.md')
  with open(results_md, 'w') as f:
    f.write(results_markdown(report, plans, specs, _OUT.value, commands))
  print(f'wrote {results_md}')
  if _RESULTS_DOC.value:
    replace_block(_RESULTS_DOC.value, results_markdown(
        report, plans, specs, os.path.dirname(_RESULTS_DOC.value) or '.', commands))
    print(f'updated {_RESULTS_DOC.value}')
  return 1 if failed else 0


if __name__ == '__main__':
  schedule.run_command(main)
