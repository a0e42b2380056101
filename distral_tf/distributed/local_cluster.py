"""Starts a whole cluster's servers on this machine, over loopback.

``--cluster=local:ps=N,workers=M`` makes the launching process the chief and
starts every ps and worker task as a child process
(``python -m distral_tf.distributed.server`` with its own ``TF_CONFIG``). A
supervisor thread restarts a worker server that dies, on the same port, so the
coordinator takes it back into service; a parameter server that dies is
reported (its variables are lost: the run stops and resumes from its last
checkpoint when the same command runs again). ``stop`` ends every process.

Children run in their own session (a Ctrl-C at the terminal reaches the chief
only, which saves a checkpoint before stopping them) and exit on their own if
the chief is killed. Their output goes to ``<log_dir>/<job>_<index>.log``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from typing import Callable

from absl import logging

from distral_tf import errors
from distral_tf.distributed import topology

START_TIMEOUT_SECS = 180.0
STOP_TIMEOUT_SECS = 5.0
SUPERVISE_SECS = 0.5
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@dataclasses.dataclass
class ServerProcess:
  """One ps or worker server and its restarts."""
  role: topology.Role
  address: str
  process: subprocess.Popen | None = None
  restarts: int = 0
  restarting: bool = False
  log_path: str = ''

  @property
  def pid(self) -> int | None:
    return self.process.pid if self.process is not None else None

  def alive(self) -> bool:
    return self.process is not None and self.process.poll() is None


class LocalCluster:
  """The ps and worker servers of a loopback cluster, as child processes."""

  def __init__(self, request: topology.LocalRequest, log_dir: str,
               on_event: Callable[[str], None] | None = None):
    self._request = request
    self._log_dir = log_dir
    self._on_event = on_event or (lambda message: logging.warning('%s', message))
    self.cluster: topology.ClusterDef | None = None
    self.servers: list[ServerProcess] = []
    self.lost_ps: list[topology.Role] = []
    # Called (in the supervisor thread) with the role of each restarted worker.
    self.on_restart: Callable[[topology.Role], None] | None = None
    self._lock = threading.Lock()
    self._stopping = threading.Event()
    self._supervisor: threading.Thread | None = None

  # -- lifecycle ---------------------------------------------------------------

  def start(self, timeout: float = START_TIMEOUT_SECS) -> topology.ClusterDef:
    """Starts every server and waits until all accept connections."""
    self.cluster = topology.local_cluster_def(self._request)
    os.makedirs(self._log_dir, exist_ok=True)
    try:
      for role in self.cluster.server_roles():
        server = ServerProcess(role, self.cluster.address(role), log_path=os.path.join(
            self._log_dir, f'{role.job}_{role.index}.log'))
        self.servers.append(server)
        self._spawn(server)
      topology.wait_reachable(self.cluster, self.cluster.server_roles(), timeout,
                              still_starting=self._raise_if_exited)
    except BaseException:
      self.stop()
      raise
    self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                        name='LocalClusterSupervisor')
    self._supervisor.start()
    return self.cluster

  def stop(self) -> None:
    """Stops every server (SIGTERM, then SIGKILL after a grace period)."""
    self._stopping.set()
    if self._supervisor is not None:
      self._supervisor.join(timeout=5 * SUPERVISE_SECS)
    with self._lock:
      for s in self.servers:
        if s.alive():
          s.process.terminate()
      deadline = time.monotonic() + STOP_TIMEOUT_SECS
      for s in self.servers:
        if s.process is None:
          continue
        try:
          s.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
          s.process.kill()
          s.process.wait()

  def __enter__(self) -> 'LocalCluster':
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  # -- processes ---------------------------------------------------------------

  def _spawn(self, server: ServerProcess) -> None:
    topology.check_port_free(server.address, str(server.role))
    env = dict(os.environ)
    env[topology.TF_CONFIG_VAR] = topology.tf_config_json(self.cluster, server.role)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    # The servers import this package wherever the chief was started from.
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [_PACKAGE_ROOT,
                                                      env.get('PYTHONPATH')]))
    with open(server.log_path, 'ab') as log:
      server.process = subprocess.Popen(
          [sys.executable, '-m', 'distral_tf.distributed.server',
           '--exit_with_parent'],
          env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
          start_new_session=True)

  def _raise_if_exited(self) -> None:
    for s in self.servers:
      if s.process is not None and s.process.poll() is not None:
        raise errors.UsageError(
            f'{s.role} server ({s.address}) exited with status '
            f'{s.process.returncode} while starting: {self._log_tail(s)}')

  @staticmethod
  def _log_tail(server: ServerProcess) -> str:
    try:
      with open(server.log_path, errors='replace') as f:
        lines = [l.strip() for l in f if l.strip()]
    except OSError:
      return '(no log)'
    errors_first = [l for l in lines if l.startswith('error:')]
    return (errors_first or lines or ['(empty log)'])[-1] + f' (see {server.log_path})'

  def _supervise(self) -> None:
    while not self._stopping.wait(SUPERVISE_SECS):
      with self._lock:
        if self._stopping.is_set():
          return
        for s in self.servers:
          if not s.alive():
            self._handle_exit(s)

  def _handle_exit(self, s: ServerProcess) -> None:
    if s.role.job == 'ps':
      if s.role not in self.lost_ps:
        self.lost_ps.append(s.role)
        self._on_event(f'{s.role} ({s.address}) exited with status '
                       f'{s.process.returncode}; its variables are lost')
      return
    if not s.restarting:
      s.restarting = True
      self._on_event(f'{s.role} ({s.address}) exited with status '
                     f'{s.process.returncode}; restarting it')
    try:
      self._spawn(s)
    except errors.UsageError:
      return  # Its port is not free yet; tried again at the next poll.
    s.restarting = False
    s.restarts += 1
    if self.on_restart is not None:
      self.on_restart(s.role)

  # -- reporting ---------------------------------------------------------------

  def describe(self) -> list[dict]:
    """Address, pid, liveness and restarts of every server."""
    with self._lock:
      return [dict(job=s.role.job, index=s.role.index, address=s.address,
                   pid=s.pid, alive=s.alive(), restarts=s.restarts,
                   log=s.log_path) for s in self.servers]

  def worker_restarts(self) -> list[int]:
    with self._lock:
      return [s.restarts for s in self.servers if s.role.job == 'worker']
