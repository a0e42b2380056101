"""TensorFlow's side of cluster mode: strategy, remote gradient steps, policy copy.

* ``connect`` makes this process the chief of a ``ParameterServerStrategy``:
  variables created in ``strategy.scope()`` live on the ps tasks (large ones
  split over several ps tasks by a ``MinSizePartitioner``), and a
  ``ClusterCoordinator`` runs scheduled functions on the workers, rescheduling
  a function whose worker fails.
* ``StepScheduler`` compiles ``Learner.gradients`` + ``Learner.apply`` (that
  is, ``Learner.update``) once per actor block of tasks inside ``strategy.run`` and schedules
  it: the worker reads the task's variables from the ps tasks once, computes
  the gradient and sends it back, where the one shared RMSProp optimiser (its
  slots colocated with the variables) applies it.
  ``StepScheduler.train_step`` has ``Learner.train_step``'s interface, so the
  local trainer's ``actor.LearnerThread``s drive it unchanged: each thread
  keeps one step in flight on the cluster.
* ``PolicyMirror`` is the chief's local copy of the network, refreshed from
  the ps tasks, which the chief's evaluator acts with and the actor hosts copy
  (``actor_service``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from absl import logging
# No public API caches reads of parameter-server variables within a step.
from tensorflow.python.distribute import distribute_utils  # pylint: disable=g-direct-tensorflow-import

from distral_tf import errors
from distral_tf.agents import learner as learner_lib
from distral_tf.distributed import topology

# Variables of at least this size are split over the ps tasks (when several).
SHARD_MIN_BYTES = 256 << 10
# Seconds between refreshes of the chief's copy of the policy (and between the
# actor hosts' looks at its number).
REFRESH_SECS = 0.5
# How long a step's result is awaited after its worker was lost (as TensorFlow's
# coordinator waits for a worker to come back), and how often it is retried.
WORKER_RECOVERY_SECS = 3600.0
FETCH_RETRY_SECS = 0.5

_ShardedVariable = tf.__internal__.distribute.ShardedVariable


def connect(cluster: topology.ClusterDef):
  """Makes this process the cluster's chief; returns ``(strategy, coordinator)``."""
  topology.check_port_free(cluster.chief, 'the chief')
  topology.check_port_free(topology.actor_address(cluster),
                           "the chief's service to the actor hosts")
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster.as_dict()), task_type='chief', task_id=0,
      rpc_layer='grpc')
  partitioner = None
  if len(cluster.ps) > 1:
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=SHARD_MIN_BYTES, max_shards=len(cluster.ps))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # Not the whole server configuration.
  try:
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  except (tf.errors.OpError, ValueError) as e:
    raise errors.UsageError(
        f'cannot connect to the cluster {cluster.as_dict()}: {first_line(e)}') from None
  finally:
    logging.set_verbosity(verbosity)
  return strategy, coordinator


def first_line(e: BaseException) -> str:
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  return lines[0] if lines else type(e).__name__


def is_cluster_failure(e: BaseException) -> bool:
  """Whether ``e`` means a task of the cluster is gone (not a bug in the step)."""
  if type(e).__name__ in ('PSUnavailableError', 'ClosureAbortedError'):
    return True
  return isinstance(e, (tf.errors.UnavailableError, tf.errors.AbortedError,
                        tf.errors.CancelledError, tf.errors.DeadlineExceededError))


def _worker_lost(e: BaseException) -> bool:
  """Whether ``e`` is a worker (not a ps) that disappeared or restarted."""
  text = str(e)
  if '/job:worker' not in text or '/job:ps' in text:
    return False
  if isinstance(e, (tf.errors.UnavailableError, tf.errors.AbortedError)):
    return True
  return isinstance(e, tf.errors.InvalidArgumentError) and (
      'remote_handle' in text or 'context_id' in text)


def _worker_ids(coordinator, num_workers: int):
  """Each worker's own index, as a per-worker value rebuilt when it restarts.

  Used to count which worker ran each step. The coordinator has no public way
  to give a worker its index, so each worker's value is created through the
  coordinator's per-worker resources (which it recreates after a restart).
  """
  workers = coordinator._cluster.workers  # pylint: disable=protected-access
  assert len(workers) == num_workers
  values = []
  for i, worker in enumerate(workers):
    fn = tf.function(functools.partial(tf.constant, i, tf.int32))
    values.append(worker.create_resource(fn))
  return tf.distribute.experimental.coordinator.PerWorkerValues(tuple(values))


class StepScheduler:
  """Schedules ``learner.update`` of an unroll on whichever worker is free.

  ``paused()`` holds new steps back and waits for those in flight, so that a
  checkpoint taken inside it is consistent: the variables on the ps tasks then
  reflect exactly the ``trained_steps`` counted here.
  """

  def __init__(self, learner: learner_lib.Learner, strategy, coordinator,
               num_workers: int, num_tasks: int):
    self._learner = learner
    self._strategy = strategy
    self._coordinator = coordinator
    self._worker_ids = _worker_ids(coordinator, num_workers)
    # Task sizes -> (step function, names of the metrics it returns packed).
    self._steps: dict[tuple[int, ...], tuple[Callable, list[str]]] = {}
    self._lock = threading.Lock()
    self._trace_lock = threading.Lock()
    self._cached_variables = [v for v in learner.network.variables
                              if hasattr(v, '_cache')]
    self._gate = threading.Condition()
    self._paused = False
    self._in_flight = 0
    self.steps_per_worker = np.zeros(num_workers, np.int64)
    self._steps_at_restart = np.zeros(num_workers, np.int64)
    # Agent steps (time steps x batch) of the completed gradient steps, per task.
    self.trained_steps = np.zeros(num_tasks, np.int64)

  def _step_fn(self, task_sizes: tuple[int, ...]) -> tuple[Callable, list[str]]:
    """The scheduled step and the names of its metrics (known once it is traced).

    The step returns its metrics and the worker's id packed in one float32
    vector: the coordinator copies every output tensor of a step to the
    chief separately, so one tensor costs one copy instead of one per metric.
    """
    with self._lock:
      if task_sizes not in self._steps:
        learner = self._learner
        names: list[str] = []

        def update(batch):
          with self._read_once():
            grads, variables, metrics = learner.gradients(task_sizes, batch)
          return learner.apply(grads, variables, batch, metrics)

        @functools.partial(tf.function, autograph=False)
        def step(worker_id, batch):
          metrics = self._strategy.run(update, args=(batch,))
          names[:] = sorted(metrics)
          return tf.stack([tf.cast(metrics[k], tf.float32) for k in names] +
                          [tf.cast(worker_id, tf.float32)])

        self._steps[task_sizes] = (step, names)
      return self._steps[task_sizes]

  @contextlib.contextmanager
  def _read_once(self):
    """While tracing: each variable is read from its ps once per step.

    The LSTM reads its weights at every time step; without this, each read
    would fetch them from the ps again. Reads are cached by the strategy's
    variables inside ``cache_variable_reads``; its bookkeeping assumes one
    tracing thread, so traces are serialised here and every cache starts
    empty. The update that follows reads the variables afresh.
    """
    with self._trace_lock:
      for v in self._cached_variables:
        v._cache = None  # pylint: disable=protected-access
      with distribute_utils.cache_variable_reads():
        yield

  def train_step(self, task_sizes: tuple[int, ...],
                 batch: learner_lib.Unroll) -> dict[str, float]:
    """``Learner.train_step`` run on a worker: schedules it, waits, returns metrics."""
    with self._gate:
      while self._paused:
        self._gate.wait()
      self._in_flight += 1
    try:
      task_sizes = tuple(int(n) for n in task_sizes)
      step, names = self._step_fn(task_sizes)
      remote_value = self._coordinator.schedule(step, args=(self._worker_ids, batch))
      values = np.asarray(self._fetch(remote_value)).tolist()
      worker = int(values[-1])
      with self._lock:
        self.steps_per_worker[worker] += 1
        self.trained_steps += np.asarray(task_sizes) * int(batch.actions.shape[0])
      return dict(zip(names, values[:-1]))
    finally:
      with self._gate:
        self._in_flight -= 1
        self._gate.notify_all()

  def _fetch(self, remote_value) -> np.ndarray:
    """``remote_value.fetch()``, waiting out a worker lost while returning it.

    A worker can die after it ran a step but before the result reached the
    chief. The coordinator then runs the step again on another worker, but a
    ``fetch`` already under way fails; it is retried until the rerun is done.
    A step that fails for good surfaces through ``coordinator.done()``.
    """
    deadline = time.monotonic() + WORKER_RECOVERY_SECS
    while True:
      try:
        return remote_value.fetch()
      except tf.errors.OpError as e:
        if not _worker_lost(e) or time.monotonic() > deadline:
          raise
        logging.info('A worker was lost while returning a step; waiting for its '
                     'rerun (%s).', first_line(e))
      self._coordinator.done()
      time.sleep(FETCH_RETRY_SECS)

  @contextlib.contextmanager
  def paused(self):
    """No step runs inside: new ones wait, those in flight are finished first."""
    with self._gate:
      self._paused = True
      while self._in_flight:
        self._gate.wait()
    try:
      yield
    finally:
      with self._gate:
        self._paused = False
        self._gate.notify_all()

  def mark_restart(self, worker: int) -> None:
    """Notes that ``worker`` restarted (``steps_since_restart`` counts from here)."""
    with self._lock:
      self._steps_at_restart[worker] = self.steps_per_worker[worker]

  def worker_stats(self) -> dict[str, list[int]]:
    with self._lock:
      return dict(steps=self.steps_per_worker.tolist(),
                  steps_since_restart=(self.steps_per_worker -
                                       self._steps_at_restart).tolist())

  def join(self) -> None:
    """Waits until every scheduled step has run."""
    self._coordinator.join()


def _is_variable(value: Any) -> bool:
  return isinstance(value, (tf.Variable, _ShardedVariable))


def _variables_by_path(module: tf.Module) -> dict[tuple, Any]:
  """Each variable once (a split one whole), keyed by its first attribute path."""
  found, seen = {}, set()
  for path, v in sorted(module._flatten(  # pylint: disable=protected-access
      predicate=_is_variable, with_path=True, expand_composites=False),
                        key=lambda item: (len(item[0]), str(item[0]))):
    if id(v) not in seen:
      seen.add(id(v))
      found[path] = v
  return found


def variables_in_order(module: tf.Module) -> list:
  """Every variable of ``module`` once, in an order equal for equal networks."""
  found = _variables_by_path(module)
  return [found[k] for k in sorted(found, key=str)]


def variable_bytes(variable) -> int:
  return int(np.prod(variable.shape)) * variable.dtype.size


class PolicyMirror:
  """The chief's copy of the network, refreshed from the ps tasks."""

  def __init__(self, source: tf.Module, local: tf.Module):
    src, dst = _variables_by_path(source), _variables_by_path(local)
    if set(src) != set(dst):
      raise ValueError('the local network differs from the cluster\'s: '
                       f'{sorted(set(src) ^ set(dst))[:5]}')
    self._pairs = [(dst[k], src[k]) for k in sorted(src, key=str)]
    for d, s in self._pairs:
      if d.shape != s.shape:
        raise ValueError(f'shape mismatch {d.name} {d.shape} vs {s.shape}')
    self.network = local
    self.num_bytes = sum(variable_bytes(d) for d, _ in self._pairs)
    self.refreshes = 0
    # Updates applied when the copy was taken; told to ``on_refresh``.
    self.version = 0
    self.on_refresh: Callable[[int], None] | None = None
    self._pull = tf.function(self._assign_all)
    self._lock = threading.Lock()

  def _assign_all(self) -> None:
    for dst, src in self._pairs:
      dst.assign(tf.convert_to_tensor(src))

  def refresh(self, version: int = 0) -> None:
    """Copies every variable's current value from the ps tasks.

    ``version``: the number of updates applied before the copy began.
    """
    with self._lock:
      self._pull()
      self.refreshes += 1
      self.version = version
      if self.on_refresh is not None:
        self.on_refresh(version)

  def run(self, stop: threading.Event, changed: Callable[[], int],
          interval: float = REFRESH_SECS) -> None:
    """Refreshes every ``interval`` seconds while ``changed()`` advances."""
    seen = changed()
    while not stop.wait(interval):
      now = changed()
      if now != seen:
        self.refresh(now)
        seen = now


def _devices(value) -> list[str]:
  if isinstance(value, _ShardedVariable):
    return [v.device for v in value.variables]
  return [value.device]


def placement(learner: learner_lib.Learner) -> dict[str, Any]:
  """Where each variable lives: network, optimiser slots, schedule counters."""
  network = {'/'.join(map(str, path)): _devices(v)
             for path, v in _variables_by_path(learner.network).items()}
  slots = {}
  for v in learner.optimizer.variables:
    if isinstance(v, _ShardedVariable):
      slots[v.variables[0].name.replace('/part_0', '')] = _devices(v)
    else:
      slots[v.name] = _devices(v)
  return dict(network=network, optimizer=slots,
              learning_rate=_devices(learner.learning_rate),
              steps_done=_devices(learner.steps_done))
