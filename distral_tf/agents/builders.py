"""What the local and the cluster trainer build alike, from a ``DeepConfig``.

The level set (restricted to ``--tasks``), the algorithm and its
coefficients (``make_setup``); the environments of the actors
(``make_env_batches``); the network and its learner (``build_agent``); the
log directory's ``config.json`` (``write_config``) and checkpoint
(``restore``); and the actor, learner and evaluator threads
(``make_workers``). Both trainers (``agents/train.py``,
``distributed/trainer.py``) import this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import os
import queue
from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import adaptive_costs
from distral_tf.agents import algorithms
from distral_tf.agents import checkpointing
from distral_tf.agents import config as config_lib
from distral_tf.agents import evaluator as evaluator_lib
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import networks
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets

# TensorFlow's INFO lines (checkpoint sharding, tracing notes) are not for users.
tf.get_logger().setLevel('WARNING')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run trains: the level set's tasks, the algorithm, its coefficients."""
  level_set: level_sets.LevelSet
  algorithm: algorithms.Algorithm
  coeffs: algorithms.Coefficients


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


def make_setup(config: config_lib.DeepConfig) -> Setup:
  """The level set, algorithm and coefficients of ``config``; sets TF's threads.

  Raises ``errors.UsageError`` for tasks out of range, environments that
  need processes and a prior for an algorithm without pi_0.
  """
  algorithm = algorithms.ALGORITHMS[config.algorithm]
  coeffs = algorithms.coefficients(algorithm, config.entropy_cost, config.alpha)
  level_set = select_tasks(
      level_sets.make_level_set(config.level_set, config.num_tasks, config.seed,
                                config.config_record),
      config.tasks)
  level_set.check_env_processes(config.env_processes)
  set_tf_threads(config.tf_threads)
  if config.prior_logdir and not algorithm.distilled:
    raise errors.UsageError(
        f'--prior_logdir needs an algorithm with a distilled policy '
        f'(kl_1col, kl_ent_1col, kl_2col, kl_ent_2col), not {config.algorithm}')
  return Setup(level_set, algorithm, coeffs)


def build_network(config: config_lib.DeepConfig, setup: Setup,
                  observation_spec) -> networks.DistralNetwork:
  """The network of ``setup``'s algorithm, all variables created."""
  level_set = setup.level_set
  network = networks.DistralNetwork(
      setup.algorithm, num_tasks=len(level_set.tasks), num_actions=level_set.num_actions,
      observation_kind=level_set.observation_kind, alpha=setup.coeffs.alpha,
      hidden_size=config.hidden_size, lstm_skip=config.lstm_skip)
  network.build(tuple(observation_spec.shape), observation_spec.dtype)
  return network


def build_agent(config: config_lib.DeepConfig, setup: Setup,
                observation_spec) -> learner_lib.Learner:
  """The network (all variables created) and its learner."""
  network = build_network(config, setup, observation_spec)
  level_set = setup.level_set
  anneal_frames = config.lr_anneal_frames or config.env_steps_per_task
  total_steps = len(level_set.tasks) * anneal_frames // level_set.frames_per_step
  learner_config = learner_lib.LearnerConfig(
      learning_rate=config.learning_rate, total_steps=max(total_steps, 1),
      discount=config.discount, rmsprop_decay=config.rmsprop_decay,
      rmsprop_epsilon=config.rmsprop_epsilon, grad_clip_norm=config.grad_clip_norm,
      value_cost=config.value_cost, value_l2_cost=config.value_l2_cost,
      regulariser_gradient=config.regulariser_gradient,
      off_policy_correction=config.off_policy_correction,
      lr_schedule=config.lr_schedule, adaptive_costs=config.adaptive_costs,
      cost_bound=adaptive_costs.regulariser_bound(
          setup.coeffs.alpha, config.target_entropy, level_set.num_actions),
      uniform_bound=adaptive_costs.regulariser_bound(
          setup.coeffs.alpha, 1.0, level_set.num_actions),
      cost_anneal_steps=int(adaptive_costs.TARGET_ANNEAL_SHARE * len(level_set.tasks)
                            * config.env_steps_per_task) // level_set.frames_per_step,
      cost_learning_rate=config.cost_learning_rate)
  return learner_lib.Learner(network, setup.algorithm, setup.coeffs, learner_config)


def check_resumable(config: config_lib.DeepConfig) -> None:
  """A log directory holding another run is a user error.

  Every flag of the run must equal the one in its ``config.json`` but those a
  resumed run may change (``run_dir.RESUMABLE_FLAGS``: budget, pace, threads).
  """
  run_dir.check_same_run(config.logdir, config.run_flags, run_dir.RESUMABLE_FLAGS)


def write_config(config: config_lib.DeepConfig) -> None:
  """Checks that the log directory takes this run; writes its ``config.json``."""
  check_resumable(config)
  os.makedirs(config.logdir, exist_ok=True)
  results.write_json(os.path.join(config.logdir, results.CONFIG_FILE),
                     dict(config.config_record))


def start_envs(level_set: level_sets.LevelSet, config: config_lib.DeepConfig,
               specs: Sequence[tuple[int, int, str]]) -> list:
  """``envs.batch.start_envs`` with the trainer's settings."""
  return batch_lib.start_envs(level_set, specs, config.env_processes,
                              config.env_niceness)


def make_env_batches(config: config_lib.DeepConfig, level_set: level_sets.LevelSet
                     ) -> list[tuple[object, list[int]]]:
  """``envs.batch.make_env_batches`` with the trainer's settings."""
  return batch_lib.make_env_batches(level_set, config.seed, config.workers_per_task,
                                    config.actor_threads, config.env_processes,
                                    config.env_niceness)


def restore(config: config_lib.DeepConfig, level_set: level_sets.LevelSet,
            learner) -> checkpointing.TrainingState:
  """Resumes from the log directory's checkpoint, or loads the prior pi_0."""
  network = learner.network
  state = checkpointing.TrainingState(learner, len(level_set.tasks))
  state.restore_or_initialize(config.logdir)
  if config.prior_logdir and not state.restored:
    checkpointing.load_prior(network, config.prior_logdir)
  if config.prior_logdir:
    learner.freeze_prior()
  if state.restored:
    print(f'Resuming from {state.manager.latest_checkpoint}: '
          f'{int(learner.steps_done.numpy())} agent steps, frames per task '
          f'{state.frames.numpy().tolist()}', flush=True)
  removed = results.truncate_episodes(
      config.logdir, dict(zip(level_set.task_names, state.frames.numpy().tolist())))
  if removed:
    print(f'Resuming: dropped {removed} episodes recorded after the checkpoint.',
          flush=True)
  return state


def observation_spec(config: config_lib.DeepConfig, level_set: level_sets.LevelSet):
  """The level set's observation spec, read from one environment started for it."""
  env, = start_envs(level_set, config, [(0, batch_lib.env_seed(config.seed, 0, 0),
                                         f'{level_set.tasks[0].name}/spec')])
  try:
    return env.observation_spec()
  finally:
    env.close()


def make_actors(config: config_lib.DeepConfig, level_set: level_sets.LevelSet,
                env_batches, network, progress: actor_lib.Progress, recorder,
                unroll_queue: queue.Queue) -> list[actor_lib.Actor]:
  """One ``actor.Actor`` per entry of ``env_batches``, acting with ``network``."""
  num_tasks = len(level_set.tasks)
  actors = []
  for env_batch, tasks in env_batches:
    sizes = [tasks.count(task) for task in range(num_tasks)]
    actors.append(actor_lib.Actor(
        env_batch, tasks, num_tasks, network, actor_lib.make_act_fn(network, sizes),
        progress, recorder, config.unroll_length, level_set.frames_per_step,
        unroll_queue))
  return actors


def make_workers(config: config_lib.DeepConfig, setup: Setup, env_batches, network,
                 learner, progress: actor_lib.Progress,
                 recorder: actor_lib.EpisodeRecorder, next_eval: int,
                 learner_threads: int, unroll_queue: queue.Queue | None = None,
                 remote_actors: Sequence = (),
                 before_evaluation: Callable[[], None] | None = None) -> tuple[list, list]:
  """Actor threads, learner threads and (for distilled algorithms) the evaluator.

  ``env_batches`` as ``make_env_batches`` returns, one actor thread each;
  ``network`` is the one the actors and the evaluator act with; ``learner``
  anything with ``train_step(task_sizes, batch)``. ``remote_actors`` (with
  ``run(stop)``, ``done`` and ``error``) feed ``unroll_queue`` from elsewhere
  (the cluster's actor hosts); the learner threads run until they and the
  actors are done. ``before_evaluation``: the evaluator's (``Evaluator``). Returns the workers and the evaluator's environments (to
  close).
  """
  level_set = setup.level_set
  if unroll_queue is None:
    unroll_queue = queue.Queue(maxsize=2 * config.actor_threads)
  workers, eval_envs = list(remote_actors), []
  workers += make_actors(config, level_set, env_batches, network, progress, recorder,
                         unroll_queue)
  actors = list(workers)
  actors_done = lambda: all(a.done for a in actors)
  for _ in range(learner_threads):
    workers.append(actor_lib.LearnerThread(learner, unroll_queue, progress, actors_done,
                                           config.max_policy_lag))
  if setup.algorithm.distilled:
    interval = config.eval_interval or max(config.env_steps_per_task // 20, 1)
    eval_envs = start_envs(level_set, config, [
        (t, batch_lib.env_seed(config.seed, t, 10_000), f'{task.name}/eval')
        for t, task in enumerate(level_set.tasks)])
    workers.append(evaluator_lib.Evaluator(
        eval_envs, actor_lib.make_pi0_act_fn(network), network, progress, recorder,
        interval, config.eval_episodes, next_eval, level_set.frames_per_step,
        config.eval_share, before_evaluation))
  return workers, eval_envs
