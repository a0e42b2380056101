r"""A parameter-server or worker task: ``python -m distral_tf.distributed.server``.

Reads its role from ``TF_CONFIG`` (``"task": {"type": "ps" | "worker", ...}``)
and starts TensorFlow's gRPC server on its address. The chief
(``python -m distral_tf.launch --cluster=tf_config ...``) places the variables
on the ps tasks and schedules gradient steps on the workers. A worker also
steps its share of the environments for the chief's runs
(``actor_host.ActorHost``); a ps task only serves. Run one per ps and worker
host::

  TF_CONFIG='{"cluster": {...}, "task": {"type": "ps", "index": 0}}' \
      python -m distral_tf.distributed.server

A malformed ``TF_CONFIG`` or a busy port is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

from distral_tf import errors
from distral_tf.distributed import topology

_EXIT_WITH_PARENT = flags.DEFINE_boolean(
    'exit_with_parent', False,
    'Exit when the process that started this one exits (used by the loopback '
    'launcher, so that servers never outlive a killed chief).')

POLL_SECS = 0.5


def serve(cluster: topology.ClusterDef, role: topology.Role,
          exit_with_parent: bool = False) -> None:
  """Runs the gRPC server of ``role`` until the process is killed (or orphaned).

  Raises:
    errors.UsageError: ``role`` is the chief, or its port is in use.
  """
  if role.job not in topology.SERVER_JOBS:
    raise errors.UsageError(
        f'this {topology.TF_CONFIG_VAR} names the chief; the chief trains: run '
        'python -m distral_tf.launch --cluster=tf_config [flags] there')
  address = cluster.address(role)
  topology.check_port_free(address, str(role))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    server = tf.distribute.Server(
        tf.train.ClusterSpec(cluster.as_dict()), job_name=role.job,
        task_index=role.index, protocol='grpc', start=True)
  except (tf.errors.OpError, ValueError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise errors.UsageError(f'{role} cannot serve on {address}: {first}') from None
  print(f'{role} serving on {address} (pid {os.getpid()})', flush=True)
  parent = os.getppid()
  keep_going = lambda: not (exit_with_parent and os.getppid() != parent)
  # The server runs in TensorFlow's threads; this one acts (a worker) or only
  # watches the parent.
  try:
    if role.job == 'worker':
      from distral_tf.distributed import actor_host  # pylint: disable=g-import-not-at-top
      actor_host.ActorHost(topology.actor_address(cluster), role.index,
                           server.target).serve(keep_going)
    while keep_going():
      time.sleep(POLL_SECS)
  except KeyboardInterrupt:
    pass
  # Leave without finalising TensorFlow, whose server threads would block exit.
  os._exit(0)  # pylint: disable=protected-access


def main(argv) -> None:
  if len(argv) > 1:
    print(f'error: unexpected arguments {" ".join(argv[1:])}; the role comes from '
          f'{topology.TF_CONFIG_VAR}', file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  try:
    cluster, role = topology.read_tf_config()
    serve(cluster, role, exit_with_parent=_EXIT_WITH_PARENT.value)
  except errors.UsageError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(errors.USAGE_EXIT_CODE)


if __name__ == '__main__':
  app.run(main)
