r"""Figure 4 and its table: ``python -m distral_tf.experiments.figure4``.

  python -m distral_tf.experiments.figure4 --sweep_dir=sweeps --out=figures

For every level set found under ``--sweep_dir`` (runs finished or not) writes
``figure4_<level_set>.png`` and ``.pdf`` with four panels: the learning curves
of the algorithms at their best setting by area under the curve (mean +- std
over seeds, averaged over tasks) and the final return of every run sorted in
decreasing order, first for the task policies pi_i, then for the distilled
policies pi_0 (A3C_multitask's shared network included). Also writes
``figure4_table.csv`` and ``figure4_table.md``: final return and AUC per
algorithm, policy and level set at the best setting. Navigation and lasertag
returns are divided per task by the best A3C score. See
``distral_tf.experiments.analysis`` for the exact conventions. Also writes
``figure4_claims.md``: the paper's claims checked with bootstrap intervals
(``distral_tf.experiments.claims``).

``--algorithms`` chooses the entries drawn: by default the paper's seven
algorithms; a variant is drawn beside them when named, e.g.
``--algorithms=a3c,a3c_multitask,a3c_2col,kl_ent_2col,kl_ent_2col_adaptive``.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from distral_tf import errors
from distral_tf.experiments import analysis
from distral_tf.experiments import panels
from distral_tf.experiments import schedule

_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None,
                                 'Root directory of the sweeps\' log directories.')
_OUT = flags.DEFINE_string('out', None, 'Directory for the figures and the table.')
_LEVEL_SETS = flags.DEFINE_list('level_sets', [],
                                'Level sets to draw; default: every one found.')
_ALGORITHMS = flags.DEFINE_list(
    'algorithms', list(analysis.ALGORITHM_ORDER),
    'Deep algorithms to draw (default: the paper\'s seven); also '
    f'{", ".join(v.name for v in analysis.VARIANTS)}.')

flags.mark_flags_as_required(['sweep_dir', 'out'])


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}; flags look '
                            'like --name=value')
  analysis.check_entries(_ALGORITHMS.value, 'algorithms')
  panels.write_figure4(_SWEEP_DIR.value, _OUT.value, _LEVEL_SETS.value,
                       algorithms=_ALGORITHMS.value)
  return 0


if __name__ == '__main__':
  schedule.run_command(main)
