r"""Throughput benchmark: training frames/s against environment-only frames/s.

  python -m distral_tf.bench --level_set=miniworld --num_tasks=4
  python -m distral_tf.bench --level_set=minigrid --num_tasks=2 --workers_per_task=32
  python -m distral_tf.bench --level_set=two_rooms --bench_network

Measured in one run on the same cores, with the same number of environment
processes (and the same ``--env_niceness``): (1) environment-only frames/s,
every environment stepped with random actions in parallel, nothing else
running; (2) training frames/s of the deep trainer (``--algorithm``, default
KL+ent_2col) after start-up: from the first progress line (after
``--bench_warmup_seconds``) at which every environment has stepped, without
evaluations of pi_0 (``--eval_share=0``: they cost at most that share of the
frames in a run). The measurements
alternate, environment-only first and last, ``--bench_rounds`` training ones
between them, because a shared machine's speed drifts by 10-20% from one
half-minute to the next. Flags not given take the trainer's defaults for the
level set (e.g. 8 workers per task). Then where the CPU went while training,
in milliseconds of CPU per training frame by part of the trainer
(``agents/cpu_use.py``: environment step and render, moving observations
between processes, inference, learning, the actors' bookkeeping, the
evaluator, the main thread, TensorFlow's threads, idle cores), the mean of
the rounds, and the speed the environments and the network alone would allow
on these cores. With environment processes, every environment-only
measurement is followed by one of the same processes each stepped on its
own, nobody waiting for the slowest (the lock step of the first is how an
actor steps them); the line before the last compares training with those.
The last line is ``ratio: X`` = mean training / mean environment-only
frames/s (lock step). With ``--bench_network`` it times the network
alone: one batched inference step of all environments and one learner step on
an unroll of them (``network_ms``).
"""

from __future__ import annotations

import math
import multiprocessing.connection
import os
import tempfile
import threading
import time

import numpy as np
from absl import app
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf.agents import config as config_lib
from distral_tf.agents import cpu_use
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets
from distral_tf.envs import process

flags.DEFINE_float('bench_seconds', 30.0, 'Seconds of each measurement.')
flags.DEFINE_integer('bench_rounds', 2,
                     'Training measurements; each lies between two environment-only ones.')
flags.DEFINE_float('bench_warmup_seconds', 20.0,
                   'Seconds of training start-up (tracing) excluded from the measurement.')
flags.DEFINE_boolean('bench_network', False,
                     'Measure the network alone instead: milliseconds of one batched '
                     'inference step of all environments and of one learner step on an '
                     'unroll of them, on zero observations, --bench_rounds times.')
FLAGS = flags.FLAGS
NEVER = 10**12  # A budget (frames per task) that no measurement reaches.


def env_only_fps(level_set: level_sets.LevelSet, workers_per_task: int, seed: int,
                 seconds: float, use_processes: bool = True, niceness: int = 0,
                 actor_threads: int = 1, independent: bool = False
                 ) -> tuple[float, dict[str, float]]:
  """Frames/s of all environments stepped with uniform random actions.

  The same batches as the trainer's actor threads (``envs.batch``), stepped
  one after another here: processes step in parallel, in lock step as an
  actor steps them (every one sent its action, then every answer awaited);
  an in-process batch (the grid world) in numpy, environments without
  processes one by one. ``independent`` (processes only): each environment
  is sent its next action as soon as it answers, nobody waiting for the
  slowest: the environments' own speed on these cores. Also returns where
  the CPU went (``cpu_use.breakdown``; the stepping loop is the main thread).
  """
  batches = []
  try:
    batches = batch_lib.make_env_batches(level_set, seed, workers_per_task, actor_threads,
                                         use_processes, niceness)
    sizes = [len(batch.reset()) for batch, _ in batches]
    accounting = cpu_use.Accounting(
        [], [], [env for batch, _ in batches for env in getattr(batch, 'envs', [])], [],
        None, threading.get_native_id())
    rng = np.random.default_rng(seed)
    steps = 0
    before = accounting.snapshot()
    start = time.time()
    if independent:
      envs = [env for batch, _ in batches for env in batch.envs]
      steps = _step_independently(envs, level_set.num_actions, rng, seconds)
    else:
      while time.time() - start < seconds:
        for (batch, _), n in zip(batches, sizes):
          batch.step(rng.integers(level_set.num_actions, size=n))
          steps += n
    elapsed = time.time() - start
    frames = steps * level_set.frames_per_step
    return frames / elapsed, cpu_use.breakdown(before, accounting.snapshot(), frames)
  finally:
    for batch, _ in batches:
      batch.close()


def _step_independently(envs: list, num_actions: int, rng: np.random.Generator,
                        seconds: float) -> int:
  """Steps every environment process on its own for ``seconds``; returns the steps.

  A finished episode is reset before the environment's next step; the steps
  in flight at the end are collected outside the time. Should none answer
  within the step timeout, the first is received: ``EnvProcess.receive``
  restarts a hung process.
  """
  for env in envs:
    env.send_step(int(rng.integers(num_actions)))
  steps, start = 0, time.time()
  while time.time() - start < seconds:
    answered = multiprocessing.connection.wait(envs, timeout=process.STEP_TIMEOUT_SECS)
    for env in answered or envs[:1]:
      if env.receive().last():
        env.reset()
      env.send_step(int(rng.integers(num_actions)))
      steps += 1
  for env in envs:
    env.receive()
  return steps


def env_cpu_line(ms_per_frame: dict[str, float]) -> str:
  """Where environment-only stepping spent the cores, in ms per frame."""
  parts = ((cpu_use.ENV_STEP, 'step and render'), (cpu_use.ENV_IPC, 'their processes\' IPC'),
           (cpu_use.MAIN, 'stepping loop'), (cpu_use.IDLE, 'idle'))
  return ', '.join(f'{ms_per_frame.get(k, 0.0):.3f} {name}' for k, name in parts)


def training_fps(argv: list[str], seconds: float, warmup: float) -> dict:
  """Runs the deep trainer for ``warmup + seconds`` and returns its summary.

  Its steady frames/s count from the first progress line (one every
  ``warmup`` seconds) at which every environment has stepped.

  Raises:
    errors.UsageError: no such line came before the end of the run, or no
      training frame after it (the learner still starting up).
  """
  with tempfile.TemporaryDirectory() as logdir:
    # pi_0 is never evaluated: evaluations are only due at the end (share 0).
    summary = cli.run_from_args(argv + [
        f'--logdir={logdir}', f'--env_steps_per_task={NEVER}', '--eval_share=0',
        f'--max_seconds={warmup + seconds}', f'--log_interval_secs={warmup}',
        f'--checkpoint_secs={10 * (warmup + seconds)}'])
  fps = summary['steady_frames_per_second']
  if not math.isfinite(fps):
    raise errors.UsageError(
        f'no steady window: the environments were not all stepping at a progress line '
        f'(one every --bench_warmup_seconds={warmup:g}) before the run ended at '
        f'{warmup + seconds:g} s; raise --bench_warmup_seconds or --bench_seconds')
  if fps <= 0:
    raise errors.UsageError(
        f'no steady window: training made no frames between its first progress line '
        f'with every environment stepping and the end of the run at {warmup + seconds:g} s '
        f'(still starting up); raise --bench_warmup_seconds or --bench_seconds')
  return summary


def network_ms(config: config_lib.DeepConfig, seconds: float) -> tuple[float, float]:
  """Milliseconds of one inference step and of one learner step, network alone.

  The trainer's network and learner for ``config`` (all its tasks, its
  workers per task and unroll length), fed zero observations of the level
  set's shape, half of ``seconds`` each after a warm-up call.
  """
  # pylint: disable=g-import-not-at-top
  with cli.native_stderr_hidden():  # TensorFlow's start-up lines.
    import tensorflow as tf
    from distral_tf.agents import actor as actor_lib
    from distral_tf.agents import builders
    from distral_tf.agents import learner as learner_lib
  # pylint: enable=g-import-not-at-top
  setup = builders.make_setup(config)
  probe = batch_lib.make_env_batches(setup.level_set, config.seed, 1, 1,
                                     config.env_processes, config.env_niceness)
  try:
    spec = probe[0][0].observation_spec()
  finally:
    for batch, _ in probe:
      batch.close()
  learner = builders.build_agent(config, setup, spec)
  network = learner.network
  sizes = (config.workers_per_task,) * len(setup.level_set.tasks)
  n, steps = sum(sizes), config.unroll_length
  act = actor_lib.make_act_fn(network, sizes)
  observations = tf.zeros((n, *spec.shape), spec.dtype)
  first = tf.zeros([n], tf.bool)
  state = network.initial_state(n)
  batch = learner_lib.Unroll(
      observations=tf.zeros((steps + 1, n, *spec.shape), spec.dtype),
      first=tf.zeros((steps + 1, n), tf.bool),
      actions=tf.zeros((steps, n), tf.int32), rewards=tf.zeros((steps, n)),
      discounts=tf.ones((steps, n)), initial_state=state,
      behaviour_logits=tf.zeros((steps, n, setup.level_set.num_actions)),
      final_values=tf.zeros((steps, n)))

  def per_call_ms(call) -> float:
    call()  # Traces.
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
      call()
      calls += 1
    return 1e3 * (time.perf_counter() - start) / calls

  inference = per_call_ms(lambda: act(observations, first, state)[0].numpy())
  update = per_call_ms(lambda: float(learner.train_step(sizes, batch)['total']))
  return inference, update


def print_breakdown(breakdowns: list[dict[str, float]], env_fps: float) -> None:
  """The mean CPU breakdown of the training rounds, and what it allows.

  The limit counts only what training cannot do without: the environments'
  own step and render, and the network's work (TensorFlow's threads and the
  inference and gradient-step calls); on these cores, fully used, those alone
  would allow ``cores / (their ms per frame)`` frames/s.
  """
  parts = sorted({k for b in breakdowns for k in b})
  if not parts:
    return
  mean = {k: float(np.mean([b.get(k, 0.0) for b in breakdowns])) for k in parts}
  print(f'CPU per training frame, mean of {len(breakdowns)} rounds:')
  print('\n'.join(cpu_use.format_table(mean)))
  needed = sum(mean.get(k, 0.0) for k in (cpu_use.ENV_STEP, cpu_use.TF_THREADS,
                                           cpu_use.INFERENCE, cpu_use.LEARNING))
  cores = os.cpu_count() or 1
  if needed > 0:
    limit = 1e3 * cores / needed
    print(f'environments (step and render) and network alone: {needed:.3f} ms per frame; '
          f'on {cores} cores at most {limit:,.0f} frames/s (ratio {limit / env_fps:.3f})')


def main(argv):
  del argv
  fv = FLAGS
  if fv.algorithm in cli.TABULAR_ALGORITHMS:
    raise errors.UsageError('the benchmark measures the deep trainer; choose one of: '
                            + ', '.join(cli.DEEP_ALGORITHMS))
  if fv.bench_rounds < 1:
    raise errors.UsageError(f'--bench_rounds must be >= 1, got {fv.bench_rounds}')
  config, _ = config_lib.from_flags(fv)  # The trainer's defaults for the level set.
  level_set = level_sets.make_level_set(config.level_set, config.num_tasks, config.seed,
                                        config.config_record)
  level_set.check_env_processes(config.env_processes)
  n_envs = len(level_set.tasks) * config.workers_per_task
  if config.env_processes:
    where = 'environment processes'
  elif level_set.make_batch is not None:
    where = 'environments stepped in one numpy batch'
  else:
    where = 'environments stepped in the actor threads'
  print(f'{level_set.name}: {len(level_set.tasks)} tasks x {config.workers_per_task} '
        f'workers = {n_envs} {where}', flush=True)
  if fv.bench_network:
    timings = []
    for r in range(fv.bench_rounds):
      timings.append(network_ms(config, fv.bench_seconds))
      print(f'round {r + 1}: inference {timings[-1][0]:.2f} ms per step of {n_envs} '
            f'environments, learner {timings[-1][1]:.1f} ms per unroll of '
            f'{config.unroll_length} steps', flush=True)
    inference, update = np.mean(timings, axis=0)
    print(f'mean inference ms: {inference:.2f}\nmean learner ms: {update:.1f}')
    return
  measure_envs = lambda independent=False: env_only_fps(
      level_set, config.workers_per_task, config.seed, fv.bench_seconds,
      config.env_processes, config.env_niceness, config.actor_threads, independent)
  argv = [f'--level_set={config.level_set}', f'--algorithm={config.algorithm}',
          f'--seed={config.seed}', f'--workers_per_task={config.workers_per_task}',
          f'--actor_threads={config.actor_threads}',
          f'--learner_threads={config.learner_threads}',
          f'--unroll_length={config.unroll_length}', f'--tf_threads={config.tf_threads}',
          f'--env_niceness={config.env_niceness}',
          f'--env_processes={str(config.env_processes).lower()}',
          f'--lstm_skip={str(config.lstm_skip).lower()}']
  if fv.num_tasks:
    argv.append(f'--num_tasks={fv.num_tasks}')
  env_rates, own_rates = [], []

  def measure_envs_and_report() -> None:
    fps, cpu = measure_envs()
    env_rates.append(fps)
    print(f'environment-only frames/s: {fps:,.0f}  (ms of CPU per frame: '
          f'{env_cpu_line(cpu)})', flush=True)
    if config.env_processes:
      fps, cpu = measure_envs(independent=True)
      own_rates.append(fps)
      print(f'  each environment stepped on its own: {fps:,.0f}  (ms of CPU per frame: '
            f'{env_cpu_line(cpu)})', flush=True)

  measure_envs_and_report()
  train_rates, breakdowns = [], []
  for r in range(fv.bench_rounds):
    summary = training_fps(argv, fv.bench_seconds, fv.bench_warmup_seconds)
    train_rates.append(summary['steady_frames_per_second'])
    breakdowns.append(summary['cpu_ms_per_frame'])
    print(f'round {r + 1}: training frames/s ({fv.algorithm}): {train_rates[-1]:,.0f}  '
          f'(mean policy lag {summary["mean_policy_lag"]:.2f} updates)', flush=True)
    measure_envs_and_report()
    print(f'round {r + 1} ratio {train_rates[-1] / np.mean(env_rates[-2:]):.3f}', flush=True)
  # The machine's speed drifts: every training measurement lies between two
  # environment-only ones, and the ratio compares the means of all of them.
  env_fps, train_fps = float(np.mean(env_rates)), float(np.mean(train_rates))
  print_breakdown(breakdowns, env_fps)
  print(f'mean environment-only frames/s: {env_fps:,.0f}  '
        f'(range {min(env_rates):,.0f}-{max(env_rates):,.0f})')
  print(f'mean training frames/s ({fv.algorithm}): {train_fps:,.0f}')
  if own_rates:
    own_fps = float(np.mean(own_rates))
    print(f'mean environment-only frames/s, each environment stepped on its own: '
          f'{own_fps:,.0f}; training / that: {train_fps / own_fps:.3f}')
  print(f'ratio: {train_fps / env_fps:.3f}')


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's start-up lines.
  app.run(errors.exit_on_usage_error(main), flags_parser=cli.parse_flags)
