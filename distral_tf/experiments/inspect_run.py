r"""What a trained run's task policy does, and what drives its gradient.

  python -m distral_tf.experiments.inspect_run --logdir=runs/mazes/a3c/seed0 \
      --inspect_task=nav_maze_static_01 --inspect_unrolls=20

Loads the newest checkpoint of the deep run in ``--logdir`` (its network as
``config.json`` describes it), plays ``--inspect_unrolls`` unrolls of the
run's length with the task policy pi_i in one environment of the task, through
the trainer's own actor (``agents/actor.py``), and on each unroll evaluates the
run's loss (eqs. 9-10, ``Learner.loss``) at the checkpoint's weights. It prints

* the norm of the gradient of every loss term alone (policy, entropy or
  regulariser, value, distillation, value L2) and of their sum, before
  clipping: which term drives learning;
* the policy's entropy, KL to pi_0, the value error and the mean return
  target, the importance weights;
* how often each action was taken, and the episodes that ended;

and saves ``--inspect_frames`` frames of the first unrolls, with the action
taken and the reward, as a picture (``--inspect_png``; default
``<logdir>/inspect_<task>.png``). The environment is seeded with ``--inspect_seed``.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from typing import Sequence

import numpy as np
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf.experiments import action_probe
from distral_tf.experiments import schedule

_TASK = flags.DEFINE_string('inspect_task', '0', 'Task of the run (name or index).')
_UNROLLS = flags.DEFINE_integer('inspect_unrolls', 20, 'Unrolls played and inspected.')
_FRAMES = flags.DEFINE_integer('inspect_frames', 12, 'Frames in the picture.')
_PNG = flags.DEFINE_string('inspect_png', '',
                           'The picture; default <logdir>/inspect_<task>.png.')
_SEED = flags.DEFINE_integer('inspect_seed', 0, 'Seed of the environment.')


def play(learner, env, task: int, num_tasks: int, unrolls: int, unroll_length: int,
         frames_per_step: int, task_name: str) -> tuple[list, list[dict]]:
  """``unrolls`` unrolls of pi_i of ``task`` in ``env``, through the trainer's actor.

  Returns the unrolls (``learner.Unroll``) and the episodes that ended.
  """
  from distral_tf import results  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import actor as actor_lib  # pylint: disable=g-import-not-at-top
  from distral_tf.envs import batch as batch_lib  # pylint: disable=g-import-not-at-top
  budget = unrolls * unroll_length * frames_per_step
  names = [task_name if t == task else f'task{t}' for t in range(num_tasks)]
  progress = actor_lib.Progress(names, budget,
                                [0 if t == task else budget for t in range(num_tasks)])
  unroll_queue = queue.Queue()
  with tempfile.TemporaryDirectory() as scratch:
    writer = results.EpisodeWriter(scratch, 'inspect', 0)
    actor = actor_lib.Actor(
        batch_lib.ProcessEnvBatch([env]), [task], num_tasks, learner.network,
        actor_lib.make_act_fn(learner.network, [int(t == task) for t in range(num_tasks)]),
        progress, actor_lib.EpisodeRecorder(writer, progress), unroll_length,
        frames_per_step, unroll_queue)
    actor.run(threading.Event())
    writer.close()
    if actor.error is not None:
      raise actor.error
    episodes = results.read_episodes(scratch)
  batches = []
  while not unroll_queue.empty():
    batches.append(unroll_queue.get_nowait())
  return batches, episodes


def gradient_norms(learner, batches: Sequence, task: int) -> dict[str, list[float]]:
  """Per unroll: the norm of the gradient of each loss term and of their sum, and the
  loss's statistics (entropy, kl, value error, ...) of ``task``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import losses  # pylint: disable=g-import-not-at-top
  out: dict[str, list[float]] = {}
  for task_sizes, batch, _ in batches:
    variables = learner.network.task_variables(task)
    with tf.GradientTape(persistent=True) as tape:
      total, metrics = learner.loss(task_sizes, batch)
    for term in losses.LOSS_TERMS + ('total',):
      value = total if term == 'total' else metrics[f'{term}/{task}']
      grads = [g for g in tape.gradient(value, variables) if g is not None]
      norm = float(tf.linalg.global_norm(grads)) if grads else 0.0
      out.setdefault(f'gradient norm: {term}', []).append(norm)
    del tape
    for key in ('entropy', 'kl', 'value_error', 'mean_return', 'rho'):
      out.setdefault(key, []).append(float(metrics[f'{key}/{task}']))
  return out


def save_frames(batches: Sequence, count: int, action_names: Sequence[str],
                path: str) -> str:
  """``count`` frames spread over the unrolls, titled with action and reward."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = [(b, t) for b in range(len(batches))
           for t in range(batches[b][1].actions.shape[0])]
  picks = [steps[i] for i in np.linspace(0, len(steps) - 1, min(count, len(steps))).astype(int)]
  columns = min(6, len(picks))
  rows = -(-len(picks) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.0 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, (b, t) in zip(axes.flat, picks):
    batch = batches[b][1]
    frame = np.asarray(batch.observations[t, 0])
    if frame.ndim == 3:
      ax.imshow(frame)
    action = int(batch.actions[t, 0])
    ax.set_title(f'step {b * batch.actions.shape[0] + t}: {action_names[action]}\n'
                 f'reward {float(batch.rewards[t, 0]):g}', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  if not cli.FLAGS.logdir:
    raise errors.UsageError('--logdir is required: the log directory of a deep run')
  for name, flag in (('inspect_unrolls', _UNROLLS), ('inspect_frames', _FRAMES)):
    if flag.value < 1:
      raise errors.UsageError(f'--{name} must be >= 1, got {flag.value}')
  logdir = cli.FLAGS.logdir
  config = action_probe.load_run_config(logdir)
  with cli.native_stderr_hidden():  # TensorFlow's start-up lines.
    from distral_tf.agents import builders  # pylint: disable=g-import-not-at-top
  setup = builders.make_setup(config)
  level_set = setup.level_set
  task, = action_probe.select_tasks(level_set.task_names, _TASK.value, 'inspect_task')
  name = level_set.task_names[task]
  action_names = level_set.action_names or tuple(str(a) for a in range(level_set.num_actions))
  from distral_tf.envs import process  # pylint: disable=g-import-not-at-top
  # In its own process, as in training (DeepMind Lab allows one per process).
  env = process.EnvProcess(level_set.tasks[task].make_env, _SEED.value, name=name)
  try:
    learner = builders.build_agent(config, setup, env.observation_spec())
    _, path = action_probe.restore_network(config, setup, env.observation_spec(), logdir,
                                           network=learner.network)
    print(f'{logdir}: {config.algorithm} on {level_set.name}, checkpoint {path}')
    batches, episodes = play(learner, env, task, len(level_set.tasks), _UNROLLS.value,
                             config.unroll_length, level_set.frames_per_step, name)
  finally:
    env.close()
  stats = gradient_norms(learner, batches, task)
  steps = sum(b.actions.shape[0] for _, b, _ in batches)
  print(f'\ntask {name}: {len(batches)} unrolls of {config.unroll_length} steps '
        f'({steps:,} steps) of pi_i')
  for key, values in stats.items():
    print(f'{key:<32} {np.mean(values):>10.4g}  (min {np.min(values):.4g}, '
          f'max {np.max(values):.4g})')
  actions = np.concatenate([np.asarray(b.actions).ravel() for _, b, _ in batches])
  counts = np.bincount(actions, minlength=len(action_names))
  print('actions taken: ' + ', '.join(f'{a} {c / len(actions):.2f}'
                                       for a, c in zip(action_names, counts)))
  returns = [r['episode_return'] for r in episodes]
  print(f'episodes ended: {len(returns)}' +
        (f', returns {", ".join(f"{r:g}" for r in returns)}' if returns else ''))
  png = _PNG.value or os.path.join(logdir, f'inspect_{name}.png')
  print(f'frames: {save_frames(batches, _FRAMES.value, action_names, png)}')
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  schedule.run_command(main)
