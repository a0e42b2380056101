"""Unrolls and policy copies kept on each worker host's own TensorFlow server.

In cluster mode an unroll never leaves the host that acted it. The host's
actors put it into a FIFO queue resource on the host's own server
(``HostQueues.put``, a graph run by a session on that local server); a
gradient step that the chief's coordinator schedules on that worker finds the
same queue by its shared name on its own device and takes the unroll from
there (``unroll_queue`` inside the step function). The two sides meet in the
server's resource manager, which its session (master) service and its eager
service (the coordinator's functions) share.

The policy comes back the same way: a step that finds the host's policy queue
(capacity 1) empty puts the values of the parameters it read for its gradient
into it, with the number of updates applied (``policy_queue``); the host's
refresher takes them (``HostQueues.take_policy``). So neither unrolls nor
policy copies cross the chief, and the only extra reads of the parameter
servers are of variables the step's gradient did not read.

Queues are named by the run (a chief's run id) and, for unrolls, by the
unroll's task sizes, and declared with the same element types, shapes and
capacity on both sides (``ElementSpec``), as a shared queue requires.
``tf.queue.FIFOQueue`` cannot be used for this: inside a ``tf.function`` it is
created eagerly on the caller's device under a unique name; the raw ops are.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
# The queue ops themselves: tf.queue.FIFOQueue lifts its creation out of a
# tf.function onto the chief, under a unique name (see the module docstring).
from tensorflow.python.ops import gen_data_flow_ops  # pylint: disable=g-direct-tensorflow-import

# Unrolls of one shape a host keeps waiting for a gradient step; its actors
# wait when they are all there (the actors' own queue holds more).
UNROLL_CAPACITY = 4
# Seconds between a host's looks at the size of a queue it waits on.
POLL_SECS = 0.005
POLICY_POLL_SECS = 0.05


class ElementSpec(NamedTuple):
  """Types and shapes of a queue's element, as carried in a host's report."""
  dtypes: tuple[str, ...]
  shapes: tuple[tuple[int, ...], ...]

  @classmethod
  def of(cls, arrays: Sequence[Any]) -> 'ElementSpec':
    arrays = [np.asarray(a) for a in arrays]
    return cls(tuple(a.dtype.name for a in arrays), tuple(tuple(a.shape) for a in arrays))

  def to_json(self) -> str:
    return json.dumps([list(self.dtypes), [list(s) for s in self.shapes]])

  @classmethod
  def from_json(cls, text: str) -> 'ElementSpec':
    dtypes, shapes = json.loads(text)
    return cls(tuple(dtypes), tuple(tuple(s) for s in shapes))

  @property
  def tf_dtypes(self) -> list[tf.DType]:
    return [tf.as_dtype(d) for d in self.dtypes]

  @property
  def num_bytes(self) -> int:
    return sum(int(np.prod(s)) * np.dtype(d).itemsize
               for d, s in zip(self.dtypes, self.shapes))


def unroll_queue_name(run_id: str, task_sizes: Sequence[int]) -> str:
  return f'distral_unrolls_{run_id}_{"_".join(str(int(n)) for n in task_sizes)}'


def policy_queue_name(run_id: str) -> str:
  return f'distral_policy_{run_id}'


# An element's header before the unroll: the host process's incarnation, the
# unroll's number among the host's unrolls of its shape (from 1), and the
# number of the policy its first action was taken with.
HEADER = 3


def unroll_element(incarnation: int, number: int, updates_before: int,
                   unroll) -> list[np.ndarray]:
  """The queue element of an unroll: ``HEADER`` numbers, then the unroll
  flattened by ``tf.nest``."""
  return ([np.int64(incarnation), np.int64(number), np.int64(updates_before)] +
          [np.asarray(a) for a in tf.nest.flatten(unroll)])


def _queue(name: str, spec: ElementSpec, capacity: int) -> tf.Tensor:
  """The queue ``name``'s handle on the current device (created if new)."""
  return gen_data_flow_ops.fifo_queue_v2(
      component_types=spec.tf_dtypes, shapes=[list(s) for s in spec.shapes],
      capacity=capacity, shared_name=name, name=None)


def unroll_queue(run_id: str, task_sizes: Sequence[int], spec: ElementSpec) -> tf.Tensor:
  """Inside a step function: the handle of this worker's queue of such unrolls."""
  return _queue(unroll_queue_name(run_id, task_sizes), spec, UNROLL_CAPACITY)


def policy_queue(run_id: str, spec: ElementSpec) -> tf.Tensor:
  """Inside a step function: the handle of this worker's policy queue."""
  return _queue(policy_queue_name(run_id), spec, 1)


def size(handle: tf.Tensor) -> tf.Tensor:
  return gen_data_flow_ops.queue_size_v2(handle)


def dequeue(handle: tf.Tensor, spec: ElementSpec) -> list[tf.Tensor]:
  """The oldest element, with its static shapes (the raw op does not give them)."""
  values = gen_data_flow_ops.queue_dequeue_v2(handle, component_types=spec.tf_dtypes)
  for value, shape in zip(values, spec.shapes):
    value.set_shape(shape)
  return list(values)


def offer(handle: tf.Tensor, values: Sequence[tf.Tensor]) -> tf.Tensor:
  """Puts ``values`` into the (capacity-1) queue if it is empty; True if put.

  Only the step functions put into a policy queue, and a worker runs its
  steps one after the other, so nothing fills it between the look and the put.
  """
  def put():
    with tf.control_dependencies([gen_data_flow_ops.queue_enqueue_v2(handle, values)]):
      return tf.constant(True)
  return tf.cond(size(handle) > 0, lambda: tf.constant(False), put)


def policy_spec(variables: Sequence[Any]) -> ElementSpec:
  """The policy queue's element: the number of updates, then every variable."""
  return ElementSpec(('int64',) + tuple(v.dtype.name for v in variables),
                     ((),) + tuple(tuple(int(d) for d in v.shape) for v in variables))


class HostQueues:
  """The host's end: puts unrolls and takes policy copies through its own server.

  ``target``: the local server's ``grpc://`` address; ``worker``: its index.
  Nothing here blocks on a queue: the host is the only producer of its unroll
  queues and the only consumer of its policy queue, so it looks at a queue's
  size first and only then puts or takes. (A put or take cut by a session
  timeout may still go through on the server afterwards, putting an unroll
  twice; so none is cut.) Calls that wait poll every ``POLL_SECS`` until their
  ``timeout`` and return None/False when it runs out, so the caller can look at
  its stop conditions.
  """

  def __init__(self, target: str, worker: int, run_id: str, policy: ElementSpec):
    self.run_id = self._run_id = run_id
    self._numbers: dict[tuple[int, ...], int] = {}
    self._device = f'/job:worker/replica:0/task:{worker}/device:CPU:0'
    self._graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(device_filters=[f'/job:worker/replica:0/task:{worker}'])
    self._session = tf.compat.v1.Session(target, graph=self._graph, config=config)
    self._puts: dict[tuple[int, ...], tuple[Any, Any, list[Any]]] = {}
    self._drains: list[Any] = []
    with self._graph.as_default(), tf.device(self._device):
      handle = _queue(policy_queue_name(run_id), policy, 1)
      self._take_policy = gen_data_flow_ops.queue_dequeue_v2(
          handle, component_types=policy.tf_dtypes)
      self._policy_size = size(handle)

  @staticmethod
  def _drain_op(handle, spec: ElementSpec):
    """Closes the queue and takes what it holds (frees it)."""
    close = gen_data_flow_ops.queue_close_v2(handle, cancel_pending_enqueues=True)
    with tf.control_dependencies([close]):
      return gen_data_flow_ops.queue_dequeue_up_to_v2(
          handle, n=UNROLL_CAPACITY, component_types=spec.tf_dtypes)

  @staticmethod
  def _options(timeout: float):
    return tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout * 1000)))

  def _wait(self, size_op, ready, timeout: float, poll: float = POLL_SECS) -> bool:
    """Polls ``size_op`` until ``ready(size)``; False at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready(self._session.run(size_op)):
      if time.monotonic() >= deadline:
        return False
      time.sleep(poll)
    return True

  def number(self, task_sizes: Sequence[int]) -> int:
    """The next unroll's number among this run's unrolls of its shape (from 1).

    It becomes the last one's when ``commit`` is called (the chief counted it).
    """
    return self._numbers.get(tuple(int(n) for n in task_sizes), 0) + 1

  def commit(self, task_sizes: Sequence[int]) -> None:
    key = tuple(int(n) for n in task_sizes)
    self._numbers[key] = self._numbers.get(key, 0) + 1

  def _ops(self, key: tuple[int, ...], element: Sequence[np.ndarray]):
    if key not in self._puts:
      spec = ElementSpec.of(element)
      with self._graph.as_default(), tf.device(self._device):
        handle = _queue(unroll_queue_name(self._run_id, key), spec, UNROLL_CAPACITY)
        feeds = [tf.compat.v1.placeholder(d, s) for d, s in zip(spec.tf_dtypes, spec.shapes)]
        op = gen_data_flow_ops.queue_enqueue_v2(handle, feeds)
        self._drains.append(self._drain_op(handle, spec))
        self._puts[key] = (op, size(handle), feeds)
    return self._puts[key]

  def wait_for_room(self, task_sizes: Sequence[int], element: Sequence[np.ndarray],
                    timeout: float) -> bool:
    """Whether the queue of such unrolls has room now; False if still full at ``timeout``."""
    _, size_op, _ = self._ops(tuple(int(n) for n in task_sizes), element)
    return self._wait(size_op, lambda n: n < UNROLL_CAPACITY, timeout)

  def put(self, task_sizes: Sequence[int], element: Sequence[np.ndarray],
          timeout: float) -> bool:
    """Puts one unroll's element (``unroll_element``); False if still full at ``timeout``."""
    if not self.wait_for_room(task_sizes, element, timeout):
      return False
    op, _, feeds = self._ops(tuple(int(n) for n in task_sizes), element)
    self._session.run(op, dict(zip(feeds, element)))
    return True

  def take_policy(self, timeout: float) -> tuple[int, list[np.ndarray]] | None:
    """The newest policy a step left here (number of updates, values), or None."""
    if not self._wait(self._policy_size, lambda n: n > 0, timeout, POLICY_POLL_SECS):
      return None
    version, *values = self._session.run(self._take_policy)
    return int(version), values

  def close(self) -> None:
    """Closes this run's unroll queues, frees what its queues hold, ends the session.

    Call it once the run is over, when the next run starts (the chief trains
    what its hosts reported until it ends). The policy queue stays open (a
    late step may still offer into it) and is only emptied.
    """
    self.take_policy(0.05)
    for op in self._drains:
      try:
        while len(self._session.run(op, options=self._options(5.0))[0]):
          pass
      except (tf.errors.OutOfRangeError, tf.errors.DeadlineExceededError,
              tf.errors.CancelledError, tf.errors.UnavailableError):
        pass
    self._session.close()
