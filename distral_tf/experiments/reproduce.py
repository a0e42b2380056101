r"""A reduced reproduction on a CPU: ``python -m distral_tf.experiments.reproduce``.

Sweeps all seven deep algorithms on ``two_rooms`` and on the pixel level set
``minigrid`` with reduced grids and budgets, three of them (A3C, A3C_multitask,
KL+ent_2col) at their defaults on the 3D level set ``miniworld``, and transfers
KL+ent_2col's pi_0 to a held-out task on ``two_rooms`` and ``minigrid``
(``--preset=cpu``; ``--preset=smoke`` checks the whole pipeline in minutes;
``--level_sets`` keeps a part). Then writes Figure 4's panels, the results
table, the paper's claims with their verdicts (``claims``; a claim about
algorithms a level set did not run says so), the transfer figures and
``results.md`` into ``--out``::

  python -m distral_tf.experiments.reproduce --out=docs/reproduction \
      --results_doc=docs/reproduction.md

With ``--results_doc`` the text between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines of that Markdown file is replaced by the results.
Resumable: run the same command again after an interruption. Each run is
recorded as it finishes (``run_records``: its config, summary and compressed
episodes, no checkpoints) under ``--records_dir`` (default ``<--out>/runs``),
and recorded runs are restored before anything runs: a fresh checkout redraws
everything from the records (``--figures_only``) and continues a reproduction
where the records end. The runs are the same as those of the ``sweep`` and
``transfer`` commands that ``--print_commands`` prints.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.experiments import analysis
from distral_tf.experiments import panels
from distral_tf.experiments import run_records
from distral_tf.experiments import schedule
from distral_tf.experiments import transfer_runs


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """One level set's reduced sweep: ``algorithms`` x grid x seeds."""
  level_set: str
  entropy_costs: tuple[float, ...]
  learning_rates: tuple[float, ...]
  seeds: int
  env_steps_per_task: int
  num_tasks: int
  workers_per_task: int
  # The deep algorithms swept, a subset of ``analysis.ALGORITHM_ORDER``.
  algorithms: tuple[str, ...] = analysis.ALGORITHM_ORDER

  def __post_init__(self) -> None:
    unknown = [a for a in self.algorithms if a not in analysis.ALGORITHM_ORDER]
    if unknown or not self.algorithms or len(set(self.algorithms)) != len(
        self.algorithms):
      raise ValueError(f'{self.level_set}: algorithms must be distinct names of '
                       f'{", ".join(analysis.ALGORITHM_ORDER)}; got '
                       f'{", ".join(self.algorithms) or "none"}')

  @property
  def extra_args(self) -> tuple[str, ...]:
    return (f'--num_tasks={self.num_tasks}',
            f'--workers_per_task={self.workers_per_task}')

  @property
  def not_run(self) -> tuple[str, ...]:
    """The deep algorithms this plan leaves out, in ``analysis`` order."""
    return tuple(a for a in analysis.ALGORITHM_ORDER if a not in self.algorithms)

  @property
  def num_runs(self) -> int:
    return (len(self.algorithms) * len(self.entropy_costs) *
            len(self.learning_rates) * self.seeds)

  @property
  def total_frames(self) -> int:
    return self.num_runs * self.env_steps_per_task * self.num_tasks


# The CPU-scale reproduction. two_rooms: the paper's full grid (3 entropy costs
# x 3 learning rates) x 3 seeds, bracketing the level set's defaults (Distral
# 0.01 / 3e-3, the A3C family 0.05 / 1e-2), at the default budget of 60,000
# frames per task (4 tasks). minigrid: a 2 x 2 grid around its defaults x 3
# seeds at 200,000 frames per task, where the first tasks reach 0.8 of their
# optimum. miniworld (3D, rendered in software): only A3C, A3C_multitask and
# KL+ent_2col, 2 seeds, at the level set's defaults, which are the same for the
# three (entropy cost 0.01 and learning rate 5e-4, annealed linearly: the common
# defaults, agents/config.py), with a budget of about two hours for the 6 runs.
# Wall time is recorded in the results (``--level_sets`` runs a part).
MINIWORLD_ALGORITHMS = ('a3c', 'a3c_multitask', 'kl_ent_2col')
PRESETS: dict[str, tuple[SweepPlan, ...]] = {
    'cpu': (
        SweepPlan('two_rooms', (0.01, 0.03, 0.05), (1e-3, 3e-3, 1e-2), seeds=3,
                  env_steps_per_task=60_000, num_tasks=4, workers_per_task=16),
        SweepPlan('minigrid', (0.001, 0.01), (5e-4, 1e-3), seeds=3,
                  env_steps_per_task=200_000, num_tasks=4, workers_per_task=8),
        # Budget, from the sweep's own runs two at a time (--parallel=2) on 2
        # cores: a3c and a3c_multitask train at 1,000-1,270 frames/s each (4
        # tasks x 8 workers); kl_ent_2col was about 10% slower than a3c in
        # `python -m distral_tf.bench --level_set=miniworld` (495 vs 554 frames/s
        # alone on a slower machine). Taking 1,100 and 950 frames/s, the three
        # pairs of seeds cost 4 x B x (2 / 1,100 + 1 / 950) = 0.0115 B seconds
        # for B frames per task; with about 2 minutes of start-up a pair, B =
        # 480,000 is 92 + 6 minutes: about 1.7 hours for the 6 runs, within two.
        # Measured: one invocation of 89 minutes (runs at 930-1,490 frames/s).
        SweepPlan('miniworld', (0.01,), (5e-4,), seeds=2,
                  env_steps_per_task=480_000, num_tasks=4, workers_per_task=8,
                  algorithms=MINIWORLD_ALGORITHMS),
    ),
    'smoke': (
        SweepPlan('two_rooms', (0.03,), (1e-3,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
        SweepPlan('minigrid', (0.01,), (5e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
        SweepPlan('miniworld', (0.01,), (5e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1, algorithms=MINIWORLD_ALGORITHMS),
    ),
}
# Transfer to a held-out task (task 3 of the sweeps' 4; 3 seeds), at the sweeps'
# budgets, with KL+ent_2col at its level-set defaults.
TRANSFERS: dict[str, tuple[transfer_runs.TransferPlan, ...]] = {
    'cpu': (
        transfer_runs.TransferPlan('two_rooms', 'kl_ent_2col', holdout=3, num_tasks=4,
                                   seeds=3, env_steps_per_task=60_000,
                                   holdout_env_steps=60_000),
        transfer_runs.TransferPlan('minigrid', 'kl_ent_2col', holdout=3, num_tasks=4,
                                   seeds=3, env_steps_per_task=200_000,
                                   holdout_env_steps=200_000),
    ),
    'smoke': (
        transfer_runs.TransferPlan('two_rooms', 'kl_ent_2col', holdout=1, num_tasks=2,
                                   seeds=1, env_steps_per_task=2_000,
                                   holdout_env_steps=2_000),
    ),
}
BEGIN_MARK = '<!-- results:begin -->'
END_MARK = '<!-- results:end -->'
# In --records_dir: the wall time of every invocation that ran runs.
TIME_LOG = 'reproduce_time.json'

_PRESET = flags.DEFINE_enum('preset', 'cpu', list(PRESETS),
                            'cpu: the reduced reproduction; smoke: minutes, to check '
                            'the pipeline.')
_LEVEL_SETS = flags.DEFINE_list(
    'level_sets', [], 'Run and draw only these level sets of the preset; default: all.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', 'runs/reproduction',
                                 'Root directory of the sweeps\' runs.')
_TRANSFER_DIR = flags.DEFINE_string('transfer_dir', 'runs/transfer',
                                    'Root directory of the transfer runs.')
_OUT = flags.DEFINE_string('out', 'docs/reproduction',
                           'Directory for figures, table and results.md.')
_RESULTS_DOC = flags.DEFINE_string(
    'results_doc', '', 'Markdown file whose results block is replaced (optional).')
_RECORDS_DIR = flags.DEFINE_string(
    'records_dir', '', 'Records of finished runs, restored before anything runs and '
    'written as runs finish, and the invocations\' wall times; default: <--out>/runs.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
_LAUNCH_COMMAND = flags.DEFINE_string(
    'launch_command', '', 'Command that trains one run given the trainer\'s flags; '
    'default "<python> -m distral_tf.launch".')
_PRINT_COMMANDS = flags.DEFINE_boolean(
    'print_commands', False, 'Print the equivalent sweep and figure commands and exit.')
_FIGURES_ONLY = flags.DEFINE_boolean(
    'figures_only', False, 'Only draw figures and tables from the runs there are.')


def select_plans(plans: Sequence[SweepPlan],
                 level_sets: Sequence[str]) -> tuple[SweepPlan, ...]:
  """The plans of ``level_sets`` (all when empty); raises ``errors.UsageError``."""
  names = [p.level_set for p in plans]
  unknown = [n for n in level_sets if n not in names]
  if unknown:
    raise errors.UsageError(f'--level_sets: {",".join(unknown)} not in the preset; '
                            f'it has {", ".join(names)}')
  return tuple(p for p in plans if not level_sets or p.level_set in level_sets)


def sweep_command(plan: SweepPlan, sweep_dir: str, parallel: int) -> str:
  """The ``sweep`` command line equivalent to ``plan``."""
  args = ['python', '-m', 'distral_tf.experiments.sweep',
          f'--level_set={plan.level_set}',
          f'--algorithms={",".join(plan.algorithms)}',
          f'--entropy_costs={",".join(map(schedule.format_value, plan.entropy_costs))}',
          f'--learning_rates={",".join(map(schedule.format_value, plan.learning_rates))}',
          f'--seeds={plan.seeds}', f'--env_steps_per_task={plan.env_steps_per_task}',
          f'--sweep_dir={sweep_dir}', f'--parallel={parallel}', '--',
          *plan.extra_args]
  return shlex.join(args)


def transfer_command(plan: transfer_runs.TransferPlan, transfer_dir: str,
                     parallel: int, out_dir: str) -> str:
  """The ``transfer`` command line equivalent to ``plan``."""
  args = ['python', '-m', 'distral_tf.experiments.transfer',
          f'--level_set={plan.level_set}', f'--algorithm={plan.algorithm}',
          f'--holdout_task={plan.holdout}', f'--num_tasks={plan.num_tasks}',
          f'--seeds={plan.seeds}', f'--env_steps_per_task={plan.env_steps_per_task}',
          f'--holdout_env_steps={plan.holdout_env_steps}',
          f'--transfer_dir={transfer_dir}', f'--parallel={parallel}',
          f'--out={os.path.join(out_dir, plan.stem)}']
  return shlex.join(args)


def transfer_frames(plan: transfer_runs.TransferPlan) -> int:
  """Environment frames of a transfer plan: pretraining plus two held-out runs."""
  return plan.seeds * ((plan.num_tasks - 1) * plan.env_steps_per_task +
                       2 * plan.holdout_env_steps)


def plan_specs(plan: SweepPlan, sweep_dir: str) -> list[schedule.RunSpec]:
  """The runs of ``plan`` under ``sweep_dir``: its algorithms x grid x seeds."""
  return schedule.sweep_specs(sweep_dir, plan.level_set, plan.algorithms,
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


def record_invocation(records_dir: str, seconds: float, completed: int,
                      parallel: int, level_sets: Sequence[str]) -> None:
  """Appends this invocation's wall time and level sets to ``records_dir/TIME_LOG``."""
  path = os.path.join(records_dir, TIME_LOG)
  log = analysis.read_json(path).get('invocations', [])
  log.append(dict(seconds=round(seconds, 1), runs_completed=completed,
                  parallel=parallel, level_sets=list(level_sets)))
  os.makedirs(records_dir, exist_ok=True)
  results.write_json(path, dict(invocations=log))


def wall_time_sentence(records_dir: str, level_sets: Sequence[str]) -> str:
  """The command's own wall time over its invocations that ran any of ``level_sets``.

  An invocation logged without its level sets counts for every level set.
  """
  log = [i for i in analysis.read_json(os.path.join(records_dir, TIME_LOG)).get(
      'invocations', []) if set(i.get('level_sets', level_sets)) & set(level_sets)]
  if not log:
    return ''
  hours = sum(float(i.get('seconds', 0.0)) for i in log) / 3600
  parallel = sorted({int(i.get('parallel', 1)) for i in log})
  return (f' Its invocations recorded in `{TIME_LOG}` for {", ".join(level_sets)} ran '
          f'{hours:.2f} hours of wall time in all ({len(log)} invocation(s), --parallel='
          f'{",".join(map(str, parallel))}).')


def results_markdown(report: dict, plans: Sequence[SweepPlan], specs, base_dir: str,
                     commands: Sequence[str], transfer_stems: Sequence[str],
                     records_dir: str) -> str:
  """The results section: figures (paths relative to ``base_dir``), table, cost."""
  count, wall, frames = measured_cost(specs)
  part = f' --level_sets={",".join(_LEVEL_SETS.value)}' if _LEVEL_SETS.value else ''
  lines = [f'Produced by `python -m distral_tf.experiments.reproduce '
           f'--preset={_PRESET.value}{part}`: {count} of {len(specs)} runs finished, '
           f'{frames:,} environment frames in {wall / 3600:.2f} hours of run wall '
           f'time ({frames / max(wall, 1e-9):,.0f} frames/s per run).'
           f'{wall_time_sentence(records_dir, [p.level_set for p in plans])}', '']
  subsets = [f'`{p.level_set}` runs only {", ".join(p.algorithms)}; not run there: '
             f'{", ".join(p.not_run)}.' for p in plans if p.not_run]
  if subsets:
    lines += [' '.join(subsets), '']
  for plan in plans:
    png = os.path.join(_OUT.value, f'figure4_{plan.level_set}.png')
    if os.path.exists(png):
      lines += [f'![Figure 4 panels, {plan.level_set}]'
                f'({os.path.relpath(png, base_dir)})', '']
  with open(report['table_md']) as f:
    lines += [f.read().rstrip(), '']
  with open(report['claims_md']) as f:
    lines += ['The paper\'s claims on these runs:', '', f.read().rstrip(), '']
  for stem in transfer_stems:
    if os.path.exists(stem + '.png'):
      lines += [f'![Transfer]({os.path.relpath(stem + ".png", base_dir)})', '']
    if os.path.exists(stem + '.md'):
      with open(stem + '.md') as f:
        lines += [f'Transfer, `{os.path.basename(stem)}`:', '', f.read().rstrip(), '']
  lines += ['Equivalent commands:', '', '```sh', *commands, '```']
  return '\n'.join(lines) + '\n'


def read_results_doc(path: str) -> tuple[str, int, int]:
  """The text of ``path`` and where its block starts and ends.

  Raises ``errors.UsageError`` when the file cannot be read or lacks the
  ``BEGIN_MARK`` / ``END_MARK`` lines (checked before a reproduction starts,
  not after it ran for hours).
  """
  try:
    with open(path) as f:
      doc = f.read()
  except OSError as e:
    raise errors.UsageError(f'--results_doc {path}: {e.strerror}') from e
  start, end = doc.find(BEGIN_MARK), doc.find(END_MARK)
  if start < 0 or end < start:
    raise errors.UsageError(f'--results_doc {path} lacks the lines {BEGIN_MARK} and '
                            f'{END_MARK}')
  return doc, start, end


def replace_block(path: str, text: str) -> None:
  """Replaces what lies between ``BEGIN_MARK`` and ``END_MARK`` lines of ``path``."""
  doc, start, end = read_results_doc(path)
  doc = doc[:start + len(BEGIN_MARK)] + '\n' + text + doc[end:]
  with open(path, 'w') as f:
    f.write(doc)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  plans = select_plans(PRESETS[_PRESET.value], _LEVEL_SETS.value)
  if _RESULTS_DOC.value and not _PRINT_COMMANDS.value:
    read_results_doc(_RESULTS_DOC.value)
  level_sets = [p.level_set for p in plans]
  transfers = [t for t in TRANSFERS[_PRESET.value] if t.level_set in level_sets]
  commands = [sweep_command(p, _SWEEP_DIR.value, _PARALLEL.value) for p in plans]
  commands += [transfer_command(t, _TRANSFER_DIR.value, _PARALLEL.value, _OUT.value)
               for t in transfers]
  figure4 = (f'python -m distral_tf.experiments.figure4 '
             f'--sweep_dir={_SWEEP_DIR.value} --out={_OUT.value}')
  if _LEVEL_SETS.value:
    figure4 += f' --level_sets={",".join(level_sets)}'
  commands.append(figure4)
  if _PRINT_COMMANDS.value:
    print('\n'.join(commands))
    return 0
  specs = [s for p in plans for s in plan_specs(p, _SWEEP_DIR.value)]
  specs += [s for t in transfers
            for s in transfer_runs.transfer_specs(t, _TRANSFER_DIR.value)]
  records = run_records.Records(
      _RECORDS_DIR.value or os.path.join(_OUT.value, 'runs'),
      {_SWEEP_DIR.value: 'reproduction', _TRANSFER_DIR.value: 'transfer'})
  run_dir.prepare(records.path, 'records_dir')  # Fails here, before any run.
  print(run_records.describe(run_records.sync(specs, records), records))
  failed = False
  if not _FIGURES_ONLY.value:
    frames = (sum(p.total_frames for p in plans) +
              sum(transfer_frames(t) for t in transfers))
    print(f'{len(specs)} runs, {frames:,} environment frames in all')
    start = time.time()
    finished_before = sum(schedule.is_finished(s.logdir) for s in specs)
    try:
      outcome = schedule.run_all(
          specs, schedule.launch_command_from_flag(_LAUNCH_COMMAND.value),
          _PARALLEL.value, name='reproduce',
          on_finished=lambda spec: run_records.record_or_warn(
              spec.logdir, records.record_dir(spec.logdir)))
    finally:  # Interrupted too: a long reproduction is run in several sittings.
      record_invocation(
          records.path, time.time() - start,
          sum(schedule.is_finished(s.logdir) for s in specs) - finished_before,
          _PARALLEL.value, level_sets)
    schedule.report_failures(outcome)
    failed = not outcome.ok
  report = panels.write_figure4(_SWEEP_DIR.value, _OUT.value, level_sets)
  stems = []
  for t in transfers:
    stem = os.path.join(_OUT.value, t.stem)
    for path in transfer_runs.summarise(t.root(_TRANSFER_DIR.value), range(t.seeds),
                                        stem, t.title):
      print(f'wrote {path}')
    stems.append(stem)
  results_md = os.path.join(_OUT.value, 'results.md')
  with open(results_md, 'w') as f:
    f.write(results_markdown(report, plans, specs, _OUT.value, commands, stems,
                             records.path))
  print(f'wrote {results_md}')
  if _RESULTS_DOC.value:
    replace_block(_RESULTS_DOC.value, results_markdown(
        report, plans, specs, os.path.dirname(_RESULTS_DOC.value) or '.', commands,
        stems, records.path))
    print(f'updated {_RESULTS_DOC.value}')
  return 1 if failed else 0


if __name__ == '__main__':
  schedule.run_command(main)
