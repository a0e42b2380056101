r"""Action probabilities of a trained run's policies, grouped by what the agent faces.

  python -m distral_tf.experiments.action_probe --logdir=runs/.../seed0 \
      --probe_task=door_7x7 --probe_steps=3000

Loads the newest checkpoint of the deep run in ``--logdir`` (its network as
``config.json`` describes it), steps one environment of a task of the run
(``--probe_task``, name or index; default every task) along
``--probe_steps`` steps of uniformly random actions (``--probe_behaviour=task``:
the task policy's own actions), and at every step evaluates the task policy
pi_i and, where the algorithm has one, pi_0 (eq. 6: the distilled column's
softmax(h); pi_i of 2col is softmax(alpha h + f)), each on its own recurrent
state. It prints each policy's mean action probabilities over all steps and,
on level sets whose environments tell what the agent faces
(``facing()``: `minigrid`), over the steps grouped by that: e.g. how likely
pi_0 is to open a closed door it faces. Environments are stepped in this
process, seeded with ``--probe_seed``.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Sequence

import numpy as np
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf import run_dir
from distral_tf.agents import config as config_lib
from distral_tf.experiments import schedule

_TASK = flags.DEFINE_string('probe_task', '',
                            'Task of the run to probe (name or index); default every task.')
_STEPS = flags.DEFINE_integer('probe_steps', 3000, 'Steps per task.')
_BEHAVIOUR = flags.DEFINE_enum('probe_behaviour', 'random', ['random', 'task'],
                               'Actions taken: uniformly random, or sampled from pi_i.')
_SEED = flags.DEFINE_integer('probe_seed', 0, 'Seed of the environment and actions.')

ALL = '(all)'


def _run_flag_names(fv: flags.FlagValues) -> set[str]:
  """The trainer's flags (its modules'), not absl's nor this command's."""
  return {f.name for module, module_flags in fv.flags_by_module_dict().items()
          if module.startswith('distral_tf.') for f in module_flags
          if not f.name.startswith('probe_')}


def load_run_config(logdir: str) -> config_lib.DeepConfig:
  """The deep configuration a run was trained with, from its ``config.json``."""
  saved = run_dir.saved_config(logdir)
  if saved is None:
    raise errors.UsageError(f'--logdir: no {os.path.join(logdir, "config.json")}; '
                            'give the log directory of a deep run')
  if saved.get('algorithm') not in cli.DEEP_ALGORITHMS:
    raise errors.UsageError(f'--logdir: {logdir} holds a {saved.get("algorithm")} run; '
                            'the probe reads deep runs')
  fv = cli.FLAGS
  names = _run_flag_names(fv)
  for name, value in saved.items():
    if name in names:
      fv[name].value = value
      fv[name].present = 1  # The run's values, its level set's defaults merged.
  fv['logdir'].value = logdir
  config, _ = config_lib.from_flags(fv)
  return config


def restore_network(config: config_lib.DeepConfig, setup, observation_spec, logdir: str,
                    network=None):
  """The run's network (as ``config`` describes it) with its newest checkpoint's weights.

  Restores into ``network`` when given (built for ``config``), else into a new
  one. Returns the network and the checkpoint's path; raises
  ``errors.UsageError`` when there is no checkpoint or it does not match.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import builders  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import checkpointing  # pylint: disable=g-import-not-at-top
  path = tf.train.latest_checkpoint(os.path.join(logdir, checkpointing.CHECKPOINT_DIR))
  if path is None:
    raise errors.UsageError(f'--logdir: no checkpoint in {logdir}')
  if network is None:
    network = builders.build_network(config, setup, observation_spec)
  try:
    tf.train.Checkpoint(network=network).restore(path).expect_partial(
        ).assert_existing_objects_matched()
  except (tf.errors.OpError, ValueError, AssertionError) as e:
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    # The half-restored checkpoint warns of every value at exit: not the user's news.
    tf.get_logger().setLevel('ERROR')
    raise errors.UsageError(f'--logdir: the checkpoint {path} does not match the '
                            f'network of the run\'s config.json ({reason})') from None
  return network, path


def select_tasks(names: Sequence[str], task: str, flag: str) -> list[int]:
  """Indices of the run's tasks ``task`` (the value of ``--flag``) names.

  A task's name or index; '' for all.
  """
  if not task:
    return list(range(len(names)))
  if task in names:
    return [names.index(task)]
  if task.isdigit() and int(task) < len(names):
    return [int(task)]
  raise errors.UsageError(f'--{flag}={task}: the run\'s tasks are {", ".join(names)} (or '
                          f'their indices 0-{len(names) - 1})')


def probe(network, env, task: int, steps: int, behaviour: str,
          rng: np.random.Generator) -> dict[str, Any]:
  """Steps ``env`` and evaluates pi_i (and pi_0) of ``task`` at every step.

  Returns arrays over the steps: ``observations``, ``first`` (an episode
  starts there), ``pi_i`` and ``pi_0`` ([steps, A] probabilities; pi_0 None
  without one) and ``facing`` (labels, None where the environment has none).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def act(observation, first, state):
    output, state = network.unroll(task, observation[tf.newaxis, tf.newaxis],
                                   first[tf.newaxis, tf.newaxis], state)
    pi0 = None if output.pi0_logits is None else tf.nn.softmax(output.pi0_logits[0, 0])
    return tf.nn.softmax(output.logits[0, 0]), pi0, state

  facing = getattr(env, 'facing', None)
  timestep = env.reset()
  state = network.initial_state(1)
  first = True
  out = collections.defaultdict(list)
  for _ in range(steps):
    pi_i, pi_0, state = act(tf.constant(timestep.observation), tf.constant(first), state)
    pi_i = pi_i.numpy()
    out['observations'].append(timestep.observation)
    out['first'].append(first)
    out['pi_i'].append(pi_i)
    out['pi_0'].append(None if pi_0 is None else pi_0.numpy())
    out['facing'].append(facing() if facing else None)
    action = (rng.integers(len(pi_i)) if behaviour == 'random'
              else rng.choice(len(pi_i), p=pi_i / pi_i.sum()))
    timestep = env.step(int(action))
    first = False
    if timestep.last():
      timestep, first = env.reset(), True
  has_pi0 = out['pi_0'][0] is not None
  return dict(observations=np.stack(out['observations']), first=np.array(out['first']),
              pi_i=np.stack(out['pi_i']),
              pi_0=np.stack(out['pi_0']) if has_pi0 else None,
              facing=out['facing'] if facing else None)


def table(result: dict[str, Any], action_names: Sequence[str]) -> list[str]:
  """Mean action probabilities per policy, over all steps and per ``facing`` label."""
  lines = [f'{"policy":<7} {"facing":<14} {"steps":>6} ' +
           ' '.join(f'{a:>9}' for a in action_names)]
  groups = [(ALL, np.ones(len(result['first']), bool))]
  if result['facing'] is not None:
    labels = np.array(result['facing'])
    groups += [(label, labels == label) for label in sorted(set(result['facing']))]
  for policy in ('pi_i', 'pi_0'):
    probs = result[policy]
    if probs is None:
      continue
    for label, mask in groups:
      mean = probs[mask].mean(axis=0)
      lines.append(f'{policy:<7} {label:<14} {int(mask.sum()):>6} ' +
                   ' '.join(f'{p:>9.3g}' for p in mean))
  return lines


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  if not cli.FLAGS.logdir:
    raise errors.UsageError('--logdir is required: the log directory of a deep run')
  if _STEPS.value < 1:
    raise errors.UsageError(f'--probe_steps must be >= 1, got {_STEPS.value}')
  logdir = cli.FLAGS.logdir
  config = load_run_config(logdir)
  with cli.native_stderr_hidden():  # TensorFlow's start-up lines.
    from distral_tf.agents import builders  # pylint: disable=g-import-not-at-top
  setup = builders.make_setup(config)
  level_set = setup.level_set
  names = level_set.task_names
  tasks = select_tasks(names, _TASK.value, 'probe_task')
  action_names = level_set.action_names or tuple(str(a) for a in range(level_set.num_actions))
  rng = np.random.default_rng(_SEED.value)
  network = None
  for t in tasks:
    env = level_set.tasks[t].make_env(_SEED.value)  # One at a time (DeepMind Lab).
    try:
      if network is None:
        network, path = restore_network(config, setup, env.observation_spec(), logdir)
        print(f'{logdir}: {config.algorithm} on {level_set.name}, checkpoint {path}')
      result = probe(network, env, t, _STEPS.value, _BEHAVIOUR.value, rng)
    finally:
      env.close()
    actions = ('uniformly random actions' if _BEHAVIOUR.value == 'random'
               else "actions sampled from pi_i")
    print(f'\ntask {names[t]}: {_STEPS.value:,} steps of {actions}')
    for line in table(result, action_names):
      print(line)
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  schedule.run_command(main)
