"""Gradient steps on the workers, each on an unroll its own host acted.

The actor hosts keep their unrolls on their own servers (``host_queue``) and
tell the chief only that one is there (``actor_service``), which files it in
``tickets.Tickets``. The chief's ``StepThread``s claim up to
``UNROLLS_PER_CALL`` tickets and schedule one call through the
``ClusterCoordinator`` (``StepScheduler``). The call runs on whichever worker
the coordinator picks and takes up to that many steps there, one after the
other: each takes the oldest unroll of that shape from that worker's own
queue, computes ``Learner.gradients`` (eqs. (9)-(10), each remote variable
read once) and applies them with the one shared RMSProp on the ps tasks
(``Learner.apply``), then leaves the parameters it read in the worker's
policy queue for its actors if they took the last copy. Each returns a few
numbers: what happened, the policy lag, the unroll it took, the metrics and
the worker's index. A step that finds its worker's queue empty (the ticket's
unroll is on another host) changes nothing; the ticket is claimed again.

So the chief handles per step a schedule, a few dozen numbers and a report;
neither the unroll nor the parameters pass through it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Callable, NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging
# No public API caches reads of parameter-server variables within a step.
from tensorflow.python.distribute import distribute_utils  # pylint: disable=g-direct-tensorflow-import

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import cpu_use
from distral_tf.agents import learner as learner_lib
from distral_tf.distributed import host_queue
from distral_tf.distributed import remote
from distral_tf.distributed import tickets as tickets_lib

# What a step did, the first number it returns.
EMPTY, TRAINED, DROPPED = 0, 1, 2
# Gradient steps one scheduled call may take, one after the other on its
# worker, each on its own unroll from that worker's queue (as many as are
# there, up to this): the chief's cost of a call (the coordinator's schedule
# and fetch, a few ms of its CPU) is shared by them.
UNROLLS_PER_CALL = host_queue.UNROLL_CAPACITY
# After a call found its worker's queue empty: wait this long before the next try.
EMPTY_RETRY_SECS = 0.005
# How long a step's result is awaited after its worker was lost (as TensorFlow's
# coordinator waits for a worker to come back), and how often it is retried.
WORKER_RECOVERY_SECS = 3600.0
FETCH_RETRY_SECS = 0.5
# How often ``StepGate.paused`` runs its ``check`` while steps are in flight.
PAUSE_CHECK_SECS = 0.25

Key = tuple[int, ...]


class StepResult(NamedTuple):
  """What one scheduled step did (``EMPTY``, ``TRAINED``, ``DROPPED``), where,
  and which unroll it took (its host's incarnation and its number there)."""
  status: int
  worker: int
  lag: int
  metrics: dict[str, float]
  incarnation: int = -1
  number: int = 0


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

  The coordinator has no public way to give a worker its index, so each
  worker's value is created through the coordinator's per-worker resources
  (which it recreates after a restart).
  """
  workers = coordinator._cluster.workers  # pylint: disable=protected-access
  assert len(workers) == num_workers
  values = []
  for i, worker in enumerate(workers):
    fn = tf.function(functools.partial(tf.constant, i, tf.int32))
    values.append(worker.create_resource(fn))
  return tf.distribute.experimental.coordinator.PerWorkerValues(tuple(values))


class StepGate:
  """Counts the steps in flight and holds new ones back while ``paused``."""

  def __init__(self):
    self._cond = threading.Condition()
    self._paused = False
    self._in_flight = 0

  @contextlib.contextmanager
  def step(self):
    """One step in flight inside (it first waits while paused)."""
    with self._cond:
      while self._paused:
        self._cond.wait()
      self._in_flight += 1
    try:
      yield
    finally:
      with self._cond:
        self._in_flight -= 1
        self._cond.notify_all()

  @contextlib.contextmanager
  def paused(self, check: Callable[[], None] = lambda: None):
    """No step runs inside: new ones wait, those in flight are finished first.

    ``check`` runs every ``PAUSE_CHECK_SECS`` while it waits and may raise
    (the pause then ends): once a ps is gone, a step in flight can wait for
    the coordinator's recovery of its worker for up to an hour, so the
    caller's check of the ps ends the wait.
    """
    with self._cond:
      self._paused = True
      try:
        while self._in_flight:
          self._cond.wait(PAUSE_CHECK_SECS)
          if self._in_flight:
            check()
      except BaseException:
        self._paused = False
        self._cond.notify_all()
        raise
    try:
      yield
    finally:
      with self._cond:
        self._paused = False
        self._cond.notify_all()


class StepScheduler:
  """Schedules a step on an unroll of a given shape, taken on its worker.

  ``paused()`` holds new steps back and waits for those in flight, so that a
  checkpoint taken inside it is consistent: the variables on the ps tasks then
  reflect exactly the ``trained_steps`` counted here.
  """

  def __init__(self, learner: learner_lib.Learner, strategy, coordinator,
               num_workers: int, num_tasks: int, run_id: str, structure,
               unroll_length: int, max_policy_lag: int = 0):
    self._learner = learner
    self._strategy = strategy
    self._coordinator = coordinator
    self._run_id = run_id
    self._structure = structure  # actor_rpc.unroll_structure: leaves of an element
    self._unroll_length = unroll_length
    self._max_policy_lag = max_policy_lag
    self._worker_ids = _worker_ids(coordinator, num_workers)
    self._policy_variables = remote.variables_in_order(learner.network)
    self._policy_spec = host_queue.policy_spec(self._policy_variables)
    # Task sizes -> (step function, names of the metrics it returns packed).
    self._steps: dict[Key, tuple[Callable, list[str]]] = {}
    self._lock = threading.Lock()
    self._trace_lock = threading.Lock()
    self._cached_variables = [v for v in learner.network.variables
                              if hasattr(v, '_cache')]
    self._gate = StepGate()
    self.steps_per_worker = np.zeros(num_workers, np.int64)
    self.empty_steps = 0
    self.policy_offers = 0
    self.calls = 0
    self._steps_at_restart = np.zeros(num_workers, np.int64)
    # Agent steps (time steps x batch) of the completed gradient steps, per task.
    self.trained_steps = np.zeros(num_tasks, np.int64)

  def _step_fn(self, key: Key, spec: host_queue.ElementSpec
               ) -> tuple[Callable, list[str]]:
    """The scheduled step of unrolls of shape ``key`` and its metrics' names.

    It returns one float64 vector ``[status, lag, offered, incarnation, number,
    *metrics, worker]``: the coordinator copies every output tensor of a step
    to the chief separately, so one tensor costs one copy instead of one per
    metric (float64 keeps the unroll numbers exact).
    """
    with self._lock:
      if key not in self._steps:
        self._steps[key] = self._build_step(key, spec)
      return self._steps[key]

  def _build_step(self, key: Key, spec: host_queue.ElementSpec
                  ) -> tuple[Callable, list[str]]:
    learner, names = self._learner, []

    def pack(status, lag, offered, header, metrics):
      return tf.stack([tf.cast(x, tf.float64)
                       for x in [status, lag, offered, *header, *metrics]])

    def train(batch, version, lag, header):
      with self._read_once():
        grads, variables, metrics = learner.gradients(key, batch)
        policy = [tf.convert_to_tensor(v) for v in self._policy_variables]
      offered = host_queue.offer(
          host_queue.policy_queue(self._run_id, self._policy_spec), [version] + policy)
      metrics = learner.apply(grads, variables, batch, metrics)
      names[:] = sorted(metrics)
      return pack(TRAINED, lag, offered, header, [metrics[k] for k in names])

    def skip(status, lag, header=(-1, 0)):  # Traced after ``train`` (tf.cond: true_fn first).
      return pack(status, lag, False, header, [0.0] * len(names))

    def take(handle):
      # In the cross-replica context: ``apply_gradients`` (a merge call) may not
      # sit inside a tf.cond within ``strategy.run``, but ``strategy.run`` may
      # sit inside one.
      incarnation, number, before, *flat = host_queue.dequeue(handle, spec)
      header = (incarnation, number)
      batch = tf.nest.pack_sequence_as(self._structure, flat)
      version = tf.convert_to_tensor(learner.optimizer.iterations)
      lag = version - before
      run = lambda: self._strategy.run(train, args=(batch, version, lag, header))
      if not self._max_policy_lag:
        return run()
      return tf.cond(lag <= self._max_policy_lag, run,
                     lambda: skip(DROPPED, lag, header))

    @functools.partial(tf.function, autograph=False)
    def step(worker_id):
      # Up to UNROLLS_PER_CALL steps, in order: the ops on the queue and on the
      # variables run in program order (tf.function's automatic control
      # dependencies), so each step reads the parameters the last one wrote.
      handle = host_queue.unroll_queue(self._run_id, key, spec)
      rows = [tf.cond(host_queue.size(handle) > 0, lambda: take(handle),
                      lambda: skip(EMPTY, 0)) for _ in range(UNROLLS_PER_CALL)]
      worker = tf.fill([UNROLLS_PER_CALL, 1], tf.cast(worker_id, tf.float64))
      return tf.concat([tf.stack(rows), worker], 1)

    return step, names

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

  def train_step(self, key: Key, spec: host_queue.ElementSpec) -> list[StepResult]:
    """Schedules a call of up to ``UNROLLS_PER_CALL`` steps on unrolls of shape
    ``key`` on a worker, waits, returns what each did (an ``EMPTY`` one found
    no more unrolls there)."""
    with self._gate.step():
      step, names = self._step_fn(key, spec)
      remote_value = self._coordinator.schedule(step, args=(self._worker_ids,))
      results = []
      for values in np.asarray(self._fetch(remote_value)).tolist():
        status, lag, offered, incarnation, number = (int(v) for v in values[:5])
        worker = int(values[-1])
        with self._lock:
          if status == EMPTY:
            self.empty_steps += 1
          else:
            self.steps_per_worker[worker] += 1
          if status == TRAINED:
            self.trained_steps += np.asarray(key) * self._unroll_length
            self.policy_offers += int(offered)
        results.append(StepResult(status, worker, lag, dict(zip(names, values[5:-1])),
                                  incarnation, number))
      with self._lock:
        self.calls += 1
      return results

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
                     'rerun (%s).', remote.first_line(e))
      self._coordinator.done()
      time.sleep(FETCH_RETRY_SECS)

  def paused(self, check: Callable[[], None] = lambda: None):
    """``StepGate.paused``: a consistent checkpoint is taken inside."""
    return self._gate.paused(check)

  def mark_restart(self, worker: int) -> None:
    """Notes that ``worker`` restarted (``steps_since_restart`` counts from here)."""
    with self._lock:
      self._steps_at_restart[worker] = self.steps_per_worker[worker]

  def worker_stats(self) -> dict[str, Any]:
    with self._lock:
      return dict(steps=self.steps_per_worker.tolist(),
                  steps_since_restart=(self.steps_per_worker -
                                       self._steps_at_restart).tolist(),
                  empty_steps=self.empty_steps, policy_offers=self.policy_offers,
                  calls=self.calls)

  def join(self) -> None:
    """Waits until every scheduled step has run."""
    self._coordinator.join()


class StepThread:
  """One of the chief's learner threads: keeps one call of steps in flight.

  Runs until the hosts have stopped (``hosts_done()``) and every ticket was
  taken (or dropped with a host that went silent, ``actor_service``).
  """
  learns = True  # Its CPU is the run's learning (``run_loop``'s accounting).

  def __init__(self, scheduler: StepScheduler, tickets: tickets_lib.Tickets,
               progress: actor_lib.Progress, hosts_done: Callable[[], bool]):
    self._scheduler = scheduler
    self._tickets = tickets
    self._progress = progress
    self._hosts_done = hosts_done
    self.error: BaseException | None = None
    self.clock = cpu_use.ThreadClock()

  def run(self, stop: threading.Event) -> None:
    clock = self.clock
    clock.start()
    try:
      while not stop.is_set():
        claim = self._tickets.claim(timeout=0.1, most=UNROLLS_PER_CALL)
        clock.mark('other')
        if claim is None:
          if self._hosts_done() and self._tickets.pending() <= 0:
            return
          continue
        key, spec, claimed = claim
        results = self._scheduler.train_step(key, spec)
        clock.mark('learning')
        for result in results:
          if result.status == EMPTY:
            continue
          self._tickets.taken(key, result.worker, result.incarnation, result.number)
          if result.status == DROPPED:
            self._progress.add_dropped()
            continue
          learner_lib.check_finite(result.metrics, self._progress.updates + 1)
          self._progress.add_update(key, result.lag, result.metrics)
        self._tickets.release(key, claimed)
        if all(r.status == EMPTY for r in results):  # The unrolls are on other hosts.
          time.sleep(EMPTY_RETRY_SECS)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()
