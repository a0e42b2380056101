r"""Returns of the uniform random policy on each task of a level set.

  python -m distral_tf.experiments.random_baseline --level_set=mazes --episodes=100
  python -m distral_tf.experiments.random_baseline --level_set=lasertag \
      --episodes=30 --workers_per_task=1 --write

Every task's environments (the level set's own adapter: for DeepMind Lab,
action repeat 4 and the level set's action set) each play a fixed share of
``--episodes`` episodes, choosing every action uniformly at random, in their
own processes, all tasks at once. Each environment's quota is set before it
starts, so short episodes are not favoured. Prints per task the mean episode
return, its standard deviation and standard error, and the mean episode length
in frames; with ``--write`` records them in ``random_returns.json``
(``random_returns.RECORD_PATH``), which the learning check reads
(``random_returns.random_return``).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Mapping

import numpy as np
from absl import app
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf.agents import config as config_lib
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets
from distral_tf.envs import process
from distral_tf.experiments import random_returns

_EPISODES = flags.DEFINE_integer('episodes', 100, 'Episodes per task.')
_WRITE = flags.DEFINE_boolean('write', False,
                              f'Record the results in random_returns.json (beside '
                              f'{__name__.rsplit(".", 1)[-1]}.py).')
FLAGS = flags.FLAGS

# Seconds between progress lines.
PROGRESS_SECS = 10.0
# Offset of the workers' seeds: apart from those of training (0 ..) and
# evaluation (10,000 ..) environments.
SEED_WORKER_OFFSET = 20_000


def play(level_set: level_sets.LevelSet, seed: int, episodes: int,
         workers_per_task: int, niceness: int = 0,
         report: Callable[[str], None] | None = None,
         report_secs: float = PROGRESS_SECS) -> dict[str, dict[str, list]]:
  """``episodes`` episodes of the uniform random policy on every task.

  Task t's ``workers_per_task`` environments play ``episodes`` between them
  (quotas fixed in advance), stepped in parallel processes. Returns per task
  name the lists ``returns`` and ``frames`` (episode lengths in frames).
  ``report``, if given, gets a progress line every ``report_secs``.
  """
  specs, quotas = [], []
  for t, task in enumerate(level_set.tasks):
    share = [episodes // workers_per_task + (w < episodes % workers_per_task)
             for w in range(workers_per_task)]
    for w, quota in enumerate(share):
      if quota:
        specs.append((task.make_env, batch_lib.env_seed(seed, t, SEED_WORKER_OFFSET + w),
                      f'{task.name}/random{w}'))
        quotas.append((t, quota))
  rng = np.random.default_rng(seed)
  out = {task.name: dict(returns=[], frames=[]) for task in level_set.tasks}
  envs = process.start_all(specs, niceness)
  try:
    left = [quota for _, quota in quotas]
    totals = np.zeros(len(envs))
    lengths = np.zeros(len(envs), np.int64)
    for env in envs:
      env.send_reset()
    for env in envs:
      env.receive()
    active = [i for i in range(len(envs))]
    total, frames, start = episodes * len(level_set.tasks), 0, time.time()
    next_report = start + report_secs
    while active:
      if report is not None and time.time() >= next_report:
        done = sum(len(p['returns']) for p in out.values())
        elapsed = time.time() - start
        report(f'episodes {done:,}/{total:,}  frames {frames:,}  '
               f'({frames / elapsed:,.0f} frames/s)')
        next_report += report_secs
      frames += len(active) * level_set.frames_per_step
      actions = rng.integers(level_set.num_actions, size=len(active))
      for i, action in zip(active, actions):
        envs[i].send_step(int(action))
      still = []
      for i in active:
        timestep = envs[i].receive()
        if timestep.first():  # The process died and restarted: start over.
          totals[i], lengths[i] = 0.0, 0
          still.append(i)
          continue
        totals[i] += timestep.reward
        lengths[i] += 1
        if timestep.last():
          name = level_set.tasks[quotas[i][0]].name
          out[name]['returns'].append(float(totals[i]))
          out[name]['frames'].append(int(lengths[i]) * level_set.frames_per_step)
          totals[i], lengths[i] = 0.0, 0
          left[i] -= 1
        if left[i] > 0:
          still.append(i)
      active = still
  finally:
    for env in envs:
      env.close()
  return out


def summarise(returns: list[float], frames: list[int]) -> dict[str, float]:
  """Mean, standard deviation, standard error of the returns; mean length."""
  values = np.asarray(returns, np.float64)
  std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return dict(episodes=len(values), mean=float(values.mean()), std=std,
              sem=std / math.sqrt(len(values)), min=float(values.min()),
              max=float(values.max()), mean_frames=float(np.mean(frames)))


def table(stats: Mapping[str, dict]) -> list[str]:
  lines = [f'{"task":<34} {"episodes":>8} {"mean":>9} {"std":>8} {"s.e.":>7} '
           f'{"min":>7} {"max":>7} {"frames/episode":>15}']
  for task, s in stats.items():
    lines.append(f'{task:<34} {s["episodes"]:>8} {s["mean"]:>9.3f} {s["std"]:>8.3f} '
                 f'{s["sem"]:>7.3f} {s["min"]:>7.2f} {s["max"]:>7.2f} '
                 f'{s["mean_frames"]:>15,.0f}')
  return lines


@errors.exit_on_usage_error
def main(argv) -> None:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}')
  if _EPISODES.value < 1:
    raise errors.UsageError(f'--episodes must be >= 1, got {_EPISODES.value}')
  cli.validate_common(FLAGS)
  config, _ = config_lib.from_flags(FLAGS)
  level_set = level_sets.make_level_set(config.level_set, config.num_tasks, config.seed,
                                        config.config_record)
  workers = min(config.workers_per_task, _EPISODES.value)
  print(f'{level_set.name}: {len(level_set.tasks)} tasks, {_EPISODES.value} episodes '
        f'each of the uniform random policy over {level_set.num_actions} actions, '
        f'{workers} environment processes per task', flush=True)
  start = time.time()
  played = play(level_set, config.seed, _EPISODES.value, workers,
                report=lambda line: print(line, flush=True))
  stats = {task: summarise(p['returns'], p['frames']) for task, p in played.items()}
  print('\n'.join(table(stats)))
  print(f'{time.time() - start:.0f} s')
  if _WRITE.value:
    random_returns.write_records(level_set.name, stats, config.seed)
    print(f'recorded in {random_returns.RECORD_PATH}')


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  app.run(main, flags_parser=cli.parse_flags)
