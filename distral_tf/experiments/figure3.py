r"""Figure 3: Distral (soft Q-learning + distillation) against separate soft Q-learners.

  python -m distral_tf.experiments.figure3 --logdir=runs/figure3 \
      [--seeds=5] [--num_tasks=8] [--env_steps_per_task=20000]

Trains ``soft_q`` and ``distral_soft_q`` with seeds 0 .. seeds-1 on the
``two_rooms`` tasks through the trainer of ``distral_tf.tabular.train`` (one log
directory per run: ``<logdir>/<algorithm>/seed<k>``; finished runs are reused),
then draws ``<logdir>/figure3.png`` and ``.pdf``:

* left: the acting policies' learning curves, averaged over tasks and seeds,
  with +-1 standard deviation over seeds;
* right: the distilled policy pi_0 of the first Distral run on the map: the most
  likely action in each cell as an arrow (a dot for "stay"), its probability as
  colour; on top averaged over previous action and reward (weighted by visits),
  below given that the previous action was "right".

It prints and writes ``<logdir>/figure3.json``: each agent's area under the
curve (mean return over training; also normalised between the uniform random
policy's return, 0, and the optimal return, 1), the Distral / soft_q ratios,
and the environment steps per task at which the averaged curve first reaches
``--figure3_near_optimal`` (default 0.9) times the mean optimal return.

Any other flag of ``distral_tf.launch`` (``--entropy_cost``, ``--tabular_*``,
``--two_rooms_*``, ...) is passed on to every run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

import numpy as np
from absl import app
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf import results
from distral_tf.envs import two_rooms
from distral_tf.tabular import train

import matplotlib  # pylint: disable=g-bad-import-order
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,g-bad-import-order

FLAGS = flags.FLAGS
AGENTS = ('soft_q', 'distral_soft_q')
LABELS = {'soft_q': 'soft Q-learning per task', 'distral_soft_q': 'Distral'}
COLOURS = {'soft_q': 'tab:blue', 'distral_soft_q': 'tab:red'}
FIGURE_FILE = 'figure3'
ARROWS = {1: (0, 1), 2: (0, -1), 3: (-1, 0), 4: (1, 0)}  # (dx, dy) on screen.


def define_flags() -> None:
  """Flags of this program only (defined when it runs, so importing it defines none)."""
  flags.DEFINE_integer('seeds', 5, 'Seeds 0 .. seeds-1 of each agent.')
  flags.DEFINE_float('figure3_near_optimal', 0.9,
                     'Fraction of the mean optimal return that counts as near-optimal.')


def run_dir(logdir: str, algorithm: str, seed: int) -> str:
  return os.path.join(logdir, algorithm, f'seed{seed}')


def seed_curves(logdirs: Sequence[str], budget: int) -> np.ndarray:
  """``[seeds, bins]`` learning curves of the task policies, each averaged over tasks."""
  curves = []
  for logdir in logdirs:
    rows = results.select(results.read_episodes(logdir), policy='task')
    tasks = sorted({r['task'] for r in rows})
    per_task = [results.learning_curve(results.select(rows, task=t), budget)[1]
                for t in tasks]
    curves.append(np.mean(per_task, axis=0))
  return np.array(curves)


def first_reach(ends: np.ndarray, curve: np.ndarray, threshold: float) -> float:
  """First bin end where ``curve`` >= ``threshold`` (inf if never)."""
  hit = np.flatnonzero(curve >= threshold)
  return float(ends[hit[0]]) if hit.size else float('inf')


def _finite_or_none(x: float) -> float | None:
  return float(x) if np.isfinite(x) else None


def analyse(logdir: str, seeds: int, near_optimal: float) -> dict:
  """Figure 3's numbers from the runs under ``logdir``."""
  out: dict = {'agents': {}}
  summaries = {a: [results_summary(run_dir(logdir, a, s)) for s in range(seeds)]
               for a in AGENTS}
  budget = summaries[AGENTS[0]][0]['budget_env_steps_per_task']
  optimal = float(np.mean([s['mean_optimal_return'] for s in summaries[AGENTS[0]]]))
  random_return = float(np.mean([s['mean_random_return'] for s in summaries[AGENTS[0]]]))
  threshold = near_optimal * optimal
  ends = np.linspace(0, budget, results.CURVE_BINS + 1)[1:]
  for agent in AGENTS:
    curves = seed_curves([run_dir(logdir, agent, s) for s in range(seeds)], budget)
    auc = curves.mean(axis=1)
    norm = (auc - random_return) / (optimal - random_return)
    per_seed = [first_reach(ends, c, threshold) for c in curves]
    out['agents'][agent] = dict(
        auc=float(auc.mean()), auc_std=float(auc.std()), auc_per_seed=auc.tolist(),
        normalised_auc=float(norm.mean()), normalised_auc_std=float(norm.std()),
        steps_to_near_optimal=_finite_or_none(
            first_reach(ends, curves.mean(axis=0), threshold)),
        steps_to_near_optimal_per_seed=[_finite_or_none(x) for x in per_seed],
        final_return=float(np.mean([s['task']['mean_final_return']
                                    for s in summaries[agent]])),
        curve_mean=curves.mean(axis=0).tolist(), curve_std=curves.std(axis=0).tolist(),
        wall_time_s=float(np.sum([s['wall_time_s'] for s in summaries[agent]])),
        hyperparameters=summaries[agent][0]['hyperparameters'])
  a, b = out['agents']['distral_soft_q'], out['agents']['soft_q']
  out.update(
      budget_env_steps_per_task=int(budget), seeds=seeds,
      num_tasks=len(summaries[AGENTS[0]][0]['optimal_return']),
      curve_bin_ends=ends.tolist(), mean_optimal_return=optimal,
      mean_random_return=random_return, near_optimal_fraction=near_optimal,
      near_optimal_threshold=threshold,
      auc_ratio=a['auc'] / b['auc'] if b['auc'] > 0 and a['auc'] > 0 else None,
      normalised_auc_ratio=a['normalised_auc'] / b['normalised_auc'],
      steps_ratio=(b['steps_to_near_optimal'] / a['steps_to_near_optimal']
                   if a['steps_to_near_optimal'] and b['steps_to_near_optimal']
                   else None))
  return out


def results_summary(logdir: str) -> dict:
  with open(os.path.join(logdir, results.SUMMARY_FILE)) as f:
    return json.load(f)


def marginal_pi0(policies: dict, code: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """pi_0 per cell, ``[cells, A]``, and whether the cells were visited, ``[cells]``.

  Given ``code`` (previous action and reward) or, if None, averaged over codes
  weighted by the tasks' discounted visit frequencies.
  """
  pi0 = policies['pi0'].reshape(-1, two_rooms.NUM_CODES, two_rooms.NUM_ACTIONS)
  w = policies['visits'].sum(axis=0).reshape(-1, two_rooms.NUM_CODES)
  if code is not None:
    return pi0[:, code], w[:, code] > 0
  visited = w.sum(axis=1) > 0
  w = np.where(visited[:, None], w, 1.0)
  return np.einsum('ck,cka->ca', w, pi0) / w.sum(axis=1)[:, None], visited


def draw_policy(ax, layout: two_rooms.Layout, probs: np.ndarray,
                visited: np.ndarray, goals, title: str):
  """Per visited cell the most likely action (arrow; dot: stay) coloured by its probability.

  Walls are black, cells never visited grey, goals stars.
  """
  h, w = layout.walls.shape
  image = np.full((h, w), np.nan)
  best = probs.argmax(axis=1)
  rows, cols = layout.cells[:, 0], layout.cells[:, 1]
  image[rows, cols] = np.where(visited, probs.max(axis=1), np.nan)
  ax.imshow(np.where(layout.walls, 0.0, 0.6), cmap='gray', vmin=0, vmax=1)
  im = ax.imshow(image, cmap='viridis', vmin=0.2, vmax=1.0)
  for c in np.flatnonzero(visited):
    row, col = rows[c], cols[c]
    if best[c] == 0:
      ax.plot(col, row, 'o', color='white', ms=3)
    else:
      dx, dy = ARROWS[int(best[c])]
      ax.arrow(col - 0.3 * dx, row + 0.3 * dy, 0.55 * dx, -0.55 * dy, color='white',
               width=0.05, head_width=0.25, head_length=0.18, length_includes_head=True)
  for g in goals:
    ax.plot(cols[g], rows[g], '*', color='tab:orange', ms=8, mec='black', mew=0.5,
            alpha=0.8)
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  return im


def draw_figure(logdir: str, numbers: dict) -> list[str]:
  """Writes ``figure3.png`` and ``figure3.pdf`` into ``logdir``; returns their paths."""
  fig = plt.figure(figsize=(13, 5.2), layout='constrained')
  grid = fig.add_gridspec(2, 2, width_ratios=[1.0, 1.25])
  ax = fig.add_subplot(grid[:, 0])
  ends = np.array(numbers['curve_bin_ends'])
  for agent in AGENTS:
    n = numbers['agents'][agent]
    mean, std = np.array(n['curve_mean']), np.array(n['curve_std'])
    h = n['hyperparameters']
    label = f'{LABELS[agent]} (alpha={h["alpha"]:g}, 1/beta={h["entropy_cost"]:g})'
    ax.plot(ends, mean, color=COLOURS[agent], label=label)
    ax.fill_between(ends, mean - std, mean + std, color=COLOURS[agent], alpha=0.25)
  ax.axhline(numbers['mean_optimal_return'], color='grey', ls=':', label='optimal')
  ax.axhline(numbers['near_optimal_threshold'], color='grey', ls='--', lw=0.8,
             label=f'{numbers["near_optimal_fraction"]:.0%} of optimal')
  ax.set_xlabel('environment steps per task')
  ax.set_ylabel('episode return (mean over tasks and seeds)')
  ax.set_title(f'{numbers["num_tasks"]} tasks, {numbers["seeds"]} seeds '
               '(shade: +-1 std over seeds)', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  policies = train.load_policies(run_dir(logdir, 'distral_soft_q', 0))
  layout = two_rooms.make_layout(int(policies['room_size']),
                                 int(policies['corridor_length']))
  goals = policies['goal_cells']
  right_code = 1 + 2 * 4  # Previous action "right", no bump.
  im = draw_policy(fig.add_subplot(grid[0, 1]), layout, *marginal_pi0(policies),
                   goals, 'distilled policy pi_0 (Distral, seed 0), averaged over '
                   'previous action and reward')
  draw_policy(fig.add_subplot(grid[1, 1]), layout,
              *marginal_pi0(policies, right_code), goals,
              'pi_0 given previous action "right" (grey: never visited)')
  fig.colorbar(im, ax=fig.axes[1:], fraction=0.04, label='probability of the arrow')
  paths = [os.path.join(logdir, FIGURE_FILE + ext) for ext in ('.png', '.pdf')]
  for path in paths:
    fig.savefig(path, dpi=120)
  plt.close(fig)
  return paths


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    print(f'error: unexpected arguments {" ".join(argv[1:])}', file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  try:
    if not FLAGS.logdir:
      raise errors.UsageError('--logdir is required (where the runs and figure go)')
    if FLAGS.seeds < 1:
      raise errors.UsageError(f'--seeds must be >= 1, got {FLAGS.seeds}')
    if not 0 < FLAGS.figure3_near_optimal <= 1:
      raise errors.UsageError('--figure3_near_optimal must be in (0, 1], got '
                              f'{FLAGS.figure3_near_optimal}')
    logdir = FLAGS.logdir
    start = time.time()
    FLAGS.level_set = 'two_rooms'
    for agent in AGENTS:
      for seed in range(FLAGS.seeds):
        FLAGS.algorithm, FLAGS.seed = agent, seed
        FLAGS.logdir = run_dir(logdir, agent, seed)
        cli.run(FLAGS)
    FLAGS.logdir = logdir
  except errors.UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  numbers = analyse(logdir, FLAGS.seeds, FLAGS.figure3_near_optimal)
  numbers['command'] = ' '.join(['python -m distral_tf.experiments.figure3'] + argv_flags())
  numbers['total_wall_time_s'] = time.time() - start
  results.write_json(os.path.join(logdir, 'figure3.json'), numbers)
  paths = draw_figure(logdir, numbers)
  print(format_numbers(numbers))
  print('wrote ' + ', '.join(paths + [os.path.join(logdir, 'figure3.json')]))


def argv_flags() -> list[str]:
  return [a for a in sys.argv[1:] if a.startswith('--')]


def format_numbers(numbers: dict) -> str:
  lines = [f'{"agent":<16} {"AUC":>14} {"normalised AUC":>16} {"final":>7} '
           f'{"steps to " + format(numbers["near_optimal_fraction"], ".0%") + " opt":>16}']
  for agent in AGENTS:
    n = numbers['agents'][agent]
    lines.append(f'{agent:<16} {n["auc"]:>7.3f} +-{n["auc_std"]:.3f} '
                 f'{n["normalised_auc"]:>8.3f} +-{n["normalised_auc_std"]:.3f} '
                 f'{n["final_return"]:>7.3f} '
                 f'{n["steps_to_near_optimal"] or float("inf"):>16.0f}')
  ratio = numbers['auc_ratio']
  lines.append(f'AUC ratio Distral/soft_q: {ratio:.2f}' if ratio else
               'AUC ratio: undefined (an AUC is <= 0)')
  steps = numbers['steps_ratio']
  lines.append(f'normalised AUC ratio: {numbers["normalised_auc_ratio"]:.2f}; '
               'steps to near-optimal, soft_q / Distral: '
               + (f'{steps:.2f}' if steps else 'undefined (one never gets there)'))
  lines.append(f'optimal return {numbers["mean_optimal_return"]:.3f}, uniform random '
               f'{numbers["mean_random_return"]:.3f}, near-optimal threshold '
               f'{numbers["near_optimal_threshold"]:.3f}')
  return '\n'.join(lines)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
