"""The learning-curve figure every run writes into its log directory."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from distral_tf import results

LEARNING_CURVES_FILE = 'learning_curves.png'


def plot_run(logdir: str, rows: Sequence[dict], budget: int, title: str) -> str:
  """Draws one curve per task (solid: pi_i, dashed: pi_0) and returns the PNG path."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  tasks = sorted({r['task'] for r in rows})
  cmap = plt.get_cmap('tab10')
  for k, task in enumerate(tasks):
    for policy, style in (('task', '-'), ('distilled', '--')):
      trows = results.select(rows, task=task, policy=policy)
      if not trows:
        continue
      x, y = results.learning_curve(trows, budget)
      label = task if policy == 'task' else f'{task} (pi_0)'
      ax.plot(x, y, style, color=cmap(k % 10), label=label)
  ax.set_xlabel('environment frames per task')
  ax.set_ylabel('episode return')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if tasks:
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  path = os.path.join(logdir, LEARNING_CURVES_FILE)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
