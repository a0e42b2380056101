"""What the chief and the actor hosts exchange: gRPC methods, TensorFlow messages.

Actor hosts (the worker tasks, ``actor_host.py``) call the chief's
``actor_service.ActorService`` through gRPC (``grpcio``, the engine under
TensorFlow's own servers, installed with TensorFlow); arrays travel as
TensorFlow's ``TensorProto`` messages (``encode`` / ``decode``: a list of
arrays is one ``TensorProto`` of strings, each a serialised ``TensorProto``).
Four methods of the service ``distral.Actors``:

* ``plan``: the run as JSON (``run_plan``): a run id, the trainer's
  configuration and the number of hosts;
* ``version``: the number of the policy the chief holds (the updates applied
  when it was copied from the parameter servers), as text;
* ``params``: that number and every variable of the network, in
  ``remote.variables_in_order``;
* ``report``: host, the host process's incarnation (a random number drawn
  when it starts), the unroll's number among the host's unrolls of its shape,
  task sizes, the episodes that ended in the unroll (rows
  ``[task, return, length]``) and the element spec of the unroll, which the
  host has just put into its own queue (``host_queue``); the answer says
  whether it was counted and whether the run wants no more. The unroll itself
  stays on the host. Reports come once per unroll, so they are packed binary
  (``encode_report``: a fixed header, then the arrays' bytes and the spec's
  JSON) and answered with two bytes (decoding a report as TensorProtos took
  about 90 µs of the chief's CPU, packed about 2 µs).

TensorFlow's ``tf.distribute.experimental.rpc`` would carry the same calls,
but its server runs functions in the chief's eager context, which the
cluster coordinator rebuilds when a worker fails: the chief then crashed
(segmentation fault) in the loopback test of a killed worker.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple, Sequence

import grpc
import numpy as np
import tensorflow as tf
# The message type of ``tf.make_tensor_proto``; no public module exports it.
from tensorflow.core.framework import tensor_pb2  # pylint: disable=g-direct-tensorflow-import

from distral_tf.agents import config as config_lib
from distral_tf.agents import learner as learner_lib

SERVICE = 'distral.Actors'
PLAN, VERSION, PARAMS, REPORT = 'plan', 'version', 'params', 'report'
METHODS = (PLAN, VERSION, PARAMS, REPORT)
# Seconds a call may take (none waits on the chief's side).
CALL_TIMEOUT_SECS = 60.0
# Policy copies of pixel networks are large; gRPC's default limit is 4 MiB.
MAX_MESSAGE_BYTES = 256 << 20
CHANNEL_OPTIONS = (('grpc.max_send_message_length', MAX_MESSAGE_BYTES),
                   ('grpc.max_receive_message_length', MAX_MESSAGE_BYTES))

RpcError = grpc.RpcError


def encode(arrays: Sequence[Any]) -> bytes:
  """Arrays (or tensors) -> one serialised ``TensorProto``."""
  parts = [tf.make_tensor_proto(np.asarray(a)).SerializeToString() for a in arrays]
  return tf.make_tensor_proto(parts, dtype=tf.string,
                              shape=[len(parts)]).SerializeToString()


def decode(data: bytes) -> list[np.ndarray]:
  """``encode``'s bytes -> the arrays."""
  outer = tf.make_ndarray(tensor_pb2.TensorProto.FromString(data))
  return [tf.make_ndarray(tensor_pb2.TensorProto.FromString(part)) for part in outer]


class Report(NamedTuple):
  """A host's report of one unroll it put into its own queue."""
  host: int
  incarnation: int
  number: int
  task_sizes: tuple[int, ...]
  episodes: np.ndarray  # float32 rows [task, return, length]
  spec: bytes  # host_queue.ElementSpec's JSON


# host, incarnation, number, then how many task sizes, episode rows and spec bytes follow.
_REPORT_HEADER = struct.Struct('<iqqiii')


def encode_report(report: Report) -> bytes:
  """``report`` -> bytes: the header, task sizes (int32), episode rows
  (float32), the spec (little-endian throughout)."""
  sizes = np.asarray(report.task_sizes, '<i4')
  episodes = np.asarray(report.episodes, '<f4').reshape(-1, 3)
  return b''.join([
      _REPORT_HEADER.pack(report.host, report.incarnation, report.number, sizes.size,
                          len(episodes), len(report.spec)),
      sizes.tobytes(), episodes.tobytes(), report.spec])


def decode_report(data: bytes) -> Report:
  """``encode_report``'s bytes -> the report.

  Raises:
    ValueError: ``data`` is not a whole report.
  """
  if len(data) < _REPORT_HEADER.size:
    raise ValueError(f'a report of {len(data)} bytes is shorter than its header')
  host, incarnation, number, num_tasks, num_episodes, spec_bytes = (
      _REPORT_HEADER.unpack_from(data))
  sizes_at = _REPORT_HEADER.size
  episodes_at = sizes_at + 4 * num_tasks
  spec_at = episodes_at + 12 * num_episodes
  if min(num_tasks, num_episodes, spec_bytes) < 0 or len(data) != spec_at + spec_bytes:
    raise ValueError(f'a report of {len(data)} bytes does not hold the {num_tasks} task '
                     f'sizes, {num_episodes} episodes and {spec_bytes} spec bytes '
                     'its header names')
  sizes = np.frombuffer(data, '<i4', num_tasks, sizes_at)
  episodes = np.frombuffer(data, '<f4', 3 * num_episodes, episodes_at).reshape(-1, 3)
  return Report(host, incarnation, number, tuple(sizes.tolist()), episodes,
                data[spec_at:])


def encode_answer(counted: bool, stop: bool) -> bytes:
  return bytes([counted, stop])


def decode_answer(data: bytes) -> tuple[bool, bool]:
  """``encode_answer``'s bytes -> ``(counted, stop)``."""
  return bool(data[0]), bool(data[1])


def unroll_structure(network) -> learner_lib.Unroll:
  """An ``Unroll``'s structure (leaves: None), to rebuild one from its flat list."""
  fields = {f: None for f in learner_lib.Unroll._fields}
  fields['initial_state'] = tf.nest.map_structure(lambda _: None,
                                                  network.initial_state(1))
  return learner_lib.Unroll(**fields)


def run_plan(run_id: str, config: config_lib.DeepConfig, num_hosts: int) -> str:
  """What an actor host needs to act in the run, as JSON."""
  fields = {f: getattr(config, f) for f in config_lib.plan_fields()}
  return json.dumps(dict(run_id=run_id, num_hosts=num_hosts, config=fields,
                         record=dict(config.config_record)))


def read_plan(text: str) -> tuple[str, int, config_lib.DeepConfig]:
  """``run_plan``'s JSON -> ``(run_id, num_hosts, config)``."""
  data = json.loads(text)
  fields = dict(data['config'], tasks=tuple(data['config']['tasks']))
  return (data['run_id'], int(data['num_hosts']),
          config_lib.DeepConfig(**fields, config_record=data['record']))


class Client:
  """The actor host's end: the chief's four methods as Python calls.

  Every call raises ``RpcError`` when the chief cannot answer.
  """

  def __init__(self, address: str, timeout: float = CALL_TIMEOUT_SECS):
    self.address = address
    self._timeout = timeout
    self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    self._calls = {m: self._channel.unary_unary(f'/{SERVICE}/{m}') for m in METHODS}

  def _call(self, method: str, request: bytes = b'') -> bytes:
    return self._calls[method](request, timeout=self._timeout)

  def plan(self) -> str:
    return self._call(PLAN).decode()

  def version(self) -> int:
    return int(self._call(VERSION))

  def params(self) -> tuple[int, list[np.ndarray]]:
    values = decode(self._call(PARAMS))
    return int(values[0]), values[1:]

  def report(self, host: int, incarnation: int, number: int, task_sizes: Sequence[int],
             episodes: np.ndarray, spec: str) -> tuple[bool, bool]:
    """Tells the chief an unroll is in this host's queue; returns ``(counted, stop)``."""
    request = encode_report(Report(host, incarnation, number, tuple(task_sizes),
                                   episodes, spec.encode()))
    return decode_answer(self._call(REPORT, request))

  def close(self) -> None:
    self._channel.close()
