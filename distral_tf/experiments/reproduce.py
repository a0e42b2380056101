r"""A reduced reproduction on a CPU: ``python -m distral_tf.experiments.reproduce``.

Sweeps all seven deep algorithms on ``two_rooms`` and on the pixel level set
``minigrid`` with reduced grids and budgets, three of them (A3C, A3C_multitask,
KL+ent_2col) at their defaults on the 3D level set ``miniworld``, and transfers
KL+ent_2col's pi_0 to a held-out task on ``two_rooms`` and ``minigrid``
(``--preset=cpu``; ``--preset=smoke`` checks the whole pipeline in minutes;
``--level_sets`` runs a part). Then writes Figure 4's panels, the results
table, the paper's claims with their verdicts (``claims``; a claim about
algorithms a level set did not run says so), the transfer figures and
``results.md`` into ``--out``, drawn from every level set of the preset
that has a finished run, whichever ``--level_sets`` ran (a results block
stays whole when a preset is run a level set at a time)::

  python -m distral_tf.experiments.reproduce --out=docs/reproduction \
      --results_doc=docs/reproduction.md

``--preset=adaptive`` adds the entry ``kl_ent_2col_adaptive`` (KL+ent_2col with
``--adaptive_costs``, ``analysis.VARIANTS``) to the ``two_rooms`` and
``minigrid`` sweeps of ``cpu``, same grids, seeds and budgets: it runs that
entry's runs and restores the others from the records, and draws all of them
into ``<--out>/adaptive`` (``PARTS``); ``--preset=adaptive_smoke`` checks it in
minutes.

``--preset=dmlab_cpu`` runs Figure 4's mazes panel on DeepMind Lab at CPU
scale (``presets``: 4 tasks, 5 algorithms and kl_ent_2col_adaptive, 2 seeds,
about 10 hours on 2 cores) into ``<--out>/dmlab``; ``--max_runs=N`` runs the
next N unfinished runs of a preset and draws what there is, so that a long one
is done in pieces that each finish and are recorded.

With ``--results_doc`` the text between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines of that Markdown file is replaced by the results
(``<!-- results:<part>:begin -->`` ... for a preset drawn apart, ``presets.PARTS``).
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
from distral_tf.experiments import presets
from distral_tf.experiments import run_records
from distral_tf.experiments import schedule
from distral_tf.experiments import transfer_runs


BEGIN_MARK = '<!-- results:begin -->'
END_MARK = '<!-- results:end -->'
# In --records_dir: the wall time of every invocation that ran runs.
TIME_LOG = 'reproduce_time.json'

_PRESET = flags.DEFINE_enum('preset', 'cpu', list(presets.PRESETS),
                            'cpu: the reduced reproduction; adaptive: its two_rooms and '
                            'minigrid sweeps with kl_ent_2col_adaptive beside the seven; '
                            'dmlab_cpu: Figure 4\'s mazes panel on DeepMind Lab (12 runs with '
                            'kl_ent_2col_adaptive, about 10 hours: use --max_runs); smoke, adaptive_smoke, '
                            'dmlab_smoke: minutes, to check their pipelines.')
_LEVEL_SETS = flags.DEFINE_list(
    'level_sets', [], 'Run only these level sets of the preset (default: all); every '
    'level set with a finished run is drawn.')
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
_MAX_RUNS = flags.DEFINE_integer(
    'max_runs', 0, 'Run at most this many of the unfinished runs (in their order: '
    'seed first), then draw from the runs there are; 0: all. For a reproduction '
    'longer than a sitting: each piece finishes its runs and records them.',
    lower_bound=0)
_FIGURES_ONLY = flags.DEFINE_boolean(
    'figures_only', False, 'Only draw figures and tables from the runs there are.')


def select_plans(plans: Sequence[presets.SweepPlan],
                 level_sets: Sequence[str]) -> tuple[presets.SweepPlan, ...]:
  """The plans of ``level_sets`` (all when empty); raises ``errors.UsageError``."""
  names = [p.level_set for p in plans]
  unknown = [n for n in level_sets if n not in names]
  if unknown:
    raise errors.UsageError(f'--level_sets: {",".join(unknown)} not in the preset; '
                            f'it has {", ".join(names)}')
  return tuple(p for p in plans if not level_sets or p.level_set in level_sets)


def sweep_command(plan: presets.SweepPlan, sweep_dir: str, parallel: int) -> str:
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
  return os.path.join(out, presets.PARTS[preset]) if preset in presets.PARTS else out


def block_marks(preset: str) -> tuple[str, str]:
  """The lines around the results block of ``preset`` in ``--results_doc``."""
  if preset not in presets.PARTS:
    return BEGIN_MARK, END_MARK
  return (f'<!-- results:{presets.PARTS[preset]}:begin -->',
          f'<!-- results:{presets.PARTS[preset]}:end -->')


def drawn_algorithms(plans: Sequence[presets.SweepPlan]) -> tuple[str, ...]:
  """The entries drawn: the paper's seven, and the variants ``plans`` run."""
  return tuple(a for a in analysis.ENTRY_ORDER if a in analysis.ALGORITHM_ORDER or
               any(a in p.algorithms for p in plans))


def figure4_command(plans: Sequence[presets.SweepPlan], sweep_dir: str, out_dir: str,
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


def plan_specs(plan: presets.SweepPlan, sweep_dir: str) -> list[schedule.RunSpec]:
  """The runs of ``plan`` under ``sweep_dir``: its algorithms x grid x seeds."""
  return schedule.sweep_specs(sweep_dir, plan.level_set, plan.algorithms,
                              plan.entropy_costs, plan.learning_rates,
                              range(plan.seeds), plan.env_steps_per_task,
                              plan.extra_args)


def runs_to_start(specs: Sequence[schedule.RunSpec],
                  max_runs: int) -> list[schedule.RunSpec]:
  """``specs`` without the unfinished ones after the first ``max_runs`` (0: all)."""
  if not max_runs:
    return list(specs)
  pending = [s for s in specs if not schedule.is_finished(s.logdir)]
  dropped = {s.logdir for s in pending[max_runs:]}
  return [s for s in specs if s.logdir not in dropped]


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
                      preset: str = 'cpu', runs: Sequence[str] = ()) -> None:
  """Appends this invocation's wall time, level sets and preset to ``records_dir/TIME_LOG``.

  ``runs``: the record directories (relative to ``records_dir``) of the runs it
  finished, so that ``wall_time_sentence`` can leave it out once later runs
  have replaced all of them.
  """
  path = os.path.join(records_dir, TIME_LOG)
  log = analysis.read_json(path).get('invocations', [])
  entry = dict(seconds=round(seconds, 1), runs_completed=completed,
               parallel=parallel, level_sets=list(level_sets), preset=preset)
  if runs:
    entry['runs'] = sorted(runs)
  log.append(entry)
  os.makedirs(records_dir, exist_ok=True)
  results.write_json(path, dict(invocations=log))


def _superseded(log: Sequence[dict], records_dir: str) -> list[bool]:
  """Per invocation: whether none of the runs it lists stands for it any more.

  A listed run stands for the last invocation that lists it, while its record
  exists (a record removed to run again, and not yet run, stands for none). An
  invocation that lists no runs (older logs, or none finished) is never
  superseded.
  """
  last = {}
  for k, invocation in enumerate(log):
    for run in invocation.get('runs', ()):
      last[run] = k
  out = []
  for k, invocation in enumerate(log):
    runs = invocation.get('runs', ())
    out.append(bool(runs) and not any(
        last[r] == k and os.path.isdir(os.path.join(records_dir, r)) for r in runs))
  return out


def wall_time_sentence(records_dir: str, level_sets: Sequence[str],
                       preset: str = 'cpu') -> str:
  """The command's own wall time over its invocations of ``preset`` that ran any
  of ``level_sets``.

  An invocation logged without its level sets counts for every level set, one
  logged without its preset for ``cpu`` (the records' preset before others).
  One whose runs were all run again later, or whose records are gone
  (``_superseded``), is left out, and the sentence says how many were.
  """
  everything = analysis.read_json(os.path.join(records_dir, TIME_LOG)).get('invocations', [])
  superseded = _superseded(everything, records_dir)
  log, left_out = [], 0
  for invocation, old in zip(everything, superseded):
    if (set(invocation.get('level_sets', level_sets)) & set(level_sets)
        and invocation.get('preset', 'cpu') == preset):
      if old:
        left_out += 1
      else:
        log.append(invocation)
  if not log:
    return ''
  hours = sum(float(i.get('seconds', 0.0)) for i in log) / 3600
  parallel = sorted({int(i.get('parallel', 1)) for i in log})
  note = (f'; {left_out} earlier invocation(s) left out, their runs run again or unrecorded'
          if left_out else '')
  return (f' Its invocations recorded in `{TIME_LOG}` for {", ".join(level_sets)} ran '
          f'{hours:.2f} hours of wall time in all ({len(log)} invocation(s), --parallel='
          f'{",".join(map(str, parallel))}{note}).')


def results_markdown(report: dict, plans: Sequence[presets.SweepPlan], specs, base_dir: str,
                     commands: Sequence[str], transfer_stems: Sequence[str],
                     records_dir: str, out_dir: str, partial: bool = False) -> str:
  """The results section of ``plans``: figures (in ``out_dir``; paths relative to
  ``base_dir``), table, cost (``partial``: not every level set of the preset)."""
  count, wall, frames = measured_cost(specs)
  part = f' --level_sets={",".join(p.level_set for p in plans)}' if partial else ''
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


def equivalent_commands(plans: Sequence[presets.SweepPlan],
                        transfers: Sequence[transfer_runs.TransferPlan], out_dir: str,
                        partial: bool) -> list[str]:
  """The sweep, transfer and figure commands that run and draw ``plans`` and
  ``transfers`` (``partial``: not every level set of the preset)."""
  commands = [sweep_command(p, _SWEEP_DIR.value, _PARALLEL.value) for p in plans]
  commands += [transfer_command(t, _TRANSFER_DIR.value, _PARALLEL.value, out_dir)
               for t in transfers]
  commands.append(figure4_command(plans, _SWEEP_DIR.value, out_dir,
                                  [p.level_set for p in plans] if partial else ()))
  return commands


def transfers_of(preset: str, level_sets: Sequence[str]
                 ) -> tuple[transfer_runs.TransferPlan, ...]:
  """The transfer plans of ``preset`` on ``level_sets``."""
  return tuple(t for t in presets.TRANSFERS[preset] if t.level_set in level_sets)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  plans = select_plans(presets.PRESETS[_PRESET.value], _LEVEL_SETS.value)
  if _RESULTS_DOC.value and not _PRINT_COMMANDS.value:
    read_results_doc(_RESULTS_DOC.value, block_marks(_PRESET.value))
  out_dir = figures_dir(_OUT.value, _PRESET.value)
  if _PRINT_COMMANDS.value:
    transfers = transfers_of(_PRESET.value, [p.level_set for p in plans])
    print('\n'.join(equivalent_commands(plans, transfers, out_dir,
                                        bool(_LEVEL_SETS.value))))
    return 0
  records = run_records.Records(
      _RECORDS_DIR.value or os.path.join(_OUT.value, 'runs'),
      {_SWEEP_DIR.value: 'reproduction', _TRANSFER_DIR.value: 'transfer'})
  # Fails here, before any run: every directory written is this command's while
  # it runs (a second invocation on any of them is refused, naming this one).
  held = {'out': _OUT.value, 'records_dir': records.path, 'sweep_dir': _SWEEP_DIR.value}
  if presets.TRANSFERS[_PRESET.value]:  # a preset without transfer runs leaves it free
    held['transfer_dir'] = _TRANSFER_DIR.value
  with run_dir.held(held):
    return _reproduce(plans, records, out_dir)


def _specs(plans: Sequence[presets.SweepPlan],
           transfers: Sequence[transfer_runs.TransferPlan]) -> list[schedule.RunSpec]:
  """The runs of ``plans`` and ``transfers``, under the flags' directories."""
  specs = [s for p in plans for s in plan_specs(p, _SWEEP_DIR.value)]
  return specs + [s for t in transfers
                  for s in transfer_runs.transfer_specs(t, _TRANSFER_DIR.value)]


def _run(plans: Sequence[presets.SweepPlan],
         transfers: Sequence[transfer_runs.TransferPlan],
         records: run_records.Records) -> bool:
  """Runs the unfinished runs of ``plans`` and ``transfers`` (``--max_runs`` of
  them), recording each as it finishes; True when none failed."""
  specs = _specs(plans, transfers)
  frames = (sum(p.total_frames for p in plans) +
            sum(transfer_frames(t) for t in transfers))
  print(f'{len(specs)} runs, {frames:,} environment frames in all')
  start = time.time()
  done_before = {s.logdir for s in specs if schedule.is_finished(s.logdir)}
  finished_before = len(done_before)
  to_run = runs_to_start(specs, _MAX_RUNS.value)
  if len(to_run) < len(specs):
    print(f'--max_runs={_MAX_RUNS.value}: running {len(to_run) - finished_before} of '
          f'the {len(specs) - finished_before} unfinished runs')
  try:
    outcome = schedule.run_all(
        to_run, schedule.launch_command_from_flag(_LAUNCH_COMMAND.value),
        _PARALLEL.value, name='reproduce',
        on_finished=lambda spec: run_records.record_or_warn(
            spec.logdir, records.record_dir(spec.logdir)))
  finally:  # Interrupted too: a long reproduction is run in several sittings.
    done_now = [s.logdir for s in specs
                if s.logdir not in done_before and schedule.is_finished(s.logdir)]
    record_invocation(
        records.path, time.time() - start, len(done_now),
        _PARALLEL.value, [p.level_set for p in plans], _PRESET.value,
        runs=[os.path.relpath(records.record_dir(d), records.path) for d in done_now])
  schedule.report_failures(outcome)
  return outcome.ok


def _reproduce(plans: Sequence[presets.SweepPlan], records: run_records.Records,
               out_dir: str) -> int:
  """Restores and records every run of the preset, runs the missing ones of
  ``plans``, then draws every level set with a finished run into ``out_dir``."""
  everything = presets.PRESETS[_PRESET.value]
  print(run_records.describe(run_records.sync(
      _specs(everything, presets.TRANSFERS[_PRESET.value]), records), records))
  transfers = transfers_of(_PRESET.value, [p.level_set for p in plans])
  ok = _FIGURES_ONLY.value or _run(plans, transfers, records)
  drawn = tuple(p for p in everything if p in plans or any(
      schedule.is_finished(s.logdir) for s in plan_specs(p, _SWEEP_DIR.value)))
  level_sets = [p.level_set for p in drawn]
  transfers = transfers_of(_PRESET.value, level_sets)
  partial = len(drawn) < len(everything)
  commands = equivalent_commands(drawn, transfers, out_dir, partial)
  report = panels.write_figure4(_SWEEP_DIR.value, out_dir, level_sets,
                                algorithms=drawn_algorithms(drawn))
  stems = []
  for t in transfers:
    stem = os.path.join(out_dir, t.stem)
    for path in transfer_runs.summarise(t.root(_TRANSFER_DIR.value), range(t.seeds),
                                        stem, t.title):
      print(f'wrote {path}')
    stems.append(stem)
  specs = _specs(drawn, transfers)
  results_md = os.path.join(out_dir, 'results.md')
  with open(results_md, 'w') as f:
    f.write(results_markdown(report, drawn, specs, out_dir, commands, stems,
                             records.path, out_dir, partial))
  print(f'wrote {results_md}')
  if _RESULTS_DOC.value:
    replace_block(_RESULTS_DOC.value, results_markdown(
        report, drawn, specs, os.path.dirname(_RESULTS_DOC.value) or '.', commands,
        stems, records.path, out_dir, partial), block_marks(_PRESET.value))
    print(f'updated {_RESULTS_DOC.value}')
  return 0 if ok else 1


if __name__ == '__main__':
  schedule.run_command(main)
