"""The local asynchronous trainer of the seven deep algorithms (one machine).

``run`` builds the level set, the network and the learner (``builders``),
starts ``--workers_per_task`` environments per task (each in its own process),
runs actor threads that act and apply asynchronous updates (``actor.Actor``)
and an evaluator of pi_0, and watches them in the main thread with
``run_loop.RunLoop``: progress lines, TensorBoard summaries and checkpoints.
Running the same command again resumes from the last checkpoint (weights,
RMSProp statistics, step counters and the learning-rate schedule); Ctrl-C
saves a checkpoint before leaving. The cluster trainer is
``distributed/cluster.py``; ``cli`` chooses between them.
"""

from __future__ import annotations

import sys
import threading

import tensorflow as tf

from distral_tf import interruption
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import builders
from distral_tf.agents import config as config_lib
from distral_tf.agents import evaluator as evaluator_lib
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import run_loop


def run(config: config_lib.DeepConfig) -> dict:
  """Trains the deep algorithm ``config`` selects on this machine; returns the summary."""
  setup = builders.make_setup(config)
  builders.write_config(config)
  tf.random.set_seed(config.seed)
  with interruption.signals_as_interrupt():
    try:
      return _train(config, setup)
    except KeyboardInterrupt:  # During start-up: nothing new to save.
      print(f'Stopped during start-up; {config.logdir} is as it was. Run the same '
            'command to start again.', file=sys.stderr, flush=True)
      sys.exit(interruption.exit_status())


def _train(config: config_lib.DeepConfig, setup: builders.Setup) -> dict:
  """Builds the environments, agent and workers; trains; closes the environments."""
  level_set = setup.level_set
  env_batches, eval_envs = [], []
  try:
    env_batches = builders.make_env_batches(config, level_set)
    learner = builders.build_agent(config, setup, env_batches[0][0].observation_spec())
    state = builders.restore(config, level_set, learner)
    loop = run_loop.RunLoop(config, level_set.name, level_set.task_names,
                            state.frames.numpy(), float(state.wall_time.numpy()))
    workers, eval_envs = builders.make_workers(
        config, setup, env_batches, learner.network, learner, loop.progress,
        loop.recorder, int(state.next_eval.numpy()), config.learner_threads)
    return _run_workers(config, learner, state, loop, workers, threading.Event())
  finally:
    with interruption.deferred():
      for env_batch, _ in env_batches:
        env_batch.close()
      for env in eval_envs:
        env.close()


def _run_workers(config: config_lib.DeepConfig, learner: learner_lib.Learner, state,
                 loop: run_loop.RunLoop, workers: list, stop: threading.Event) -> dict:
  """Runs the workers to the end of the run; saves, summarises, exits if stopped.

  A diverged run exits with status 1 and one line, saving nothing; Ctrl-C
  (SIGTERM) saves a checkpoint and exits with ``interruption.exit_status()``.
  """
  threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
  loop.start_clock()
  loop.announce(config.workers_per_task)
  for th in threads:
    th.start()
  actors = [w for w in workers if isinstance(w, actor_lib.Actor)]
  save = lambda wall_time: _save(state, learner, loop.progress, workers, wall_time)
  # Throughput from the first progress line at which every environment has
  # stepped: start-up (environments, tracing) is over.
  interrupted = loop.train(workers, threads, stop, learner, save,
                           steady=lambda: all(a.stepped for a in actors))
  with interruption.deferred():  # A second signal cannot cut the saving short.
    stop.set()
    for th in threads:
      th.join()
    errors_seen = [w.error for w in workers if w.error is not None]
    diverged = [e for e in errors_seen if isinstance(e, learner_lib.Diverged)]
    if not diverged:
      try:
        save(loop.wall_time())
      except learner_lib.Diverged as e:
        diverged = [e]
    loop.recorder.flush()
    loop.writer.close()
  if diverged:
    print(f'error: {diverged[0]}', file=sys.stderr, flush=True)
    sys.exit(1)
  if errors_seen:
    raise errors_seen[0]
  summary = loop.finish(interrupted,
                        extra=dict(resumed_from_env_steps=loop.resumed_from,
                                   **learner.cost_summary(loop.progress.task_names)))
  if interrupted:
    run_loop.exit_interrupted(config.logdir, interruption.exit_status())
  return summary


def _save(state, learner, progress, workers, wall_time: float) -> None:
  """Checkpoints the run; refuses (``Diverged``) weights that are not finite."""
  learner_lib.check_finite_weights(learner.network.trainable_variables)
  evaluators = [w for w in workers if isinstance(w, evaluator_lib.Evaluator)]
  with progress.lock:
    frames = progress.frames.copy()
  next_eval = evaluators[0].next_eval if evaluators else 0
  state.save(frames, next_eval, wall_time)
