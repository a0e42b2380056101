"""TensorFlow's side of cluster mode: the strategy and the chief's policy copy.

* ``connect`` makes this process the chief of a ``ParameterServerStrategy``:
  variables created in ``strategy.scope()`` live on the ps tasks (large ones
  split over several ps tasks by a ``MinSizePartitioner``), and a
  ``ClusterCoordinator`` runs scheduled functions on the workers, rescheduling
  a function whose worker fails. The gradient steps it schedules are
  ``steps.py``'s.
* ``PolicyMirror`` is the chief's local copy of the network, copied from the
  ps tasks when pi_0's evaluator starts an evaluation and when a host joining
  the run asks for a first policy (its later copies come from its own worker,
  ``host_queue``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from absl import logging

from distral_tf import errors
from distral_tf.agents import learner as learner_lib
from distral_tf.distributed import topology

# Variables of at least this size are split over the ps tasks (when several).
SHARD_MIN_BYTES = 256 << 10
# Seconds between the actor hosts' looks for a new policy in their queue.
REFRESH_SECS = 0.5

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
  """The chief's copy of the network, refreshed from the ps tasks.

  ``counter``: the variable counting the updates applied (the optimiser's
  iterations), read as the copy's number.
  """

  def __init__(self, source: tf.Module, local: tf.Module, counter=None):
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
    self._counter = counter
    self._refreshed_at = -float('inf')
    # Updates applied when the copy was taken; told to ``on_refresh``.
    self.version = 0
    self.on_refresh: Callable[[int], None] | None = None
    self._pull = tf.function(self._assign_all)
    self._lock = threading.Lock()

  def _assign_all(self) -> None:
    for dst, src in self._pairs:
      dst.assign(tf.convert_to_tensor(src))

  def refresh(self) -> None:
    """Copies every variable's current value from the ps tasks."""
    with self._lock:
      version = int(self._counter.numpy()) if self._counter is not None else 0
      self._pull()
      self.refreshes += 1
      self.version = version
      self._refreshed_at = time.monotonic()
      if self.on_refresh is not None:
        self.on_refresh(version)

  def refresh_if_older(self, max_age: float) -> None:
    """``refresh`` unless the copy is younger than ``max_age`` seconds."""
    with self._lock:
      fresh = time.monotonic() - self._refreshed_at < max_age
    if not fresh:
      self.refresh()


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
