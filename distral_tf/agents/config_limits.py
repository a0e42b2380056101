"""What the deep trainers' flag values may be: their ranges, and what the machine holds.

``check`` is what ``config.from_flags`` runs on every run's values before
TensorFlow loads: each value's range, finite floats, unrolls the learner can
build a step over and that fit the budget, environments that fit the memory,
adaptive costs only where an algorithm has them. ``machine_workers_per_task``
is the number of workers per task that fit this machine (the DeepMind Lab level
sets' default on one machine).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from distral_tf import errors
from distral_tf.agents import adaptive_costs
from distral_tf.agents import algorithms
from distral_tf.distributed import topology

# A DeepMind Lab environment process takes about 200 MB (measured on a real
# build, software rendering); we plan 300 MB and give environments half the memory.
ENV_PROCESS_BYTES = 300e6
ENVS_PER_CORE = 4


def machine_workers_per_task(num_tasks: int, cores: int | None = None,
                             memory_bytes: float | None = None,
                             env_bytes: float = ENV_PROCESS_BYTES,
                             memory_share: float = 0.5,
                             envs_per_core: int | None = ENVS_PER_CORE) -> int:
  """Workers per task whose environments fit this machine.

  At most ``envs_per_core`` environments per core (no limit when None) and
  ``memory_share`` of the memory (``memory_bytes``, default the machine's
  physical memory) at ``env_bytes`` each, shared by ``num_tasks`` tasks; at
  least one. The defaults choose DeepMind Lab's workers: processes of
  ``ENV_PROCESS_BYTES``, ``ENVS_PER_CORE`` per core, half the memory.
  """
  cores = cores or os.cpu_count() or 1
  if memory_bytes is None:
    memory_bytes = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  total = int(memory_share * memory_bytes / env_bytes)
  if envs_per_core is not None:
    total = min(envs_per_core * cores, total)
  return max(1, total // num_tasks)


def positive(name: str, value, allow_zero: bool = False) -> None:
  """Raises ``errors.UsageError`` unless ``value`` > 0 (>= 0 with ``allow_zero``)."""
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    bound = '>= 0' if allow_zero else '> 0'
    raise errors.UsageError(f'--{name} must be {bound}, got {value}')


def check(values: Mapping[str, Any]) -> None:
  """Raises ``errors.UsageError`` for a value of a deep trainer's flag out of range.

  Besides each value's own range: no float is infinite or NaN; an unroll is
  short enough for the learner to build its step over it and fits in the
  budget; the environments fit the machine's memory; adaptive costs go with
  an algorithm that has them (``_check_adaptive_costs``).
  """
  for name, value in values.items():
    if isinstance(value, float) and not -float('inf') < value < float('inf'):
      raise errors.UsageError(f'--{name} must be a finite number, got {value}')
  for name in ('workers_per_task', 'actor_threads', 'learner_threads', 'unroll_length',
               'hidden_size', 'rmsprop_decay',
               'rmsprop_epsilon', 'grad_clip_norm', 'eval_episodes',
               'checkpoint_secs', 'log_interval_secs'):
    positive(name, values[name])
  for name in ('value_cost', 'value_l2_cost', 'eval_interval',
               'max_seconds', 'tf_threads', 'max_policy_lag'):
    positive(name, values[name], allow_zero=True)
  if not 0 <= values['env_niceness'] <= 19:
    raise errors.UsageError(
        f'--env_niceness must be in 0..19, got {values["env_niceness"]}')
  if values['rmsprop_decay'] >= 1:
    raise errors.UsageError(
        f'--rmsprop_decay must be < 1, got {values["rmsprop_decay"]}')
  if values['actor_threads'] > values['workers_per_task']:
    raise errors.UsageError(
        f'--actor_threads ({values["actor_threads"]}) must be <= --workers_per_task '
        f'({values["workers_per_task"]})')
  if not 0 <= values['eval_share'] < float('inf'):
    raise errors.UsageError(f'--eval_share must be a number >= 0, got {values["eval_share"]}')
  _check_adaptive_costs(values)
  if values['cluster']:
    topology.parse_cluster_flag(values['cluster'])
  # The learner's step is built over every step of an unroll (the network
  # unrolled in its graph): on 2 busy cores a run of one unroll took 50 s more
  # at 100 steps than at 20 and 4 minutes more at 200 (the cost grows faster
  # than the steps); at 1,000 a run had not made its first update after 5
  # minutes, its actors done (progress at 100%, 0 frames/s).
  max_unroll_length = 100
  if values['unroll_length'] > max_unroll_length:
    raise errors.UsageError(
        f'--unroll_length must be at most {max_unroll_length} (the learner\'s step '
        'is built over every step of an unroll, which takes minutes beyond it; the '
        f'paper uses 20), got {values["unroll_length"]}')
  # Actors look at the budget between unrolls only: a worker's unroll (a frame
  # or more per step) must fit in the budget.
  budget = values['env_steps_per_task']
  if budget is not None and values['unroll_length'] > budget:
    raise errors.UsageError(
        f'--unroll_length={values["unroll_length"]} is more than --env_steps_per_task='
        f'{budget}: one unroll of a worker takes {values["unroll_length"]} steps of a '
        'frame or more each, and must fit in the budget')
  # The environments must fit the memory. One costs its process, if it has one
  # (resident sizes measured: DeepMind Lab about 200 MB, ENV_PROCESS_BYTES
  # planned; MiniWorld 210 MB; MiniGrid 64 MB; the grid world 38 MB), and, in
  # the trainer, its share of the unrolls acted and learned from: per step
  # about 14 kB for the grid world's vectors (measured: 0.28 MB per environment
  # at 20 steps), planned at 100 kB for pixels (the frame as floats and the
  # convolutions' activations kept for the gradient). With
  # --cluster=tf_config the environments run on other machines, not checked.
  if values['cluster'].strip() == 'tf_config':
    return
  level_set = values['level_set']
  process_bytes = {'two_rooms': 38e6, 'minigrid': 64e6, 'miniworld': 210e6}.get(
      level_set, ENV_PROCESS_BYTES)
  step_bytes = 14e3 if level_set == 'two_rooms' else 100e3
  env_bytes = (process_bytes if values['env_processes'] else 0.0) + (
      values['unroll_length'] * step_bytes)
  memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  available = memory - 1e9  # The trainer itself (TensorFlow, the networks): ~1 GB.
  workers = values['workers_per_task']
  num_tasks = len(values['tasks'] or ()) or values['num_tasks']
  if num_tasks is None:  # The level set's own number.
    from distral_tf.envs import level_sets  # pylint: disable=g-import-not-at-top
    try:
      num_tasks = len(level_sets.make_level_set(level_set, None, values['seed'],
                                                values).tasks)
    except errors.UsageError:  # A package missing: the trainer says so; one task
      num_tasks = 1            # at least.
  if workers * num_tasks * env_bytes <= available:
    return
  fit = machine_workers_per_task(num_tasks, memory_bytes=available, env_bytes=env_bytes,
                                 memory_share=1.0, envs_per_core=None)
  what = 'its process and ' if values['env_processes'] else ''
  raise errors.UsageError(
      f'--workers_per_task={workers} does not fit this machine\'s memory: an '
      f'environment of {level_set} takes about {env_bytes / 1e6:,.1f} MB ({what}its '
      f'unrolls of {values["unroll_length"]} steps), {workers:,} for each of '
      f'{num_tasks} task(s) about {workers * num_tasks * env_bytes / 1e9:,.1f} GB, '
      f'and this machine has {memory / 1e9:,.1f} GB; at most {fit:,} per task fit')


def _check_adaptive_costs(values: Mapping[str, Any]) -> None:
  """Raises ``errors.UsageError`` for adaptive costs the run cannot have.

  The target entropy and the rate must be in range; ``--adaptive_costs``
  needs a Distral algorithm whose regularised reward has an entropy term
  (alpha < 1: with alpha = 1 the bound is KL(pi_i || pi_0) <= 0, which only
  pi_i = pi_0 meets, and the costs would only grow) and an initial cost in
  ``adaptive_costs.COST_RANGE``.
  """
  if not 0 < values['target_entropy'] < 1:
    raise errors.UsageError(
        f'--target_entropy must be in (0, 1) (a fraction of the largest entropy), '
        f'got {values["target_entropy"]}')
  positive('cost_learning_rate', values['cost_learning_rate'])
  if not values['adaptive_costs']:
    return
  algorithm = algorithms.ALGORITHMS.get(values['algorithm'])
  if algorithm is None or algorithm.entropy_bonus:
    raise errors.UsageError(
        f'--adaptive_costs tunes the KL and entropy costs of the regularised reward '
        f'of the Distral algorithms (kl_ent_1col, kl_ent_2col; kl_1col, kl_2col with '
        f'--alpha < 1); {values["algorithm"]} has none')
  alpha = algorithm.alpha if values['alpha'] is None else values['alpha']
  if alpha >= 1:
    raise errors.UsageError(
        f'--adaptive_costs needs an entropy term (alpha < 1); with alpha = 1 '
        f'({values["algorithm"]}) its bound KL(pi_i || pi_0) <= 0 holds only at '
        'pi_i = pi_0 and the costs would only grow: use kl_ent_* or give --alpha < 1')
  low, high = adaptive_costs.COST_RANGE
  if not low <= values['entropy_cost'] <= high:
    raise errors.UsageError(
        f'--entropy_cost (the initial cost with --adaptive_costs) must be in '
        f'[{low:g}, {high:g}], got {values["entropy_cost"]}')
