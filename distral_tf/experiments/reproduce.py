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

``--preset=adaptive`` adds the entry ``kl_ent_2col_adaptive`` (KL+ent_2col with
``--adaptive_costs``, ``analysis.VARIANTS``) to the ``two_rooms`` and
``minigrid`` sweeps of ``cpu``, same grids, seeds and budgets: it runs that
entry's runs and restores the others from the records, and draws all of them
into ``<--out>/adaptive`` (``PARTS``); ``--preset=adaptive_smoke`` checks it in
minutes.

With ``--results_doc`` the text between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines of that Markdown file is replaced by the results
(``<!-- results:adaptive:begin -->`` ... for the ``adaptive`` preset).
Resumable: run the same command again after an interruption (while one
invocation runs, a second on the same directories is refused). Each run is
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
  # The entries swept (``analysis.ENTRIES``): the paper's seven algorithms by
  # default; a subset, or with variants such as ``kl_ent_2col_adaptive``.
  algorithms: tuple[str, ...] = analysis.ALGORITHM_ORDER

  def __post_init__(self) -> None:
    unknown = [a for a in self.algorithms if a not in analysis.ENTRIES]
    if unknown or not self.algorithms or len(set(self.algorithms)) != len(
        self.algorithms):
      raise ValueError(f'{self.level_set}: algorithms must be distinct names of '
                       f'{", ".join(analysis.ENTRY_ORDER)}; got '
                       f'{", ".join(self.algorithms) or "none"}')

  @property
  def extra_args(self) -> tuple[str, ...]:
    return (f'--num_tasks={self.num_tasks}',
            f'--workers_per_task={self.workers_per_task}')

  @property
  def not_run(self) -> tuple[str, ...]:
    """The paper's algorithms this plan leaves out, in ``analysis`` order."""
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
_CPU_PLANS = (
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
)
ADAPTIVE = 'kl_ent_2col_adaptive'
PRESETS: dict[str, tuple[SweepPlan, ...]] = {
    'cpu': _CPU_PLANS,
    'smoke': (
        SweepPlan('two_rooms', (0.03,), (1e-3,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
        SweepPlan('minigrid', (0.01,), (5e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1),
        SweepPlan('miniworld', (0.01,), (5e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1, algorithms=MINIWORLD_ALGORITHMS),
    ),
    # The cpu preset's two_rooms and minigrid sweeps with kl_ent_2col_adaptive
    # beside the seven (initial costs: the entropy costs of the grid). Its 39
    # runs are new (27 on two_rooms, 12 on minigrid); the other 273 are the cpu
    # preset's, restored from their records (run only where there are none).
    # Time at --parallel=2, from the cpu preset's runs on 2 cores (their
    # summary.json and reproduce_time.json): two_rooms ran its 198 runs in one
    # invocation of 1,992 s (10 s a run; kl_ent_2col's trained in 12-15 s), so
    # 27 runs take about 5 minutes; minigrid's kl_ent_2col runs took 342-389 s
    # each (median 357 s, two at a time), so 12 runs take 12 x 357 / 2 s = 36
    # minutes, about 40 with start-up. The dual step adds one small update per
    # gradient step. About 45 minutes in all (on the slower machine of
    # docs/reproduction.md, where minigrid runs took 11-22 minutes, 1.2-2.3
    # hours).
    'adaptive': tuple(
        dataclasses.replace(p, algorithms=p.algorithms + (ADAPTIVE,))
        for p in _CPU_PLANS if p.level_set in ('two_rooms', 'minigrid')),
    # Minutes: the entry beside its algorithm and a baseline, at settings off
    # the adaptive preset's grids (a smoke run is never taken for one of its).
    'adaptive_smoke': (
        SweepPlan('two_rooms', (0.02,), (2e-3,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1,
                  algorithms=('a3c', 'kl_ent_2col', ADAPTIVE)),
        SweepPlan('minigrid', (0.005,), (7e-4,), seeds=1, env_steps_per_task=2_000,
                  num_tasks=2, workers_per_task=1,
                  algorithms=('a3c', 'kl_ent_2col', ADAPTIVE)),
    ),
}
# Presets drawn apart from the cpu preset's results: their figures, table,
# claims and results.md go to <--out>/<part>, and --results_doc's block is the
# one between the lines <!-- results:<part>:begin --> and <!-- results:<part>:end -->.
# Their runs share --sweep_dir and the records with the cpu preset.
PARTS = {'adaptive': 'adaptive', 'adaptive_smoke': 'adaptive_smoke'}
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
    'adaptive': (),
    'adaptive_smoke': (),
}
BEGIN_MARK = '<!-- results:begin -->'
END_MARK = '<!-- results:end -->'
# In --records_dir: the wall time of every invocation that ran runs.
TIME_LOG = 'reproduce_time.json'

_PRESET = flags.DEFINE_enum('preset', 'cpu', list(PRESETS),
                            'cpu: the reduced reproduction; adaptive: its two_rooms and '
                            'minigrid sweeps with kl_ent_2col_adaptive beside the seven; '
                            'smoke, adaptive_smoke: minutes, to check their pipelines.')
_LEVEL_SETS = flags.DEFINE_list(
    'level_sets', [], 'Run and draw only these level sets of the preset; default: all.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', 'runs/reproduction',
                                 'Root directory of the sweeps\' runs.')
_TRANSFER_DIR = flags.DEFINE_string('transfer_dir', 'runs/transfer',
                                    'Root directory of the transfer runs.')
_OUT = flags.DEFINE_string('out', 'docs/reproduction',
                           'Directory for figures, table and results.md (those of the '
                           'adaptive presets in a subdirectory).')
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


def figures_dir(out: str, preset: str) -> str:
  """Where ``preset`` draws: ``out``, or its part's subdirectory (``PARTS``)."""
  return os.path.join(out, PARTS[preset]) if preset in PARTS else out


def block_marks(preset: str) -> tuple[str, str]:
  """The lines around the results block of ``preset`` in ``--results_doc``."""
  if preset not in PARTS:
    return BEGIN_MARK, END_MARK
  return (f'<!-- results:{PARTS[preset]}:begin -->',
          f'<!-- results:{PARTS[preset]}:end -->')


def drawn_algorithms(plans: Sequence[SweepPlan]) -> tuple[str, ...]:
  """The entries drawn: the paper's seven, and the variants ``plans`` run."""
  return tuple(a for a in analysis.ENTRY_ORDER if a in analysis.ALGORITHM_ORDER or
               any(a in p.algorithms for p in plans))


def figure4_command(plans: Sequence[SweepPlan], sweep_dir: str, out_dir: str,
                    level_sets: Sequence[str]) -> str:
  """The ``figure4`` command line that draws what ``plans`` draw."""
  args = ['python', '-m', 'distral_tf.experiments.figure4', f'--sweep_dir={sweep_dir}',
          f'--out={out_dir}']
  if level_sets:
    args.append(f'--level_sets={",".join(level_sets)}')
  drawn = drawn_algorithms(plans)
  if drawn != analysis.ALGORITHM_ORDER:
    args.append(f'--algorithms={",".join(drawn)}')
  return shlex.join(args)


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
                      parallel: int, level_sets: Sequence[str],
                      preset: str = 'cpu') -> None:
  """Appends this invocation's wall time, level sets and preset to ``records_dir/TIME_LOG``."""
  path = os.path.join(records_dir, TIME_LOG)
  log = analysis.read_json(path).get('invocations', [])
  log.append(dict(seconds=round(seconds, 1), runs_completed=completed,
                  parallel=parallel, level_sets=list(level_sets), preset=preset))
  os.makedirs(records_dir, exist_ok=True)
  results.write_json(path, dict(invocations=log))


def wall_time_sentence(records_dir: str, level_sets: Sequence[str],
                       preset: str = 'cpu') -> str:
  """The command's own wall time over its invocations of ``preset`` that ran any
  of ``level_sets``.

  An invocation logged without its level sets counts for every level set, one
  logged without its preset for ``cpu`` (the records' preset before others).
  """
  log = [i for i in analysis.read_json(os.path.join(records_dir, TIME_LOG)).get(
      'invocations', []) if set(i.get('level_sets', level_sets)) & set(level_sets)
         and i.get('preset', 'cpu') == preset]
  if not log:
    return ''
  hours = sum(float(i.get('seconds', 0.0)) for i in log) / 3600
  parallel = sorted({int(i.get('parallel', 1)) for i in log})
  return (f' Its invocations recorded in `{TIME_LOG}` for {", ".join(level_sets)} ran '
          f'{hours:.2f} hours of wall time in all ({len(log)} invocation(s), --parallel='
          f'{",".join(map(str, parallel))}).')


def results_markdown(report: dict, plans: Sequence[SweepPlan], specs, base_dir: str,
                     commands: Sequence[str], transfer_stems: Sequence[str],
                     records_dir: str, out_dir: str) -> str:
  """The results section: figures (in ``out_dir``; paths relative to ``base_dir``),
  table, cost."""
  count, wall, frames = measured_cost(specs)
  part = f' --level_sets={",".join(_LEVEL_SETS.value)}' if _LEVEL_SETS.value else ''
  lines = [f'Produced by `python -m distral_tf.experiments.reproduce '
           f'--preset={_PRESET.value}{part}`: {count} of {len(specs)} runs finished, '
           f'{frames:,} environment frames in {wall / 3600:.2f} hours of run wall '
           f'time ({frames / max(wall, 1e-9):,.0f} frames/s per run).'
           f'{wall_time_sentence(records_dir, [p.level_set for p in plans], _PRESET.value)}',
           '']
  subsets = [f'`{p.level_set}` runs only {", ".join(p.algorithms)}; not run there: '
             f'{", ".join(p.not_run)}.' for p in plans if p.not_run]
  if subsets:
    lines += [' '.join(subsets), '']
  for plan in plans:
    png = os.path.join(out_dir, f'figure4_{plan.level_set}.png')
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


def read_results_doc(path: str, marks: tuple[str, str] = (BEGIN_MARK, END_MARK)
                     ) -> tuple[str, int, int]:
  """The text of ``path`` and where its block starts and ends.

  Raises ``errors.UsageError`` when the file cannot be read or lacks the
  ``marks`` lines (``BEGIN_MARK`` / ``END_MARK``, or a part's; checked before a
  reproduction starts, not after it ran for hours).
  """
  try:
    with open(path) as f:
      doc = f.read()
  except OSError as e:
    raise errors.UsageError(f'--results_doc {path}: {e.strerror}') from e
  begin_mark, end_mark = marks
  start, end = doc.find(begin_mark), doc.find(end_mark)
  if start < 0 or end < start:
    raise errors.UsageError(f'--results_doc {path} lacks the lines {begin_mark} and '
                            f'{end_mark}')
  return doc, start, end


def replace_block(path: str, text: str,
                  marks: tuple[str, str] = (BEGIN_MARK, END_MARK)) -> None:
  """Replaces what lies between the ``marks`` lines of ``path``."""
  doc, start, end = read_results_doc(path, marks)
  doc = doc[:start + len(marks[0])] + '\n' + text + doc[end:]
  with open(path, 'w') as f:
    f.write(doc)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  plans = select_plans(PRESETS[_PRESET.value], _LEVEL_SETS.value)
  if _RESULTS_DOC.value and not _PRINT_COMMANDS.value:
    read_results_doc(_RESULTS_DOC.value, block_marks(_PRESET.value))
  level_sets = [p.level_set for p in plans]
  transfers = [t for t in TRANSFERS[_PRESET.value] if t.level_set in level_sets]
  out_dir = figures_dir(_OUT.value, _PRESET.value)
  commands = [sweep_command(p, _SWEEP_DIR.value, _PARALLEL.value) for p in plans]
  commands += [transfer_command(t, _TRANSFER_DIR.value, _PARALLEL.value, out_dir)
               for t in transfers]
  commands.append(figure4_command(plans, _SWEEP_DIR.value, out_dir,
                                  level_sets if _LEVEL_SETS.value else ()))
  if _PRINT_COMMANDS.value:
    print('\n'.join(commands))
    return 0
  records = run_records.Records(
      _RECORDS_DIR.value or os.path.join(_OUT.value, 'runs'),
      {_SWEEP_DIR.value: 'reproduction', _TRANSFER_DIR.value: 'transfer'})
  # Fails here, before any run: every directory written is this command's while
  # it runs (a second invocation on any of them is refused, naming this one).
  with run_dir.held({'out': _OUT.value, 'records_dir': records.path,
                     'sweep_dir': _SWEEP_DIR.value,
                     'transfer_dir': _TRANSFER_DIR.value}):
    return _reproduce(plans, transfers, commands, records, out_dir)


def _reproduce(plans: Sequence[SweepPlan],
               transfers: Sequence[transfer_runs.TransferPlan],
               commands: Sequence[str], records: run_records.Records,
               out_dir: str) -> int:
  """Restores and records runs, runs the missing ones, writes every result into
  ``out_dir``."""
  level_sets = [p.level_set for p in plans]
  specs = [s for p in plans for s in plan_specs(p, _SWEEP_DIR.value)]
  specs += [s for t in transfers
            for s in transfer_runs.transfer_specs(t, _TRANSFER_DIR.value)]
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
          _PARALLEL.value, level_sets, _PRESET.value)
    schedule.report_failures(outcome)
    failed = not outcome.ok
  report = panels.write_figure4(_SWEEP_DIR.value, out_dir, level_sets,
                                algorithms=drawn_algorithms(plans))
  stems = []
  for t in transfers:
    stem = os.path.join(out_dir, t.stem)
    for path in transfer_runs.summarise(t.root(_TRANSFER_DIR.value), range(t.seeds),
                                        stem, t.title):
      print(f'wrote {path}')
    stems.append(stem)
  results_md = os.path.join(out_dir, 'results.md')
  with open(results_md, 'w') as f:
    f.write(results_markdown(report, plans, specs, out_dir, commands, stems,
                             records.path, out_dir))
  print(f'wrote {results_md}')
  if _RESULTS_DOC.value:
    replace_block(_RESULTS_DOC.value, results_markdown(
        report, plans, specs, os.path.dirname(_RESULTS_DOC.value) or '.', commands,
        stems, records.path, out_dir), block_marks(_PRESET.value))
    print(f'updated {_RESULTS_DOC.value}')
  return 1 if failed else 0


if __name__ == '__main__':
  schedule.run_command(main)
