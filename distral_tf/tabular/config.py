"""Flags and configuration of the tabular trainer (``soft_q``, ``distral_soft_q``).

The defaults live in one place, ``agent.AgentConfig``. The paper's constants were
lost from our copy of its text; ours are documented in docs/grid_world.md. The
common flags of ``cli`` (learning rate, discount, alpha, entropy cost, budget)
fall back on them when left unset. This module is light (no plotting), so
``cli`` can import it to define the ``--tabular_*`` flags before parsing.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

from absl import flags

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.envs import two_rooms_tasks
from distral_tf.tabular import agent

_D = agent.AgentConfig()

# Defaults of the common flags when they are None. soft_q uses alpha = 1 too: the
# KL to a fixed uniform prior, i.e. an entropy bonus less a constant log(5) per step.
FAMILY_DEFAULTS = dict(env_steps_per_task=_D.env_steps_per_task,
                       learning_rate=_D.learning_rate, discount=_D.discount,
                       alpha=_D.alpha, entropy_cost=_D.entropy_cost)

flags.DEFINE_integer('tabular_rollout_length', _D.rollout_length,
                     'Environment steps per task in each soft Q-learning iteration '
                     '(pi_0 is distilled after each iteration).')
flags.DEFINE_float('tabular_pseudocount', _D.pseudocount,
                   'Pseudocount added per action and state when distilling pi_0 (eq. 5).')
flags.DEFINE_integer('tabular_eval_interval', _D.eval_interval,
                     'Environment steps per task between evaluations of pi_0.')
flags.DEFINE_integer('tabular_eval_episodes', _D.eval_episodes,
                     'Evaluation episodes of pi_0 (sampled actions) per task; 0: none.')


@dataclasses.dataclass(frozen=True)
class TabularConfig:
  """A tabular run, read once from the flags: what the trainer needs."""
  agent: agent.AgentConfig         # hyper-parameters, algorithm and seed
  level_set: str
  num_tasks: int | None            # None: the level set's own number
  logdir: str
  # What ``config.json`` records (every flag's value, as given) and the flags
  # that make up the run, compared with a saved run's (``run_dir``).
  config_record: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)
  run_flags: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)


def from_flags(fv: flags.FlagValues) -> TabularConfig:
  """The tabular run the flags select; raises ``errors.UsageError``. Leaves ``fv``."""
  record = fv.flag_values_dict()
  return TabularConfig(
      agent=agent_config(fv), level_set=fv.level_set, num_tasks=fv.num_tasks,
      logdir=fv.logdir, config_record=types.MappingProxyType(record),
      run_flags=types.MappingProxyType(
          run_dir.run_flags(fv.flags_by_module_dict(), record)))


def agent_config(fv: flags.FlagValues) -> agent.AgentConfig:
  """The run's hyper-parameters (family defaults for None); raises UsageError."""
  if fv.algorithm not in agent.AGENTS:
    raise errors.UsageError(f'--algorithm={fv.algorithm} is not tabular; valid '
                            f'choices: {", ".join(agent.AGENTS)}')
  if fv.level_set != two_rooms_tasks.LEVEL_SET_NAME:
    raise errors.UsageError(f'tabular agents run on --level_set=two_rooms only, '
                            f'got {fv.level_set}')
  value = {k: FAMILY_DEFAULTS[k] if getattr(fv, k) is None else getattr(fv, k)
           for k in FAMILY_DEFAULTS}
  checks = (
      ('env_steps_per_task', value['env_steps_per_task'] >= 1, '>= 1'),
      ('learning_rate', 0 < value['learning_rate'] <= 1, 'in (0, 1]'),
      ('discount', 0 <= value['discount'] < 1, 'in [0, 1) for tabular agents'),
      ('alpha', 0 <= value['alpha'] <= 1, 'in [0, 1]'),
      ('entropy_cost', value['entropy_cost'] > 0, '> 0'),
      ('tabular_rollout_length', fv.tabular_rollout_length >= 1, '>= 1'),
      ('tabular_pseudocount', fv.tabular_pseudocount >= 0, '>= 0'),
      ('tabular_eval_interval', fv.tabular_eval_interval >= 1, '>= 1'),
      ('tabular_eval_episodes', fv.tabular_eval_episodes >= 0, '>= 0'),
  )
  for name, ok, valid in checks:
    if not ok:
      got = value[name] if name in value else getattr(fv, name)
      raise errors.UsageError(f'--{name} must be {valid}, got {got}')
  return agent.AgentConfig(
      agent=fv.algorithm, alpha=float(value['alpha']),
      entropy_cost=float(value['entropy_cost']), discount=float(value['discount']),
      learning_rate=float(value['learning_rate']),
      rollout_length=fv.tabular_rollout_length,
      pseudocount=fv.tabular_pseudocount,
      env_steps_per_task=int(value['env_steps_per_task']),
      eval_interval=fv.tabular_eval_interval,
      eval_episodes=fv.tabular_eval_episodes, seed=fv.seed)
