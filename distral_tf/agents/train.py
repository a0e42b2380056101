"""The local asynchronous trainer of the seven deep algorithms (one machine).

``run`` builds the level set, the network and the learner, starts
``--workers_per_task`` environments per task (each in its own process), runs
actor threads that act and apply asynchronous updates (``actor.Actor``), an
evaluator of pi_0, and, in the main thread, the monitor: progress lines,
TensorBoard summaries and checkpoints. Running the same command again resumes
from the last checkpoint (weights, RMSProp statistics, step counters and the
learning-rate schedule); Ctrl-C saves a checkpoint before leaving.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from distral_tf import errors
from distral_tf import interruption
from distral_tf import plotting
from distral_tf import results
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import algorithms
from distral_tf.agents import checkpointing
from distral_tf.agents import config as config_lib
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import networks
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets

# TensorFlow's INFO lines (checkpoint sharding, tracing notes) are not for users.
tf.get_logger().setLevel('WARNING')


def select_tasks(level_set: level_sets.LevelSet,
                 tasks: tuple[int, ...]) -> level_sets.LevelSet:
  """The level set restricted to the given task indices (all when empty)."""
  if not tasks:
    return level_set
  bad = [t for t in tasks if t >= len(level_set.tasks)]
  if bad:
    raise errors.UsageError(
        f'--tasks {bad} out of range: {level_set.name} has tasks 0..'
        f'{len(level_set.tasks) - 1} ({", ".join(level_set.task_names)})')
  return dataclasses.replace(level_set, tasks=tuple(level_set.tasks[t] for t in tasks))


def set_tf_threads(threads: int) -> None:
  """Gives this process's TensorFlow ``threads`` threads per op (intra-op).

  Ops of different calls run side by side on ``max(threads, 2)`` inter-op
  threads, so that the learner's step never holds up the actors' inference.
  0 keeps TensorFlow's defaults. TensorFlow fixes its threads when it first
  runs an op; a process that already has (several runs in one process, as in
  tests) keeps them, with a log line.
  """
  if threads == 0:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(threads, 2))
  except RuntimeError:
    logging.info('TensorFlow already runs in this process; --tf_threads=%d ignored',
                 threads)


def build_agent(level_set: level_sets.LevelSet, algorithm: algorithms.Algorithm,
                coeffs: algorithms.Coefficients, fv: flags.FlagValues,
                cfg: config_lib.DeepConfig, observation_spec) -> learner_lib.Learner:
  """The network (all variables created) and its learner."""
  network = networks.DistralNetwork(
      algorithm, num_tasks=len(level_set.tasks), num_actions=level_set.num_actions,
      observation_kind=level_set.observation_kind, alpha=coeffs.alpha,
      hidden_size=cfg.hidden_size, lstm_skip=cfg.lstm_skip)
  network.build(tuple(observation_spec.shape), observation_spec.dtype)
  total_steps = len(level_set.tasks) * fv.env_steps_per_task // level_set.frames_per_step
  learner_config = learner_lib.LearnerConfig(
      learning_rate=fv.learning_rate, total_steps=max(total_steps, 1),
      discount=fv.discount, rmsprop_decay=cfg.rmsprop_decay,
      rmsprop_epsilon=cfg.rmsprop_epsilon, grad_clip_norm=cfg.grad_clip_norm,
      value_cost=cfg.value_cost, value_l2_cost=cfg.value_l2_cost,
      regulariser_gradient=cfg.regulariser_gradient,
      off_policy_correction=cfg.off_policy_correction, lr_schedule=cfg.lr_schedule)
  return learner_lib.Learner(network, algorithm, coeffs, learner_config)


def check_resumable(logdir: str, fv: flags.FlagValues) -> None:
  """A log directory holding another run is a user error.

  Every flag of the run must equal the one in its ``config.json`` but those a
  resumed run may change (``run_dir.RESUMABLE_FLAGS``: budget, pace, threads).
  """
  from distral_tf import run_dir  # pylint: disable=g-import-not-at-top
  run_dir.check_same_run(logdir, fv, run_dir.RESUMABLE_FLAGS)


def start_envs(level_set: level_sets.LevelSet, cfg: config_lib.DeepConfig,
               specs: Sequence[tuple[int, int, str]]) -> list:
  """``envs.batch.start_envs`` with the trainer's flags."""
  return batch_lib.start_envs(level_set, specs, cfg.env_processes, cfg.env_niceness)


def make_env_batches(seed: int, cfg: config_lib.DeepConfig,
                     level_set: level_sets.LevelSet) -> list[tuple[object, list[int]]]:
  """``envs.batch.make_env_batches`` with the trainer's flags."""
  return batch_lib.make_env_batches(level_set, seed, cfg.workers_per_task,
                                    cfg.actor_threads, cfg.env_processes,
                                    cfg.env_niceness)


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')


def progress_line(progress: actor_lib.Progress, fps: float) -> str:
  with progress.lock:
    frames = int(progress.frames.sum())
    total = progress.budget * len(progress.task_names)
    task_ret = [np.mean(v) for (t, p), v in progress.recent_returns.items()
                if p == 'task' and v]
    pi0_ret = [np.mean(v) for (t, p), v in progress.recent_returns.items()
               if p == 'distilled' and v]
  lag = progress.recent_lag()
  shown = min(frames, total)  # Actors may overshoot the budget by an unroll.
  eta = max(total - frames, 0) / fps if fps > 0 else float('inf')
  returns = f'{np.mean(task_ret):.3f}' if task_ret else 'none finished yet'
  line = (f'frames {shown:,}/{total:,} ({100.0 * shown / total:.1f}%)  '
          f'fps {fps:,.0f}  return pi_i {returns}')
  if pi0_ret:
    line += f'  pi_0 {np.mean(pi0_ret):.3f}'
  return line + f'  lag {lag:.1f}  ETA {_format_duration(eta)}'


def write_summaries(writer, progress: actor_lib.Progress, fps: float,
                    learning_rate: float) -> None:
  with progress.lock:
    step = int(progress.frames.sum())
    returns = {k: float(np.mean(v)) for k, v in progress.recent_returns.items() if v}
    metrics = {t: dict(m) for t, m in progress.metrics.items()}
  lag = progress.recent_lag()
  lag_stats = progress.lag_stats()
  with writer.as_default(step=step):
    for (task, policy), value in returns.items():
      prefix = 'return' if policy == 'task' else 'return_pi0'
      tf.summary.scalar(f'{prefix}/{task}', value)
    for t, m in metrics.items():
      for key, value in m.items():
        tf.summary.scalar(f'{key}/{progress.task_names[t]}', value)
    tf.summary.scalar('learning_rate', learning_rate)
    tf.summary.scalar('frames_per_second', fps)
    tf.summary.scalar('policy_lag', lag)
    for task, stats in lag_stats['policy_lag_per_task'].items():
      tf.summary.scalar(f'policy_lag_mean/{task}', stats['mean'])
      tf.summary.scalar(f'policy_lag_max/{task}', stats['max'])
    tf.summary.scalar('dropped_unrolls', lag_stats['dropped_unrolls'])
  writer.flush()


def run(fv: flags.FlagValues) -> dict:
  """Trains the deep algorithm the flags select; returns the summary."""
  for note in config_lib.apply_level_set_defaults(fv):
    print(note, flush=True)
  cfg = config_lib.from_flags(fv)
  algorithm = algorithms.ALGORITHMS[fv.algorithm]
  coeffs = algorithms.coefficients(algorithm, fv.entropy_cost, fv.alpha)
  level_set = select_tasks(
      level_sets.make_level_set(fv.level_set, fv.num_tasks, fv.seed), cfg.tasks)
  level_set.check_env_processes(cfg.env_processes)
  set_tf_threads(cfg.tf_threads)
  if cfg.prior_logdir and not algorithm.distilled:
    raise errors.UsageError(
        f'--prior_logdir needs an algorithm with a distilled policy '
        f'(kl_1col, kl_ent_1col, kl_2col, kl_ent_2col), not {fv.algorithm}')
  if cfg.cluster:
    from distral_tf.distributed import cluster  # pylint: disable=g-import-not-at-top
    return cluster.run(fv, cfg, level_set, algorithm, coeffs)
  check_resumable(fv.logdir, fv)
  os.makedirs(fv.logdir, exist_ok=True)
  results.write_json(os.path.join(fv.logdir, results.CONFIG_FILE),
                     fv.flag_values_dict())
  tf.random.set_seed(fv.seed)
  with interruption.signals_as_interrupt():
    try:
      return _train(fv, cfg, level_set, algorithm, coeffs)
    except KeyboardInterrupt:  # During start-up: nothing new to save.
      print(f'Stopped during start-up; {fv.logdir} is as it was. Run the same command '
            'to start again.', file=sys.stderr, flush=True)
      sys.exit(interruption.exit_status())


def restore(fv: flags.FlagValues, cfg: config_lib.DeepConfig,
            level_set: level_sets.LevelSet, learner) -> checkpointing.TrainingState:
  """Resumes from the log directory's checkpoint, or loads the prior pi_0."""
  network = learner.network
  state = checkpointing.TrainingState(learner, len(level_set.tasks))
  state.restore_or_initialize(fv.logdir)
  if cfg.prior_logdir and not state.restored:
    checkpointing.load_prior(network, cfg.prior_logdir)
  if cfg.prior_logdir:
    learner.freeze(network.pi0_variables())
  if state.restored:
    print(f'Resuming from {state.manager.latest_checkpoint}: '
          f'{int(learner.steps_done.numpy())} agent steps, frames per task '
          f'{state.frames.numpy().tolist()}', flush=True)
  removed = results.truncate_episodes(
      fv.logdir, dict(zip(level_set.task_names, state.frames.numpy().tolist())))
  if removed:
    print(f'Resuming: dropped {removed} episodes recorded after the checkpoint.',
          flush=True)
  return state


def make_workers(fv: flags.FlagValues, cfg: config_lib.DeepConfig,
                 level_set: level_sets.LevelSet, algorithm: algorithms.Algorithm,
                 env_batches, network, learner, progress: actor_lib.Progress,
                 recorder: actor_lib.EpisodeRecorder, next_eval: int,
                 learner_threads: int) -> tuple[list, list]:
  """Actor threads, learner threads and (for distilled algorithms) the evaluator.

  ``env_batches`` as ``make_env_batches`` returns, one actor thread each;
  ``network`` is the one the actors and the evaluator act with; ``learner``
  anything with ``train_step(task_sizes, batch)``. Returns the workers and the
  evaluator's environments (to close).
  """
  num_tasks = len(level_set.tasks)
  unroll_queue = queue.Queue(maxsize=2 * cfg.actor_threads)
  workers, eval_envs = [], []
  for env_batch, tasks in env_batches:
    sizes = [tasks.count(task) for task in range(num_tasks)]
    workers.append(actor_lib.Actor(
        env_batch, tasks, num_tasks, network, actor_lib.make_act_fn(network, sizes),
        progress, recorder, cfg.unroll_length, level_set.frames_per_step, unroll_queue))
  actors = list(workers)
  actors_done = lambda: all(a.done for a in actors)
  for _ in range(learner_threads):
    workers.append(actor_lib.LearnerThread(learner, unroll_queue, progress, actors_done,
                                           cfg.max_policy_lag))
  if algorithm.distilled:
    interval = cfg.eval_interval or max(fv.env_steps_per_task // 20, 1)
    eval_envs = start_envs(level_set, cfg, [
        (t, batch_lib.env_seed(fv.seed, t, 10_000), f'{task.name}/eval')
        for t, task in enumerate(level_set.tasks)])
    workers.append(actor_lib.Evaluator(
        eval_envs, actor_lib.make_pi0_act_fn(network), network, progress, recorder,
        interval, cfg.eval_episodes, next_eval))
  return workers, eval_envs


def _train(fv, cfg, level_set, algorithm, coeffs) -> dict:
  env_batches, eval_envs = [], []
  try:
    env_batches = make_env_batches(fv.seed, cfg, level_set)
    learner = build_agent(level_set, algorithm, coeffs, fv, cfg,
                          env_batches[0][0].observation_spec())
    state = restore(fv, cfg, level_set, learner)
    writer = results.EpisodeWriter(fv.logdir, fv.algorithm, fv.seed)
    progress = actor_lib.Progress(level_set.task_names, fv.env_steps_per_task,
                                  state.frames.numpy())
    recorder = actor_lib.EpisodeRecorder(writer, progress)
    workers, eval_envs = make_workers(
        fv, cfg, level_set, algorithm, env_batches, learner.network, learner, progress,
        recorder, int(state.next_eval.numpy()), cfg.learner_threads)
    return _monitor(fv, cfg, level_set, learner, state, progress, recorder,
                    writer, workers, threading.Event())
  finally:
    with interruption.deferred():
      for env_batch, _ in env_batches:
        env_batch.close()
      for env in eval_envs:
        env.close()


def _monitor(fv, cfg, level_set, learner, state, progress, recorder, writer,
             workers, stop) -> dict:
  """Runs the workers; prints progress, writes summaries and checkpoints."""
  summary_writer = tf.summary.create_file_writer(os.path.join(fv.logdir, 'tensorboard'))
  threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
  start = time.time()
  wall_before = float(state.wall_time.numpy())
  resumed_from = int(progress.frames.sum())
  print(f'Training {fv.algorithm} on {level_set.name} ({len(level_set.tasks)} tasks, '
        f'{fv.workers_per_task} workers each) -> {fv.logdir}', flush=True)
  for th in threads:
    th.start()
  last_log = last_ckpt = time.time()
  last_frames = int(progress.frames.sum())
  # Throughput from the first progress line at which every environment has
  # stepped: start-up (environments, tracing) is over.
  steady_start = None
  actors = [w for w in workers if isinstance(w, actor_lib.Actor)]
  interrupted = False
  try:
    training = [th for th, w in zip(threads, workers)
                if not isinstance(w, actor_lib.Evaluator)]
    while any(th.is_alive() for th in training) and not stop.is_set():
      time.sleep(0.2)
      now = time.time()
      if now - last_log >= cfg.log_interval_secs:
        frames = int(progress.frames.sum())
        fps = (frames - last_frames) / (now - last_log)
        print(progress_line(progress, fps), flush=True)
        if steady_start is None and all(a.stepped for a in actors):
          steady_start = (now, frames)
        write_summaries(summary_writer, progress, fps, float(learner.learning_rate.numpy()))
        recorder.flush()
        last_log, last_frames = now, frames
      if now - last_ckpt >= cfg.checkpoint_secs:
        _save(state, learner, progress, workers, wall_before + now - start)
        recorder.flush()
        last_ckpt = now
      if cfg.max_seconds and now - start >= cfg.max_seconds:
        break
    if not stop.is_set() and progress.all_done():
      for th in threads:  # The evaluator's last evaluation: one episode per task.
        while th.is_alive():
          th.join(0.2)
  except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (``interruption.signals_as_interrupt``).
    interrupted = True
  with interruption.deferred():  # A second signal cannot cut the saving short.
    stop.set()
    for th in threads:
      th.join()
    errors_seen = [w.error for w in workers if w.error is not None]
    diverged = [e for e in errors_seen if isinstance(e, learner_lib.Diverged)]
    if not diverged:
      try:
        _save(state, learner, progress, workers, wall_before + time.time() - start)
      except learner_lib.Diverged as e:
        diverged = [e]
    recorder.flush()
    writer.close()
  if diverged:
    print(f'error: {diverged[0]}', file=sys.stderr, flush=True)
    sys.exit(1)
  if errors_seen:
    raise errors_seen[0]
  end = time.time()
  wall = wall_before + end - start
  steady_fps = float('nan')
  if steady_start is not None and end > steady_start[0] + 1e-3:
    steady_fps = (int(progress.frames.sum()) - steady_start[1]) / (end - steady_start[0])
  rows = results.read_episodes(fv.logdir)
  summary = results.write_summary(
      fv.logdir, rows, fv.env_steps_per_task, wall, int(progress.frames.sum()),
      finished=progress.all_done() and not interrupted, algorithm=fv.algorithm,
      level_set=level_set.name, updates=int(progress.updates),
      **progress.lag_stats(),
      interrupted_episodes=int(progress.interrupted_episodes),
      steady_frames_per_second=steady_fps, resumed_from_env_steps=resumed_from)
  plotting.plot_run(fv.logdir, rows, fv.env_steps_per_task,
                    f'{fv.algorithm} on {level_set.name}')
  print(results.format_summary_table(summary), flush=True)
  if interrupted:
    print(f'Stopped; checkpoint saved in {fv.logdir}. Run the same command to resume.',
          file=sys.stderr, flush=True)
    sys.exit(interruption.exit_status())
  return summary


def _save(state, learner, progress, workers, wall_time: float) -> None:
  """Checkpoints the run; refuses (``Diverged``) weights that are not finite."""
  learner_lib.check_finite_weights(learner.network.trainable_variables)
  evaluators = [w for w in workers if isinstance(w, actor_lib.Evaluator)]
  with progress.lock:
    frames = progress.frames.copy()
  next_eval = evaluators[0].next_eval if evaluators else 0
  state.save(frames, next_eval, wall_time)
