"""Trainer of the tabular agents (``--algorithm=soft_q`` or ``distral_soft_q``).

``run(config)`` is called by ``distral_tf.cli`` with the ``TabularConfig`` it
reads from the flags. It trains on the ``two_rooms`` level set and writes into
``config.logdir``:

* ``episodes.csv``: one row per finished training episode of each task policy
  pi_i (policy ``task``) and, for ``distral_soft_q``, every
  ``--tabular_eval_interval`` steps, ``--tabular_eval_episodes`` evaluation
  episodes per task of the distilled policy pi_0 with sampled actions (policy
  ``distilled``; their steps are not counted in ``env_steps``);
* ``config.json`` (every flag), ``summary.json`` (``finished: true``),
  ``learning_curves.png``;
* ``tabular_policies.npz``: the final Q tables, pi_0, visit frequencies and goals.

A run takes seconds, so it does not checkpoint: a finished run with the same
flags is not run again, an unfinished one starts afresh, and a log directory
holding another run (any other trainer, algorithm or flag but where and how it
executes, ``run_dir.EXECUTION_FLAGS``) is refused.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from distral_tf import plotting
from distral_tf import results
from distral_tf import run_dir
from distral_tf.envs import level_sets
from distral_tf.envs import two_rooms
from distral_tf.envs import two_rooms_tasks
from distral_tf.tabular import agent
from distral_tf.tabular import config as tabular_config

POLICIES_FILE = 'tabular_policies.npz'


def _finished_summary(logdir: str) -> dict | None:
  """The summary in ``logdir`` if it says the run finished."""
  try:
    with open(os.path.join(logdir, results.SUMMARY_FILE)) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) and summary.get('finished') else None


def run(run_config: tabular_config.TabularConfig) -> dict:
  """Trains ``run_config``'s tabular agent on the two-room tasks; returns the summary."""
  config = run_config.agent
  algorithm, seed = config.agent, config.seed
  level_set = level_sets.make_level_set(run_config.level_set, run_config.num_tasks,
                                        seed, run_config.config_record)
  env_config, goals = two_rooms_tasks.goal_cells_of(level_set)
  names = level_set.task_names
  logdir = run_config.logdir
  run_dir.prepare(logdir)
  same_run = run_dir.check_same_run(logdir, run_config.run_flags,
                                     run_dir.EXECUTION_FLAGS)
  done = _finished_summary(logdir) if same_run is not None else None
  if done is not None:
    print(f'{logdir}: finished already with these settings')
    print(results.format_summary_table(done))
    return done
  summary_path = os.path.join(logdir, results.SUMMARY_FILE)
  if os.path.exists(summary_path):
    os.remove(summary_path)
  results.write_json(os.path.join(logdir, results.CONFIG_FILE),
                     dict(run_config.config_record))

  writer = results.EpisodeWriter(logdir, algorithm, seed, fresh=True)
  recent: list[float] = []
  latest_eval: list[float] = []
  budget = config.env_steps_per_task
  next_report = [budget / 10]
  start = time.time()

  def on_episode(i, env_steps, ret, length, policy):
    writer.write(names[i], env_steps, ret, length, policy)
    (recent if policy == 'task' else latest_eval).append(ret)

  def on_iteration(state: agent.AgentState):
    if state.env_steps < next_report[0] and state.env_steps < budget:
      return
    next_report[0] += budget / 10
    elapsed = time.time() - start
    line = (f'[{algorithm} seed {seed}] {state.env_steps}/{budget} steps per '
            f'task, return {np.mean(recent[-100:]) if recent else float("nan"):.3f}')
    if latest_eval:
      last = latest_eval[-len(names) * max(config.eval_episodes, 1):]
      line += f', pi_0 {np.mean(last):.3f}'
    print(line + f', {state.env_steps * len(names) / max(elapsed, 1e-9):.0f} steps/s',
          flush=True)

  state = agent.train(config, env_config, goals, on_episode, on_iteration)
  writer.close()
  wall = time.time() - start
  np.savez_compressed(
      os.path.join(logdir, POLICIES_FILE), q=state.q, pi0=state.pi0,
      visits=state.visits, goal_cells=np.asarray(goals),
      room_size=env_config.room_size, corridor_length=env_config.corridor_length)
  rows = results.read_episodes(logdir)
  optimal = {n: two_rooms.optimal_return(env_config, g) for n, g in zip(names, goals)}
  summary = results.write_summary(
      logdir, rows, budget, wall, budget * len(names), finished=True,
      algorithm=algorithm, seed=seed,
      hyperparameters=dict(alpha=config.alpha, entropy_cost=config.entropy_cost,
                           discount=config.discount,
                           learning_rate=config.learning_rate,
                           rollout_length=config.rollout_length,
                           pseudocount=config.pseudocount),
      optimal_return=optimal,
      mean_optimal_return=float(np.mean(list(optimal.values()))),
      mean_random_return=float(np.mean(
          [two_rooms.random_policy_return(env_config, g) for g in goals])))
  plotting.plot_run(logdir, rows, budget,
                    f'{algorithm} on two_rooms, seed {seed}')
  print(results.format_summary_table(summary))
  print(f'{logdir}: {budget * len(names)} env steps in {wall:.1f} s')
  return summary


def load_policies(logdir: str) -> dict:
  """Reads ``tabular_policies.npz`` of a run into a dict of arrays."""
  with np.load(os.path.join(logdir, POLICIES_FILE)) as data:
    return {k: data[k] for k in data.files}
