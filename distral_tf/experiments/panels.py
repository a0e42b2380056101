"""Figure 4's panels, the transfer figure and the results table, as files.

``write_figure4`` is what ``python -m distral_tf.experiments.figure4`` does; the
reproduction command calls it too. Every figure is written as PNG and PDF.
Every entry of ``analysis.ENTRIES`` has its own label and colour, so that a
variant (``kl_ent_2col_adaptive``) is drawn beside the fixed-cost algorithms.
"""

from __future__ import annotations

import csv
import os
import textwrap
from typing import Callable, Collection, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from distral_tf import errors  # pylint: disable=g-import-not-at-top
from distral_tf.experiments import analysis  # pylint: disable=g-import-not-at-top
from distral_tf.experiments import claims  # pylint: disable=g-import-not-at-top

FIGURE_FORMATS = ('png', 'pdf')
TABLE_STEM = 'figure4_table'
CLAIMS_FILE = 'figure4_claims.md'
LABELS = {
    'a3c': 'A3C', 'a3c_multitask': 'A3C multitask', 'a3c_2col': 'A3C 2col',
    'kl_1col': 'KL 1col', 'kl_ent_1col': 'KL+ent 1col', 'kl_2col': 'KL 2col',
    'kl_ent_2col': 'KL+ent 2col', 'kl_ent_2col_adaptive': 'KL+ent 2col, adaptive costs',
}
COLORS = {
    'a3c': 'tab:gray', 'a3c_multitask': 'tab:brown', 'a3c_2col': 'tab:pink',
    'kl_1col': 'tab:blue', 'kl_ent_1col': 'tab:cyan', 'kl_2col': 'tab:red',
    'kl_ent_2col': 'tab:orange', 'kl_ent_2col_adaptive': 'tab:green',
}
PANEL_TITLES = {'task': 'task policies $\\pi_i$',
                'distilled': 'distilled policy $\\pi_0$'}
TABLE_FIELDS = ('level_set', 'policy', 'algorithm', 'entropy_cost', 'learning_rate',
                'seeds', 'final_return', 'final_return_std', 'auc', 'auc_std',
                'runs', 'finished_runs', 'normalised')


def _fmt(x: float | None) -> str:
  return '' if x is None else f'{x:.4g}'


def table_rows(level_results: Sequence[analysis.LevelSetResult]) -> list[dict]:
  """One row per level set, panel and algorithm, at the algorithm's best setting."""
  rows = []
  for lr in level_results:
    for panel in analysis.PANELS:
      for a in lr.panels[panel]:
        rows.append(dict(
            level_set=lr.level_set, policy='pi_i' if panel == 'task' else 'pi_0',
            algorithm=a.algorithm, entropy_cost=_fmt(a.best_setting[0]),
            learning_rate=_fmt(a.best_setting[1]), seeds=len(a.best_logdirs),
            final_return=_fmt(float(np.nanmean(a.best.finals))),
            final_return_std=_fmt(analysis.std_over_runs(a.best.finals)),
            auc=_fmt(float(np.nanmean(a.best.aucs))),
            auc_std=_fmt(analysis.std_over_runs(a.best.aucs)),
            runs=a.num_runs, finished_runs=a.num_finished,
            normalised='yes' if lr.normalised else 'no'))
  return rows


def write_table(rows: Sequence[dict], csv_path: str, md_path: str,
                notes: Sequence[str] = ()) -> None:
  """The table as CSV and as Markdown (final return +- std, AUC +- std)."""
  with open(csv_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  lines = ['| level set | policy | algorithm | entropy cost | learning rate | seeds | '
           'final return | AUC | runs (finished) |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    norm = ' (normalised)' if r['normalised'] == 'yes' else ''
    lines.append(
        f'| {r["level_set"]} | {r["policy"]} | {r["algorithm"]} | {r["entropy_cost"]} '
        f'| {r["learning_rate"]} | {r["seeds"]} | {r["final_return"]} +- '
        f'{r["final_return_std"]}{norm} | {r["auc"]} +- {r["auc_std"]} | '
        f'{r["runs"]} ({r["finished_runs"]}) |')
  lines += ['', 'Best setting per algorithm and policy by mean area under the learning '
            'curve (AUC: the mean return over training); +- is the standard deviation '
            'over seeds at that setting.']
  if notes:
    lines += ['', 'Notes:', ''] + [f'- {n}' for n in notes]
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def save_figure(fig, stem: str) -> list[str]:
  """Saves ``fig`` as ``stem.png`` and ``stem.pdf``; returns the paths."""
  os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
  paths = []
  for ext in FIGURE_FORMATS:
    path = f'{stem}.{ext}'
    fig.savefig(path, dpi=120)
    paths.append(path)
  plt.close(fig)
  return paths


def _setting_label(setting: tuple) -> str:
  ent, lr = setting
  ent_s = 'default' if ent is None else f'{ent:g}'
  lr_s = 'default' if lr is None else f'{lr:g}'
  return f'ent {ent_s}, lr {lr_s}'


def _draw_curves(ax, results: Sequence[analysis.AlgorithmResult]) -> None:
  for a in results:
    color = COLORS.get(a.algorithm)
    label = (f'{LABELS.get(a.algorithm, a.algorithm)} '
             f'({_setting_label(a.best_setting)}, n={len(a.best_logdirs)})')
    ax.plot(a.best.x, a.best.mean, color=color, label=label)
    ax.fill_between(a.best.x, a.best.mean - a.best.std, a.best.mean + a.best.std,
                    color=color, alpha=0.2, linewidth=0)
  ax.set_xlabel('environment frames per task')
  ax.grid(alpha=0.3)
  if results:
    ax.legend(fontsize=6)


def _draw_sorted(ax, results: Sequence[analysis.AlgorithmResult]) -> None:
  for a in results:
    ranks = np.arange(1, len(a.sorted_finals) + 1)
    ax.plot(ranks, a.sorted_finals, marker='.', color=COLORS.get(a.algorithm),
            label=LABELS.get(a.algorithm, a.algorithm))
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel('run (sorted by final return)')
  ax.grid(alpha=0.3)
  if results:
    ax.legend(fontsize=6)


def plot_level_set(result: analysis.LevelSetResult, stem: str) -> list[str]:
  """Figure 4's four panels for one level set: curves and sorted final returns,
  for the task policies (top) and the distilled policies (bottom)."""
  fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
  ylabel = 'return / best A3C' if result.normalised else 'episode return'
  for row, panel in enumerate(analysis.PANELS):
    curves_ax, sorted_ax = axes[row]
    _draw_curves(curves_ax, result.panels[panel])
    _draw_sorted(sorted_ax, result.panels[panel])
    curves_ax.set_title(f'{result.level_set}: {PANEL_TITLES[panel]}, best setting '
                        '(mean ± std over seeds)', fontsize=9)
    sorted_ax.set_title(f'{result.level_set}: {PANEL_TITLES[panel]}, final return '
                        'of every run', fontsize=9)
    curves_ax.set_ylabel(f'mean {ylabel}')
    sorted_ax.set_ylabel(f'final {ylabel}')
    if not result.panels[panel]:
      for ax in (curves_ax, sorted_ax):
        ax.text(0.5, 0.5, 'no runs', ha='center', va='center',
                transform=ax.transAxes)
  fig.tight_layout()
  return save_figure(fig, stem)


def write_figure4(sweep_dir: str, out_dir: str,
                  level_sets: Sequence[str] | None = None,
                  log: Callable[[str], None] = print,
                  algorithms: Collection[str] = analysis.ALGORITHM_ORDER) -> dict:
  """Figure 4 per level set and the results table, from the runs in ``sweep_dir``.

  Draws the runs of the entries ``algorithms`` (by default the paper's seven;
  a variant such as ``kl_ent_2col_adaptive`` when named); runs of other
  entries are named in a log line and left out of every file.

  Returns ``dict(figures=[paths], table_csv, table_md, rows, notes)``. Raises
  ``errors.UsageError`` when no runs are found.
  """
  if not os.path.isdir(sweep_dir):
    raise errors.UsageError(f'--sweep_dir {sweep_dir} is not a directory')
  runs, notes = analysis.discover_runs(sweep_dir)
  others = [a for a in analysis.ENTRY_ORDER
            if a not in algorithms and any(r.algorithm == a for r in runs)]
  if others:
    log(f'not drawn: the runs of {", ".join(others)} under {sweep_dir} (name them '
        'among the algorithms to draw them)')
  runs = [r for r in runs if r.algorithm in algorithms]
  found = sorted({r.level_set for r in runs})
  wanted = list(level_sets) if level_sets else found
  for name in wanted:
    if name not in found:
      notes.append(f'{name}: no runs under {sweep_dir} (skipped)')
  wanted = [n for n in wanted if n in found]
  if not wanted:
    raise errors.UsageError(f'no runs (episodes.csv) of the deep algorithms found '
                            f'under {sweep_dir}')
  os.makedirs(out_dir, exist_ok=True)
  level_results, figures = [], []
  for name in wanted:
    result = analysis.analyse_level_set(runs, name)
    notes.extend(result.notes)
    level_results.append(result)
    figures += plot_level_set(result, os.path.join(out_dir, f'figure4_{name}'))
  rows = table_rows(level_results)
  table_csv = os.path.join(out_dir, f'{TABLE_STEM}.csv')
  table_md = os.path.join(out_dir, f'{TABLE_STEM}.md')
  write_table(rows, table_csv, table_md, notes)
  claims_md = os.path.join(out_dir, CLAIMS_FILE)
  with open(claims_md, 'w') as f:
    f.write(claims.claims_markdown(runs, level_results))
  for note in notes:
    log(f'note: {note}')
  for path in figures + [table_csv, table_md, claims_md]:
    log(f'wrote {path}')
  return dict(figures=figures, table_csv=table_csv, table_md=table_md,
              claims_md=claims_md, rows=rows, notes=notes, results=level_results)


def plot_transfer(curves: Mapping[str, analysis.CurveStats], title: str,
                  stem: str) -> list[str]:
  """Learning curves on a held-out task, one per condition (mean +- std)."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for k, (label, stats) in enumerate(curves.items()):
    color = plt.get_cmap('tab10')(k)
    ax.plot(stats.x, stats.mean, color=color,
            label=f'{label} (n={len(stats.finals)})')
    ax.fill_between(stats.x, stats.mean - stats.std, stats.mean + stats.std,
                    color=color, alpha=0.2, linewidth=0)
  ax.set_xlabel('environment frames on the held-out task')
  ax.set_ylabel('episode return')
  ax.set_title('\n'.join(textwrap.wrap(title, 85)), fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, stem)
