"""Who is who in a cluster: ``--cluster`` values, ``TF_CONFIG``, addresses, ports.

A cluster has one ``chief`` (the trainer: it runs the actors, schedules the
gradient steps and writes the log directory), one or more ``ps`` tasks (they
hold every variable) and one or more ``worker`` tasks (they compute the
gradient steps). Roles come from ``TF_CONFIG`` in TensorFlow's standard form::

  {"cluster": {"chief": ["host0:2222"], "ps": ["host1:2222"],
               "worker": ["host2:2222", "host3:2222"]},
   "task": {"type": "worker", "index": 1}}

Everything here is plain Python (no TensorFlow), so that a bad ``--cluster``
value, a malformed ``TF_CONFIG`` or a busy port is reported at once, as one
``errors.UsageError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from typing import Callable, Iterable, Sequence

from distral_tf import errors

TF_CONFIG_VAR = 'TF_CONFIG'
JOBS = ('chief', 'ps', 'worker')
SERVER_JOBS = ('ps', 'worker')
LOOPBACK = '127.0.0.1'
DEFAULT_LOCAL_PS = 1
DEFAULT_LOCAL_WORKERS = 2
_LOCAL_KEYS = ('ps', 'workers', 'port')
# A loopback cluster runs every server on this machine: at most this many per
# core (and never fewer than MIN_LOCAL_SERVERS in all), beyond which it only
# shares the cores and memory out thinner (each server is a TensorFlow runtime).
LOCAL_SERVERS_PER_CORE = 4
MIN_LOCAL_SERVERS = 8
# The chief serves its actor hosts on its own port + this.
ACTOR_PORT_OFFSET = 1
# Seconds between the lines of a chief waiting for its servers (``wait_reachable``).
WAIT_REPORT_SECS = 30.0
CLUSTER_FLAG_HELP = ('--cluster takes "local:ps=N,workers=M[,port=P]" (a loopback '
                     'cluster started by this command) or "tf_config" (roles from '
                     'the TF_CONFIG environment variable)')


@dataclasses.dataclass(frozen=True)
class Role:
  """This process's task in the cluster."""
  job: str
  index: int

  def __str__(self) -> str:
    return f'{self.job} {self.index}'


@dataclasses.dataclass(frozen=True)
class ClusterDef:
  """Addresses ("host:port") of every task, by job."""
  chief: str
  ps: tuple[str, ...]
  workers: tuple[str, ...]

  def as_dict(self) -> dict[str, list[str]]:
    """The ``cluster`` part of ``TF_CONFIG`` (and of ``tf.train.ClusterSpec``)."""
    return {'chief': [self.chief], 'ps': list(self.ps), 'worker': list(self.workers)}

  def address(self, role: Role) -> str:
    return self.as_dict()[role.job][role.index]

  def server_roles(self) -> list[Role]:
    """Every ps and worker task (the processes that run a server and block)."""
    return ([Role('ps', i) for i in range(len(self.ps))] +
            [Role('worker', i) for i in range(len(self.workers))])

  def all_addresses(self) -> list[str]:
    return [self.chief, *self.ps, *self.workers]


def actor_address(cluster: ClusterDef) -> str:
  """Where the chief serves the actor hosts: its own host, the port after its own."""
  host, port = split_address(cluster.chief)
  host = f'[{host}]' if ':' in host else host
  return f'{host}:{port + ACTOR_PORT_OFFSET}'


@dataclasses.dataclass(frozen=True)
class LocalRequest:
  """``--cluster=local:ps=N,workers=M[,port=P]``: servers started on loopback."""
  num_ps: int = DEFAULT_LOCAL_PS
  num_workers: int = DEFAULT_LOCAL_WORKERS
  # The chief on base_port, its actor service on the next, then ps and workers;
  # None: free ones.
  base_port: int | None = None


def parse_cluster_flag(value: str) -> LocalRequest | str:
  """``LocalRequest`` for ``local:...``, the string ``'tf_config'`` for ``tf_config``."""
  value = value.strip()
  if value == 'tf_config':
    return value
  if value != 'local' and not value.startswith('local:'):
    raise errors.UsageError(f'{CLUSTER_FLAG_HELP}; got --cluster={value}')
  fields = {}
  body = value[len('local:'):] if value.startswith('local:') else ''
  for item in filter(None, (s.strip() for s in body.split(','))):
    key, sep, number = item.partition('=')
    if not sep or key not in _LOCAL_KEYS or not re.fullmatch(r'\d+', number):
      raise errors.UsageError(
          f'--cluster={value}: bad item {item!r}; expected ps=N, workers=M or '
          'port=P with whole numbers')
    if key in fields:
      raise errors.UsageError(f'--cluster={value}: {key} given twice')
    fields[key] = int(number)
  request = LocalRequest(num_ps=fields.get('ps', DEFAULT_LOCAL_PS),
                         num_workers=fields.get('workers', DEFAULT_LOCAL_WORKERS),
                         base_port=fields.get('port'))
  if request.num_ps < 1 or request.num_workers < 1:
    raise errors.UsageError(f'--cluster={value}: needs ps >= 1 and workers >= 1')
  limit = max_local_servers()
  if request.num_ps + request.num_workers > limit:
    raise errors.UsageError(
        f'--cluster={value}: {request.num_ps + request.num_workers} servers is more '
        f'than this machine runs usefully (at most {limit}: {LOCAL_SERVERS_PER_CORE} '
        f'per core); use a real cluster (--cluster=tf_config) for more')
  if request.base_port is not None:
    last = request.base_port + request.num_ps + request.num_workers + ACTOR_PORT_OFFSET
    if request.base_port < 1024 or last > 65535:
      raise errors.UsageError(
          f'--cluster={value}: ports {request.base_port}..{last} must lie in '
          '1024..65535')
  return request


def max_local_servers() -> int:
  """How many ps and worker servers a loopback cluster may start on this machine."""
  return max(LOCAL_SERVERS_PER_CORE * (os.cpu_count() or 1), MIN_LOCAL_SERVERS)


def split_address(address: str) -> tuple[str, int]:
  """``'host:port'`` (or ``'[v6]:port'``) -> ``(host, port)``; raises ``ValueError``."""
  host, sep, port = address.rpartition(':')
  if not sep or not host or not re.fullmatch(r'\d+', port) or not 0 < int(port) < 65536:
    raise ValueError(f'{address!r} is not host:port')
  return host.strip('[]'), int(port)


def parse_tf_config(text: str | None) -> tuple[ClusterDef, Role]:
  """Reads a ``TF_CONFIG`` value; raises ``errors.UsageError`` saying what is wrong."""
  if text is None or not text.strip():
    raise errors.UsageError(
        f'{TF_CONFIG_VAR} is not set; --cluster=tf_config and '
        'distral_tf.distributed.server read every task\'s role from it '
        '(see docs/cluster.md)')
  try:
    config = json.loads(text)
  except ValueError as e:
    raise errors.UsageError(f'{TF_CONFIG_VAR} is not valid JSON ({e})') from None
  if not isinstance(config, dict):
    raise errors.UsageError(f'{TF_CONFIG_VAR} must be a JSON object with "cluster" '
                            'and "task"')
  cluster, task = config.get('cluster'), config.get('task')
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise errors.UsageError(f'{TF_CONFIG_VAR} needs a "cluster" object and a "task" '
                            'object')
  unknown = sorted(set(cluster) - set(JOBS))
  if unknown:
    raise errors.UsageError(
        f'{TF_CONFIG_VAR}: unsupported job(s) {", ".join(unknown)} in "cluster"; '
        f'this trainer uses {", ".join(JOBS)}')
  jobs = {}
  for job in JOBS:
    addresses = cluster.get(job)
    if (not isinstance(addresses, list) or not addresses or
        not all(isinstance(a, str) for a in addresses)):
      raise errors.UsageError(
          f'{TF_CONFIG_VAR}: "cluster" needs a non-empty list of "host:port" '
          f'strings for "{job}"')
    for a in addresses:
      try:
        split_address(a)
      except ValueError as e:
        raise errors.UsageError(f'{TF_CONFIG_VAR}: {job} address {e}') from None
    jobs[job] = tuple(addresses)
  if len(jobs['chief']) != 1:
    raise errors.UsageError(f'{TF_CONFIG_VAR}: exactly one chief, got '
                            f'{len(jobs["chief"])}')
  spec = ClusterDef(jobs['chief'][0], jobs['ps'], jobs['worker'])
  seen = spec.all_addresses()
  if actor_address(spec) in seen:
    raise errors.UsageError(
        f'{TF_CONFIG_VAR}: {actor_address(spec)} is where the chief serves its actor '
        'hosts (the chief\'s port + 1); give that task or the chief another port')
  duplicates = sorted({a for a in seen if seen.count(a) > 1})
  if duplicates:
    raise errors.UsageError(f'{TF_CONFIG_VAR}: address(es) used twice: '
                            f'{", ".join(duplicates)}')
  job, index = task.get('type'), task.get('index', 0)
  if job not in JOBS:
    raise errors.UsageError(f'{TF_CONFIG_VAR}: "task" "type" must be one of '
                            f'{", ".join(JOBS)}, got {job!r}')
  if isinstance(index, bool) or not isinstance(index, int) or not (
      0 <= index < len(spec.as_dict()[job])):
    raise errors.UsageError(
        f'{TF_CONFIG_VAR}: "task" "index" {index!r} out of range for {job} '
        f'(0..{len(spec.as_dict()[job]) - 1})')
  return spec, Role(job, index)


def read_tf_config(environ=None) -> tuple[ClusterDef, Role]:
  environ = os.environ if environ is None else environ
  return parse_tf_config(environ.get(TF_CONFIG_VAR))


def tf_config_json(cluster: ClusterDef, role: Role) -> str:
  """The ``TF_CONFIG`` value of task ``role`` of ``cluster``."""
  return json.dumps({'cluster': cluster.as_dict(),
                     'task': {'type': role.job, 'index': role.index}})


def port_is_free(port: int) -> bool:
  """Whether a server could listen on ``port`` (on every interface, as gRPC does)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    # Ignore connections in TIME_WAIT, as servers do; a listener still blocks it.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(('', port))
    except OSError:
      return False
  return True


def check_port_free(address: str, what: str) -> None:
  """Raises ``errors.UsageError`` if this host cannot listen on ``address``'s port."""
  _, port = split_address(address)
  if not port_is_free(port):
    raise errors.UsageError(
        f'port {port} of {what} ({address}) is in use on this machine; stop the '
        'process holding it or choose other ports')


def pick_free_ports(count: int) -> list[int]:
  """``count`` distinct ports free right now (the OS picks them)."""
  sockets, ports = [], []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(('', 0))
      sockets.append(s)
      ports.append(s.getsockname()[1])
  finally:
    for s in sockets:
      s.close()
  return ports


def local_cluster_def(request: LocalRequest, host: str = LOOPBACK) -> ClusterDef:
  """Addresses of a loopback cluster; checks given ports are free.

  The port after the chief's is kept free for its actor service
  (``actor_address``).
  """
  n = 1 + request.num_ps + request.num_workers
  if request.base_port is None:
    for _ in range(100):
      ports = pick_free_ports(n)
      if ports[0] + ACTOR_PORT_OFFSET not in ports and port_is_free(
          ports[0] + ACTOR_PORT_OFFSET):
        break
    else:
      raise errors.UsageError('cannot find free ports on this machine')
  else:
    ports = [request.base_port] + list(range(request.base_port + 1 + ACTOR_PORT_OFFSET,
                                             request.base_port + n + ACTOR_PORT_OFFSET))
    for port in [request.base_port + ACTOR_PORT_OFFSET] + ports:
      if not port_is_free(port):
        raise errors.UsageError(
            f'port {port} is in use on this machine; --cluster=local:...,port='
            f'{request.base_port} needs ports {ports[0]}..{ports[-1]} free (or '
            'leave port= out to pick free ones)')
  addresses = [f'{host}:{p}' for p in ports]
  return ClusterDef(addresses[0], tuple(addresses[1:1 + request.num_ps]),
                    tuple(addresses[1 + request.num_ps:]))


def is_reachable(address: str, timeout: float = 1.0) -> bool:
  host, port = split_address(address)
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def wait_reachable(cluster: ClusterDef, roles: Sequence[Role], timeout: float,
                   still_starting: Callable[[], None] | None = None,
                   poll_secs: float = 0.25,
                   report: Callable[[str], None] | None = None,
                   report_secs: float = WAIT_REPORT_SECS) -> None:
  """Waits until every task of ``roles`` accepts connections.

  ``still_starting`` is called between polls (the local launcher raises there
  when a server process exits). ``report``, if given, is called with a line
  naming the tasks (and addresses) still waited for and the seconds waited so
  far: at the first poll that finds one unreachable, then every
  ``report_secs``. Raises ``errors.UsageError`` naming the tasks still
  unreachable after ``timeout`` seconds.
  """
  start = time.monotonic()
  deadline = start + timeout
  next_report = start
  pending = list(roles)
  while True:
    pending = [r for r in pending if not is_reachable(cluster.address(r))]
    if not pending:
      return
    if still_starting is not None:
      still_starting()
    now = time.monotonic()
    if now > deadline:
      raise errors.UsageError(
          f'cannot reach {describe(cluster, pending)} after {timeout:.0f} s; start '
          '"python -m distral_tf.distributed.server" there with the same '
          f'{TF_CONFIG_VAR} "cluster" (see docs/cluster.md) and check the firewall')
    if report is not None and now >= next_report:
      report(f'waiting for {describe(cluster, pending)} to accept connections: '
             f'{now - start:.0f} s of at most {timeout:.0f} s')
      next_report = now + report_secs
    time.sleep(poll_secs)


def describe(cluster: ClusterDef, roles: Iterable[Role]) -> str:
  return ', '.join(f'{r} ({cluster.address(r)})' for r in roles)
