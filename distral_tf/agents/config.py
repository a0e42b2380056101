"""Configuration of the deep trainers (local and cluster), and their flags.

``DeepConfig`` is one run's configuration, frozen: the entry points (``cli``,
``bench``) build it once with ``from_flags``, which merges the level set's
defaults (``LEVEL_SET_DEFAULTS``, ``A3C_FAMILY_DEFAULTS``, ``COMMON_DEFAULTS``)
into the flags' values without changing the flags; everything below them
(``builders``, the trainers, ``learner.LearnerConfig``'s defaults) takes it.
``config.json`` is written from it (``config_record``).

Defaults follow the paper's A3C set-up (appendix B.2): unrolls of 20 steps,
RMSProp (decay 0.99) shared by all workers, gradient norm clipped at 40,
learning rate annealed linearly to 0 over the run; RMSProp's epsilon is 1e-6,
not A3C's 0.1, because it sits inside the square root at this loss scale
(``learner``'s docstring). This module imports no TensorFlow, so the command
line answers quickly.
"""

from __future__ import annotations

import dataclasses
import os
import types
from typing import Any, Mapping, Sequence

from absl import flags

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.agents import algorithms
from distral_tf.agents import config_limits


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeepConfig:
  """Everything a deep trainer (local or cluster) needs: one run, read once.

  ``from_flags`` builds it from the command line, the level set's defaults
  merged in; the library below the entry points takes only this. The fields
  without a default are ``cli``'s common flags (their defaults live there and
  in ``COMMON_DEFAULTS``); the others' defaults are the deep trainers' flags'.
  """
  # The common flags of ``cli``, the level set's defaults merged in.
  level_set: str
  algorithm: str
  seed: int
  num_tasks: int | None            # None: the level set's own number
  env_steps_per_task: int
  logdir: str
  learning_rate: float
  discount: float
  alpha: float | None              # None: the algorithm's own
  entropy_cost: float
  # The deep trainers' own flags.
  workers_per_task: int = 4
  actor_threads: int = 1
  learner_threads: int = 1
  unroll_length: int = 20
  env_processes: bool = True
  env_niceness: int = 10           # added to the environment processes' niceness
  tf_threads: int = 0              # TensorFlow's intra-op threads (inter-op: max(N, 2)); 0: its defaults
  rmsprop_decay: float = 0.99
  rmsprop_epsilon: float = 1e-6
  grad_clip_norm: float = 40.0
  value_cost: float = 0.5
  value_l2_cost: float = 0.01
  regulariser_gradient: str = 'expected'
  off_policy_correction: str = 'vtrace'
  max_policy_lag: int = 0          # drop unrolls older than this many updates; 0: keep all
  lr_schedule: str = 'linear'
  lr_anneal_frames: int = 0        # frames per task over which 'linear' anneals to 0; 0: the budget
  hidden_size: int = 256           # fc and LSTM width of every column (paper: 256)
  lstm_skip: bool = True           # read-outs see LSTM output + fc output (paper: no)
  eval_interval: int = 0           # frames per task between pi_0 evaluations; 0: 20 per run
  eval_episodes: int = 1
  eval_share: float = 0.05         # evaluation frames per training frame while training runs
  checkpoint_secs: float = 120.0
  log_interval_secs: float = 10.0
  max_seconds: float = 0.0         # stop (with a checkpoint) after this long; 0: no limit
  tasks: tuple[int, ...] = ()      # indices of the level set's tasks to train on; () = all
  prior_logdir: str = ''
  cluster: str = ''
  # Adaptive costs (docs/agents.md, "Adaptive costs"): a cost tau_i = 1/beta_i per
  # task, starting at --entropy_cost, moved after every gradient step by the dual
  # step of the constraint H(pi_i) - alpha/(1-alpha) KL(pi_i||pi_0) >= kappa_k log A,
  # kappa_k annealed from 1 to kappa over the first half of the budget.
  adaptive_costs: bool = False
  target_entropy: float = 0.25     # kappa, a fraction of log A (ADAPTIVE_COSTS_DEFAULTS)
  cost_learning_rate: float = 0.1  # eta of the dual step on log tau_i, per gradient step
  # What ``config.json`` records: every flag's value (``config_record``), and
  # those that make up the run, compared when it resumes (``run_dir``).
  config_record: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)
  run_flags: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)


def plan_fields() -> list[str]:
  """``DeepConfig``'s fields that hold values (not its records), in order."""
  return [f.name for f in dataclasses.fields(DeepConfig)
          if f.name not in ('config_record', 'run_flags')]


# workers_per_task of a level set whose environments are heavy: as many as the
# machine holds (``config_limits.machine_workers_per_task``), or the paper's 32
# with --cluster.
FIT_MACHINE = 'fit_machine'
PAPER_WORKERS_PER_TASK = 32
# Defaults of the deep trainers that depend on the level set. A flag given on the
# command line always wins. The common flags (cli.py) default to None; they take
# COMMON_DEFAULTS, then the level set's entry. The paper's settings (discount
# 0.99, 4e8/5e8 frames per task) are the DeepMind Lab defaults; the small
# two-room world learns faster with the ones below.
COMMON_DEFAULTS = dict(learning_rate=5e-4, entropy_cost=0.01, discount=0.99)
LEVEL_SET_DEFAULTS = {
    # Measured on the grid world (docs/agents.md, "The grid world"): a narrow
    # column (64) learns as well as the paper's 256 at a tenth of the cost; 16
    # environments per task stepped in one numpy batch; a constant rate of 3e-3
    # escapes the "stand still" trap that 1e-3 falls into; the common discount
    # 0.99 (KL+ent_2col solved 3 of 3 seeds with it, 2 of 3 with 0.95).
    'two_rooms': dict(learning_rate=3e-3, entropy_cost=0.01,
                      env_steps_per_task=60_000, env_processes=False, hidden_size=64,
                      workers_per_task=16, lr_schedule='constant'),
    # The environments keep the cores busy: one TensorFlow thread per op (a
    # second one on these small ops saves little time and takes CPU from them).
    # Measured on empty_6x6 (docs/agents.md, "The skip connection"): a constant
    # rate of 1e-3 and unrolls of 5 steps learned in 40,000 frames what the
    # annealed 5e-4 and 20 steps needed 100,000 for. Entropy cost 1e-3 for the
    # Distral algorithms, whose entropy and KL terms are rewards (eq. 9): at 0.01
    # KL+ent_2col on 4 tasks kept its task policies uniform (docs/agents.md,
    # "The entropy cost of the Distral algorithms on minigrid"); the A3C
    # family's bonus acts outside the returns and keeps 0.01. A step costs
    # ~0.13 ms of CPU, less than a round trip to a process: the environments are
    # stepped in the actor thread (1.4-1.5x the training frames/s of one process
    # each, docs/agents.md, "Sharing the cores with the environments").
    'minigrid': dict(env_steps_per_task=2_000_000, workers_per_task=8, tf_threads=1,
                     learning_rate=1e-3, lr_schedule='constant', unroll_length=5,
                     rmsprop_epsilon=1e-8, entropy_cost=1e-3, env_processes=False),
    # Rendering dominates the cores: one TensorFlow thread per op, and one actor
    # thread (batches of 32 cost less per step than two threads' batches of 16).
    'miniworld': dict(env_steps_per_task=2_000_000, workers_per_task=8,
                      tf_threads=1),
    # DeepMind Lab: the paper's 32 workers per task belong on a cluster (with
    # --cluster they are the default); on one machine as many as fit it. One
    # TensorFlow thread per op: on 2 cores a second one spins beside the
    # renderers and costs them more than it saves (docs/dmlab.md, "Where the CPU
    # goes": 1,285 -> 1,579 training frames/s on mazes, 1,072 -> 1,265 on lasertag).
    'mazes': dict(env_steps_per_task=400_000_000, workers_per_task=FIT_MACHINE,
                  tf_threads=1),
    'navigation': dict(env_steps_per_task=400_000_000, workers_per_task=FIT_MACHINE,
                       tf_threads=1),
    'lasertag': dict(env_steps_per_task=500_000_000, workers_per_task=FIT_MACHINE,
                     tf_threads=1),
}

# The defaults of ``DeepConfig``, by name: those of the deep trainers' flags and
# of ``learner.LearnerConfig``.
DEFAULTS = types.SimpleNamespace(**{
    f.name: f.default for f in dataclasses.fields(DeepConfig)
    if f.default is not dataclasses.MISSING})
flags.DEFINE_integer('workers_per_task', DEFAULTS.workers_per_task,
                     'Environments (workers) per task, each in its own process '
                     '(paper: 32).')
flags.DEFINE_integer('actor_threads', DEFAULTS.actor_threads,
                     'Threads stepping environments; each acts for its share of every '
                     'task\'s workers with one batched inference per step.')
flags.DEFINE_integer('learner_threads', DEFAULTS.learner_threads,
                     'Threads applying asynchronous gradient steps (one per unroll) to '
                     'the shared parameters and RMSProp statistics.')
flags.DEFINE_integer('unroll_length', DEFAULTS.unroll_length, 'Steps per unroll (paper: 20).')
flags.DEFINE_boolean('env_processes', DEFAULTS.env_processes,
                     'Run every environment in its own process (required for DeepMind '
                     'Lab); false steps them in the actor threads.')
flags.DEFINE_integer('env_niceness', DEFAULTS.env_niceness,
                     'Niceness (0-19) added to the environment processes, so that the '
                     'learner and the batched inference, which every environment waits '
                     'on, come first on cores the environments keep busy.')
flags.DEFINE_integer('tf_threads', DEFAULTS.tf_threads,
                     'Threads per op of the trainer\'s TensorFlow (intra-op; ops of '
                     'the learner and the actors run side by side on max(N, 2) inter-op '
                     'threads); 0: TensorFlow\'s defaults (one per core). Fewer leave the '
                     'cores to the environment processes.')
flags.DEFINE_float('rmsprop_decay', DEFAULTS.rmsprop_decay, 'RMSProp decay.')
flags.DEFINE_float('rmsprop_epsilon', DEFAULTS.rmsprop_epsilon, 'RMSProp epsilon.')
flags.DEFINE_float('grad_clip_norm', DEFAULTS.grad_clip_norm, 'Global gradient norm clip.')
flags.DEFINE_float('value_cost', DEFAULTS.value_cost, 'Weight of the value loss.')
flags.DEFINE_float('value_l2_cost', DEFAULTS.value_l2_cost,
                   'Weight of the L2 term pulling task values toward the shared value.')
flags.DEFINE_enum('regulariser_gradient', DEFAULTS.regulariser_gradient,
                  ['expected', 'sampled'],
                  'How the current step\'s KL/entropy regulariser enters the policy '
                  'gradient of the Distral algorithms: "sampled" is eq. (9) as written; '
                  '"expected" replaces it by its expectation over the action (same '
                  'expected gradient, lower variance).')
flags.DEFINE_enum('off_policy_correction', DEFAULTS.off_policy_correction, ['vtrace', 'none'],
                  'Correction of the returns for the policy lag of asynchronous '
                  'updates: "vtrace" (IMPALA\'s V-trace, from the behaviour policy '
                  'each unroll records) or "none" (n-step returns, as in A3C).')
flags.DEFINE_integer('max_policy_lag', DEFAULTS.max_policy_lag,
                     'Drop an unroll whose policy lag (updates applied since its first '
                     'action) exceeds this; 0: keep every unroll.')
flags.DEFINE_enum('lr_schedule', DEFAULTS.lr_schedule, ['linear', 'constant'],
                  'Learning rate: "linear" anneals it to 0 over --env_steps_per_task '
                  '(paper), "constant" keeps it.')
flags.DEFINE_integer('lr_anneal_frames', DEFAULTS.lr_anneal_frames,
                     'Frames per task over which the "linear" schedule anneals the rate '
                     'to 0 (the rate then ends the run at 1 - budget/this of its start); '
                     '0: --env_steps_per_task. A short run with a long run\'s schedule.',
                     lower_bound=0)
flags.DEFINE_integer('hidden_size', DEFAULTS.hidden_size,
                     'Width of the fc layer and LSTM of every column (paper: 256).')
flags.DEFINE_boolean('lstm_skip', DEFAULTS.lstm_skip,
                     'Policy and value read-outs see the LSTM\'s output plus the fc '
                     'layer\'s (a residual connection); --nolstm_skip is the paper\'s '
                     'column exactly.')
flags.DEFINE_integer('eval_interval', DEFAULTS.eval_interval,
                     'Frames per task between evaluations of pi_0 on every task; '
                     '0: 20 evaluations per run.')
flags.DEFINE_integer('eval_episodes', DEFAULTS.eval_episodes,
                     'Episodes per task and evaluation of pi_0.')
flags.DEFINE_float('eval_share', DEFAULTS.eval_share,
                   'Evaluations of pi_0 step at most this share of the training frames '
                   'while training runs, and the last one (one episode per task) at '
                   'most this share of all the run\'s training frames; 0: never.')
flags.DEFINE_float('checkpoint_secs', DEFAULTS.checkpoint_secs,
                   'Seconds between checkpoints (also saved at the end and on Ctrl-C).')
flags.DEFINE_float('log_interval_secs', DEFAULTS.log_interval_secs,
                   'Seconds between progress lines and TensorBoard summaries.')
flags.DEFINE_float('max_seconds', DEFAULTS.max_seconds,
                   'Stop after this many seconds of training, saving a checkpoint '
                   '(rerun to resume); 0: no limit.')
flags.DEFINE_list('tasks', [], 'Indices of the level set\'s tasks to train on; '
                  'default all.')
flags.DEFINE_string('prior_logdir', '',
                    'Log directory of a finished run whose pi_0 (distilled network, or '
                    'shared column for 2col) initialises this run\'s and stays fixed.')
flags.DEFINE_boolean('adaptive_costs', DEFAULTS.adaptive_costs,
                     'Distral algorithms with an entropy term (alpha < 1): give every task '
                     'its own cost 1/beta (starting at --entropy_cost), the Lagrange '
                     'multiplier of a lower bound on its policy\'s entropy less '
                     'alpha/(1-alpha) times its KL to pi_0 (--target_entropy), tuned '
                     'after every gradient step (docs/agents.md, "Adaptive costs").')
flags.DEFINE_float('target_entropy', DEFAULTS.target_entropy,
                   'With --adaptive_costs: the bound, as a fraction in (0, 1) of the '
                   'largest entropy log(number of actions), that the entropy of each '
                   'task policy less alpha/(1-alpha) times its KL to pi_0 is held to '
                   '(reached from 1 by a linear anneal over the first half of the budget; '
                   'default the level set\'s: 0.6 on two_rooms, 0.25 elsewhere).')
flags.DEFINE_float('cost_learning_rate', DEFAULTS.cost_learning_rate,
                   'With --adaptive_costs: the step size of log(1/beta) per gradient '
                   'step and unit of constraint violation (nats per step) where the cost '
                   'falls; it rises at a tenth of it.')
flags.DEFINE_string('cluster', '',
                    'Cluster mode: "local:ps=1,workers=2" starts a loopback cluster; '
                    '"tf_config" takes the roles from TF_CONFIG.')


def parse_tasks(values: Sequence[str]) -> tuple[int, ...]:
  try:
    tasks = tuple(int(v) for v in values)
  except ValueError:
    raise errors.UsageError(
        f'--tasks takes comma-separated task indices, got {",".join(values)}') from None
  if len(set(tasks)) != len(tasks) or any(t < 0 for t in tasks):
    raise errors.UsageError(f'--tasks must be distinct indices >= 0, got {tasks}')
  return tasks


# Defaults of the A3C family (raw rewards plus an entropy bonus) that differ from
# its level set's: the paper picks every algorithm's own best setting. On the grid
# world A3C needs a larger rate and a higher temperature to find the goals before
# it learns to avoid the corridor (one task alone: 12 of 12 runs reached them
# with these, 1 of 3 with entropy cost 0.01); on minigrid its entropy bonus,
# outside the returns, keeps the common 0.01 (docs/agents.md).
A3C_FAMILY_DEFAULTS = {
    'two_rooms': dict(learning_rate=1e-2, entropy_cost=0.05),
    'minigrid': dict(entropy_cost=0.01),
}


# With --adaptive_costs only (a run without the option keeps the common value,
# so its config is that of runs made before): on two_rooms a bound of 0.6 log A
# (docs/reproduction.md, "The default run with and without the option"): at
# 0.25 the default run's pi_0 ended lower than with the fixed cost, and 4 of the
# grid's failures were plateaus; on minigrid 0.6 did worse than 0.25.
ADAPTIVE_COSTS_DEFAULTS = {
    'two_rooms': dict(target_entropy=0.6),
}


def level_set_defaults(fv: flags.FlagValues) -> tuple[dict[str, Any], list[str]]:
  """The values flags not set on the command line take from the level set.

  Common flags still unset (None) then take ``COMMON_DEFAULTS``. Leaves
  ``fv`` as it is. Returns those values by flag name, and notes on the
  defaults that were chosen for this machine, for the first lines of a run.
  """
  notes = []
  defaults = dict(LEVEL_SET_DEFAULTS[fv.level_set])
  if fv.algorithm in algorithms.ALGORITHMS and algorithms.ALGORITHMS[fv.algorithm].entropy_bonus:
    defaults.update(A3C_FAMILY_DEFAULTS.get(fv.level_set, {}))
  if fv.adaptive_costs:
    defaults.update(ADAPTIVE_COSTS_DEFAULTS.get(fv.level_set, {}))
  values = {}
  for name, value in defaults.items():
    if fv[name].present:
      continue
    if value == FIT_MACHINE:
      if fv.cluster:
        value = PAPER_WORKERS_PER_TASK
      else:
        from distral_tf.dmlab import games  # pylint: disable=g-import-not-at-top
        num_tasks = fv.num_tasks or len(games.LEVELS[fv.level_set])
        value = config_limits.machine_workers_per_task(num_tasks)
        notes.append(f'--workers_per_task={value}: chosen to fit this machine '
                     f'({os.cpu_count()} cores; the paper used {PAPER_WORKERS_PER_TASK} '
                     f'per task on a cluster: give --workers_per_task or --cluster)')
    values[name] = value
  for name, value in COMMON_DEFAULTS.items():
    if values.get(name, fv[name].value) is None:
      values[name] = value
  return values, notes


def from_flags(fv: flags.FlagValues) -> tuple[DeepConfig, list[str]]:
  """The deep trainers' configuration: the flags, the level set's defaults merged.

  Leaves ``fv`` as it is. Checks the values (``config_limits.check``: raises
  ``errors.UsageError``)
  and needs no TensorFlow: ``cli`` calls it before a trainer loads. Returns
  the configuration and ``level_set_defaults``' notes.
  """
  defaults, notes = level_set_defaults(fv)
  record = dict(fv.flag_values_dict(), **defaults)
  config_limits.check(record)
  fields = {f.name for f in dataclasses.fields(DeepConfig)} - {
      'tasks', 'config_record', 'run_flags'}
  config = DeepConfig(
      **{name: record[name] for name in fields}, tasks=parse_tasks(record['tasks']),
      config_record=types.MappingProxyType(record),
      run_flags=types.MappingProxyType(
          run_dir.run_flags(fv.flags_by_module_dict(), record)))
  return config, notes
