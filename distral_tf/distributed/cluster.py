"""Cluster mode of the deep trainer: ``--cluster=local:ps=N,workers=M`` or ``tf_config``.

The same run as the local trainer (``agents/train.py``) with TensorFlow's
parameter-server engine:

* every variable (all columns, pi_0, value heads, the RMSProp slots, the
  learning rate and the step counter) lives on the ps tasks, so all workers
  share one copy of the parameters and of the optimiser statistics;
* every worker host runs its share of the environments and the actors
  (``actor.Actor``, unchanged) on a copy of the policy it takes from the chief
  (``actor_host``); the chief keeps its own copy refreshed from the ps tasks
  (``remote.PolicyMirror``), takes the unrolls (``actor_service``) and makes
  each one gradient step scheduled on a free worker by the
  ``ClusterCoordinator`` (``trainer.ClusterTrainer``);
* the chief writes the log directory exactly as a local run does
  (``episodes.csv``, summaries, checkpoints, ``summary.json``) plus
  ``cluster.json`` (addresses, processes, variable placement, steps per
  worker), and resumes from the last checkpoint when run again.

A worker that dies costs nothing but time: the coordinator reruns its steps on
the other workers and takes it back when it returns (the loopback launcher
restarts it). A ps task or the chief that dies ends the run; running the same
command again resumes from the last checkpoint. That exit has status
``CLUSTER_FAILURE_EXIT_CODE`` (EX_TEMPFAIL: "try again"), which supervisors
such as Kubernetes or Slurm can use to restart the job.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from typing import NoReturn

import tensorflow as tf
from absl import logging

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.agents import builders
from distral_tf.agents import config as config_lib
from distral_tf.agents import run_loop
from distral_tf.distributed import local_cluster
from distral_tf.distributed import remote
from distral_tf.distributed import topology
from distral_tf.distributed import trainer as trainer_lib

SERVER_LOG_DIR = 'cluster'
# How long the chief waits for every ps and worker server to accept connections;
# the environment variable overrides it (hosts of a cluster start in any order).
CONNECT_TIMEOUT_ENV = 'DISTRAL_CONNECT_TIMEOUT_SECS'
CONNECT_TIMEOUT_SECS = 300.0
CLUSTER_FAILURE_EXIT_CODE = 75
# The coordinator of this process's run, kept for the process's life: its
# destructor waits for every lost worker to come back (``_leave``), so it must
# never run, not even in a garbage collection.
_CONNECTED: list = []


def run(config: config_lib.DeepConfig) -> dict:
  """Trains (or serves) in cluster mode: ``cli``'s choice when ``--cluster`` is set.

  Once the chief has connected to the cluster, the process ends here, the
  launcher's servers stopped, without finalising the TensorFlow runtime
  (``_leave``): status 0 after the run's table, 130 after Ctrl-C (a checkpoint
  saved), ``CLUSTER_FAILURE_EXIT_CODE`` when a ps task was lost, 2 after a
  ``errors.UsageError`` (one line) and 1 after any other error (its traceback).
  """
  setup = builders.make_setup(config)
  try:
    summary, interrupted = _run(config, setup)
  except trainer_lib.ClusterFailure as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    _leave(config, CLUSTER_FAILURE_EXIT_CODE)
  except errors.UsageError as e:  # As ``errors.exit_on_usage_error`` reports it.
    print(f'error: {e}', file=sys.stderr, flush=True)
    _leave(config, errors.USAGE_EXIT_CODE)
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    _leave(config, 1)
  if not summary:  # A ps or worker task's server (``tf_config``) ended on its own.
    return summary
  if interrupted:
    try:
      run_loop.exit_interrupted(config.logdir, 130)
    except SystemExit as e:  # Its line is printed; the exit is ours.
      _leave(config, int(e.code))
  _leave(config, 0)


def _leave(config: config_lib.DeepConfig, status: int) -> NoReturn:
  """Ends the chief's process at once, its output flushed, with ``status``.

  Finalising the runtime can wait forever once a task is gone: when a worker
  is lost (killed for good, or stopped by the launcher before the
  coordinator took its restart back), the coordinator's failure-handling
  thread holds its lock while it waits for that worker to answer, and the
  coordinator's destructor, run as the interpreter exits (or when a garbage
  collection frees it: ``_CONNECTED`` keeps it), waits for that lock.
  Everything the run writes is closed or flushed by then (episodes, summary,
  checkpoint; the TensorBoard writer is closed when the run loop returns).
  """
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  run_dir.release(config.logdir)
  os._exit(status)  # pylint: disable=protected-access


def _run(config: config_lib.DeepConfig,
         setup: builders.Setup) -> tuple[dict, bool]:
  """Serves (ps, worker) or trains (chief); returns the summary and Ctrl-C."""
  target = topology.parse_cluster_flag(config.cluster)
  if target == 'tf_config':
    cluster, role = topology.read_tf_config()
    if role.job != 'chief':
      from distral_tf.distributed import server  # pylint: disable=g-import-not-at-top
      server.serve(cluster, role)
      return {}, False
    return _run_chief(config, setup, cluster, None)
  builders.check_resumable(config)
  launcher = local_cluster.LocalCluster(
      target, os.path.join(config.logdir, SERVER_LOG_DIR),
      on_event=lambda message: print(message, file=sys.stderr, flush=True))
  try:
    print(f'Starting {target.num_ps} ps and {target.num_workers} worker servers on '
          'loopback...', flush=True)
    cluster = launcher.start()
    return _run_chief(config, setup, cluster, launcher)
  finally:
    # Functions registered on the servers are released while they still run.
    gc.collect()
    launcher.stop()


def _run_chief(config: config_lib.DeepConfig, setup: builders.Setup, cluster,
               launcher) -> tuple[dict, bool]:
  builders.write_config(config)
  topology.wait_reachable(cluster, cluster.server_roles(), _connect_timeout(),
                          report=lambda line: print(line, flush=True))
  strategy, coordinator = remote.connect(cluster)
  _CONNECTED.append(coordinator)
  tf.random.set_seed(config.seed)
  trainer = trainer_lib.ClusterTrainer(config, setup, cluster, strategy, coordinator,
                                       launcher)
  try:
    trainer.setup()
    summary = trainer.train()
  finally:
    trainer.close()
  return summary, trainer.interrupted


def _connect_timeout() -> float:
  value = os.environ.get(CONNECT_TIMEOUT_ENV, '')
  if not value:
    return CONNECT_TIMEOUT_SECS
  try:
    seconds = float(value)
  except ValueError:
    seconds = -1.0
  if not seconds > 0:
    raise errors.UsageError(f'{CONNECT_TIMEOUT_ENV} must be a number of seconds > 0, '
                            f'got {value!r}')
  return seconds
