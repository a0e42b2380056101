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

import tensorflow as tf

from distral_tf import errors
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


def run(config: config_lib.DeepConfig) -> dict:
  """Trains (or serves) in cluster mode: ``cli``'s choice when ``--cluster`` is set.

  A lost ps task ends the process with ``CLUSTER_FAILURE_EXIT_CODE`` once the
  launcher's servers are stopped; the TensorFlow runtime is not finalised then
  (it would wait on the lost task).
  """
  setup = builders.make_setup(config)
  try:
    summary, interrupted = _run(config, setup)
  except trainer_lib.ClusterFailure as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(CLUSTER_FAILURE_EXIT_CODE)  # pylint: disable=protected-access
  if interrupted:
    run_loop.exit_interrupted(config.logdir, 130)
  return summary


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
  topology.wait_reachable(cluster, cluster.server_roles(), _connect_timeout())
  strategy, coordinator = remote.connect(cluster)
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
