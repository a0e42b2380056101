"""The reproduction's presets: per level set, the sweep of a ``reproduce`` run.

A preset is a tuple of ``SweepPlan``: a level set's algorithms x grid of entropy
costs and learning rates x seeds, at a budget. ``PARTS`` names the presets drawn
apart from ``cpu``'s results, ``TRANSFERS`` each preset's held-out-task runs.
"""

from __future__ import annotations

import dataclasses

from distral_tf.experiments import analysis
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
  # Further trainer flags of every run (``--flag=value``).
  trainer_flags: tuple[str, ...] = ()

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
            f'--workers_per_task={self.workers_per_task}', *self.trainer_flags)

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
# Figure 4's mazes panel at CPU scale (docs/reproduction.md, "DeepMind Lab"):
# the first 4 mazes tasks, the five algorithms of the paper's DeepMind Lab
# figure, 2 seeds, at the level set's defaults (entropy cost 0.01, learning
# rate 5e-4; 8 environments on 2 cores: 2 workers per task), about 8 hours in
# all. The rate anneals over 12 million frames per task whatever the budget:
# annealed to 0 over a budget of 3 million, A3C did not learn
# nav_maze_static_01 within it, and with the schedule of a longer run it did
# (docs/dmlab.md, "A learning check").
# Budget: at the plan's settings on 2 cores, 150-second runs trained at 2,822
# (a3c), 3,263 (a3c_multitask) and 2,157 (kl_ent_2col; the other 2col
# algorithms taken as the same) steady frames/s, so the 10 runs cost
# 8 x B x (1/2,822 + 1/3,263 + 3/2,157) = 0.0164 B seconds for B frames per
# task: B = 1,750,000 is 8.0 hours (41 to 54 minutes a run, 36 for
# a3c_multitask). That is short of where A3C learned nav_maze_static_01 in the
# learning check (2.9-3.4 million frames, after 2.5 million at the random
# return): the 8 hours allow the panel before A3C takes off, not after.
# Beside the paper's five, kl_ent_2col_adaptive (--adaptive_costs, beyond the
# paper): 2 runs more, about 2 hours.
DMLAB_BUDGET = 1_750_000
DMLAB_ALGORITHMS = ('a3c', 'a3c_multitask', 'a3c_2col', 'kl_2col', 'kl_ent_2col',
                    'kl_ent_2col_adaptive')
DMLAB_LR_ANNEAL_FRAMES = 12_000_000
_DMLAB_PLAN = SweepPlan('mazes', (0.01,), (5e-4,), seeds=2,
                        env_steps_per_task=DMLAB_BUDGET, num_tasks=4, workers_per_task=2,
                        algorithms=DMLAB_ALGORITHMS,
                        trainer_flags=(f'--lr_anneal_frames={DMLAB_LR_ANNEAL_FRAMES}',))
PRESETS['dmlab_cpu'] = (_DMLAB_PLAN,)
# Minutes, on a real DeepMind Lab: the same plan at a budget of 4,000 frames
# per task, past the end of a maze's first episode (3,600 frames).
PRESETS['dmlab_smoke'] = (dataclasses.replace(
    _DMLAB_PLAN, seeds=1, num_tasks=2, workers_per_task=1, env_steps_per_task=4_000,
    algorithms=('a3c', 'kl_ent_2col')),)
# Presets drawn apart from the cpu preset's results: their figures, table,
# claims and results.md go to <--out>/<part>, and --results_doc's block is the
# one between the lines <!-- results:<part>:begin --> and <!-- results:<part>:end -->.
# Their runs share --sweep_dir and the records with the cpu preset.
PARTS = {'adaptive': 'adaptive', 'adaptive_smoke': 'adaptive_smoke', 'dmlab_cpu': 'dmlab',
         'dmlab_smoke': 'dmlab_smoke'}
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
    'dmlab_cpu': (),
    'dmlab_smoke': (),
}
