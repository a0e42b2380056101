"""An environment in its own process, behind a tiny pipe protocol.

DeepMind Lab allows one instance per process, and environments stepped in
separate processes run in parallel with the learner. ``EnvProcess`` builds the
environment in a child process from a picklable factory and forwards
``reset``/``step``. Stepping is split in ``send_step``/``receive`` so that a
caller can step many environments at once.

If the child process dies (a crash of the environment's native code), the next
call restarts it with a new seed offset and returns the first time step of a
fresh episode. A ``FIRST`` time step that arrives where a ``MID`` or ``LAST`` was
expected therefore means "the episode was interrupted"; ``restarts`` counts
them. A process that does not answer a step or reset within ``step_timeout``
seconds (hung, or stopped) is killed and restarted the same way, with a
warning; one that does not finish starting within ``start_timeout`` seconds is
killed and raises ``EnvError``. A process that keeps dying as it restarts raises
``EnvError`` after ``MAX_RESTART_ATTEMPTS`` tries. Python exceptions raised by
the environment are not crashes: they are re-raised in the caller as
``EnvError`` with the child's traceback.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import socket
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Sequence

import dm_env
import numpy as np
from absl import logging

# Seeds of restarted environments are offset by this much per restart.
RESTART_SEED_STRIDE = 1_000_003
# Consecutive deaths of a restarted process before EnvProcess gives up.
MAX_RESTART_ATTEMPTS = 3
# Seconds an environment may take to answer one step or reset before it counts as
# hung (generous: the slowest level sets step in milliseconds).
STEP_TIMEOUT_SECS = 60.0
# Seconds an environment may take to start (a DeepMind Lab level compiles then).
START_TIMEOUT_SECS = 600.0


# The child is a fresh interpreter: it imports only the environment's own modules
# (never the parent's main module, TensorFlow or its threads).
_CHILD_CODE = ('import sys; from distral_tf.envs import process; '
               'process.child_main(int(sys.argv[1]), int(sys.argv[2]))')


class EnvError(RuntimeError):
  """An exception raised by the environment inside its process."""


class _ProcessDied(EnvError):
  """The environment's process ended before it answered."""


class _ProcessHung(_ProcessDied):
  """The environment's process did not answer in time."""

  def __init__(self, name: str, reason: str):
    super().__init__(f'{name}: {reason}')
    self.reason = reason


def _pack(timestep: dm_env.TimeStep, cpu: tuple[float, float]) -> tuple:
  """A time step and the child's CPU seconds so far: (in the environment, in all)."""
  return (int(timestep.step_type), timestep.reward, timestep.discount,
          timestep.observation, cpu)


def _unpack(packed: tuple) -> tuple[dm_env.TimeStep, tuple[float, float]]:
  step_type, reward, discount, observation, cpu = packed
  return dm_env.TimeStep(dm_env.StepType(step_type), reward, discount, observation), cpu


def child_main(fd: int, niceness: int = 0) -> None:
  """Entry point of the child process: receives the factory, then serves calls.

  Its standard output goes to ``os.devnull``: what an environment prints there
  (DeepMind Lab's level scripts print every maze they generate) is not the
  run's output. Errors still reach standard error, and the parent in messages.
  """
  if niceness:
    os.nice(niceness)
  sys.stdout.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.close(devnull)
  conn = multiprocessing.connection.Connection(fd)
  try:
    sys.path[:] = conn.recv()  # Before unpickling the factory, which imports modules.
    try:
      make_env, seed = conn.recv()
    except (EOFError, OSError):
      raise
    except Exception:  # pylint: disable=broad-except
      conn.send(('error', traceback.format_exc()))
      conn.close()
      return
    _serve(conn, make_env, seed)
  except (EOFError, OSError):
    # The parent went away (stopped while the environments were starting, or
    # killed): nothing is left to serve, and nothing to report.
    conn.close()


def _serve(conn: multiprocessing.connection.Connection,
           make_env: Callable[[int], dm_env.Environment], seed: int) -> None:
  """Builds the environment and serves calls until 'close'."""
  try:
    env = make_env(seed)
  except Exception:  # pylint: disable=broad-except
    conn.send(('error', traceback.format_exc()))
    conn.close()
    return
  conn.send(('ok', (env.observation_spec(), env.action_spec())))
  env_cpu = 0.0  # CPU seconds spent inside the environment's step and reset.
  while True:
    try:
      method, arg = conn.recv()
    except (EOFError, KeyboardInterrupt):
      break
    if method == 'close':
      break
    try:
      if method in ('step', 'reset'):
        before = time.process_time()
        timestep = env.step(arg) if method == 'step' else env.reset()
        now = time.process_time()
        env_cpu += now - before
        result = _pack(timestep, (env_cpu, now))
      else:
        result = getattr(env, method)(*arg)
      conn.send(('ok', result))
    except Exception:  # pylint: disable=broad-except
      conn.send(('error', traceback.format_exc()))
  try:
    env.close()
  finally:
    conn.close()


class EnvProcess:
  """A ``dm_env``-like handle on an environment living in another process.

  ``niceness`` (0-19) is added to the process's niceness: on cores shared with
  the learner, the learner and the batched inference, which every environment
  waits on, then come first. ``step_timeout`` and ``start_timeout`` bound the
  wait for an answer in seconds. ``start_all`` starts many at once.
  """

  def __init__(self, make_env: Callable[[int], dm_env.Environment], seed: int,
               restart_on_crash: bool = True, name: str = 'env', niceness: int = 0,
               step_timeout: float = STEP_TIMEOUT_SECS,
               start_timeout: float = START_TIMEOUT_SECS, _wait: bool = True):
    self._make_env = make_env
    self._seed = seed
    self._restart_on_crash = restart_on_crash
    self.name = name
    self.niceness = niceness
    self.step_timeout = step_timeout
    self.start_timeout = start_timeout
    self.restarts = 0
    self._process = None
    self._conn = None
    self._pending = None  # 'step' or 'reset' while a call is in flight.
    # CPU seconds of the process (in the environment, in all) at its last
    # answer, and those of the processes it replaced.
    self._cpu = (0.0, 0.0)
    self._cpu_before = (0.0, 0.0)
    self._launch()
    if _wait:
      self._handshake()

  # -- process management ---------------------------------------------------

  def _start(self) -> None:
    self._launch()
    self._handshake()

  def _launch(self) -> None:
    """Starts the process and sends it the factory; ``_handshake`` waits for it."""
    parent, child = socket.socketpair()
    seed = self._seed + self.restarts * RESTART_SEED_STRIDE
    self._process = subprocess.Popen(
        [sys.executable, '-c', _CHILD_CODE, str(child.fileno()), str(self.niceness)],
        pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
        # Its own session: Ctrl-C in the terminal reaches the trainer only, which
        # then closes its environments in order (no tracebacks, no restarts).
        start_new_session=True)
    child.close()
    self._conn = multiprocessing.connection.Connection(parent.detach())
    try:
      self._conn.send(list(sys.path))
      self._conn.send((self._make_env, seed))
    except OSError:
      pass  # The process died at once; ``_handshake`` reports it.

  def _handshake(self) -> None:
    """Waits until the environment is built; raises if it failed, died or hung."""
    try:
      status, payload = self._recv(self.start_timeout, 'start')
    except _ProcessHung:
      self._kill()
      raise
    except (EOFError, OSError):
      self._process.wait(timeout=5)
      raise _ProcessDied(f'{self.name}: environment process died while starting '
                         f'(exit code {self._process.returncode})') from None
    if status == 'error':
      self._process.wait(timeout=5)
      raise EnvError(f'{self.name}: environment failed to start:\n{payload}')
    self._observation_spec, self._action_spec = payload

  def _recv(self, timeout: float, what: str) -> Any:
    """The next message; raises ``_ProcessHung`` if none comes within ``timeout``."""
    if not self._conn.poll(timeout):
      raise _ProcessHung(self.name, f'environment process {self._process.pid} did not '
                         f'{what} within {timeout:g} s')
    return self._conn.recv()

  def _restart(self, why: str = 'environment process died') -> dm_env.TimeStep:
    """Starts a new process and resets it; gives up after repeated deaths."""
    for _ in range(MAX_RESTART_ATTEMPTS):
      self.restarts += 1
      logging.warning('%s: %s; restarting it (restart %d).', self.name, why,
                      self.restarts)
      why = 'environment process died'
      self._kill()
      try:
        self._start()
        self._conn.send(('reset', None))
        return self._receive_ok()
      except (_ProcessDied, EOFError, OSError):
        continue
    raise EnvError(f'{self.name}: environment process died {MAX_RESTART_ATTEMPTS} '
                   'times in a row while restarting; giving up')

  def _kill(self) -> None:
    self._cpu_before = self.cpu_seconds()
    self._cpu = (0.0, 0.0)
    if self._process is not None and self._process.poll() is None:
      self._process.kill()
    if self._process is not None:
      self._process.wait(timeout=5)
    if self._conn is not None:
      self._conn.close()

  @property
  def pid(self) -> int:
    return self._process.pid

  def cpu_seconds(self) -> tuple[float, float]:
    """CPU seconds of this environment's processes so far, as of their last answer:
    (inside the environment's step and reset, in all)."""
    return (self._cpu_before[0] + self._cpu[0], self._cpu_before[1] + self._cpu[1])

  # -- dm_env-like interface --------------------------------------------------

  def observation_spec(self) -> Any:
    return self._observation_spec

  def action_spec(self) -> Any:
    return self._action_spec

  def send_reset(self) -> None:
    self._send('reset', None)

  def send_step(self, action: Any) -> None:
    self._send('step', action)

  def _send(self, method: str, arg: Any) -> None:
    assert self._pending is None, 'a call is already in flight'
    self._pending = method
    try:
      self._conn.send((method, arg))
    except (BrokenPipeError, ConnectionResetError, OSError):
      pass  # Noticed in receive(), which restarts the process.

  def receive(self) -> dm_env.TimeStep:
    """The time step of the call in flight (a restart's FIRST step after a crash)."""
    assert self._pending is not None, 'no call in flight'
    self._pending = None
    try:
      return self._receive_ok()
    except _ProcessHung as e:
      if not self._restart_on_crash:
        self._kill()
        raise EnvError(f'{e}; killed it') from None
      return self._restart(f'{e.reason}; killed it')
    except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
      if not self._restart_on_crash:
        raise EnvError(f'{self.name}: environment process died') from None
      return self._restart()

  def fileno(self) -> int:
    """Its connection's descriptor: ``multiprocessing.connection.wait`` takes it."""
    return self._conn.fileno()

  def _receive_ok(self) -> dm_env.TimeStep:
    status, payload = self._recv(self.step_timeout, 'answer')
    if status == 'error':
      raise EnvError(f'{self.name}: environment raised:\n{payload}')
    timestep, self._cpu = _unpack(payload)
    return timestep

  def reset(self) -> dm_env.TimeStep:
    self.send_reset()
    return self.receive()

  def call(self, method: str, *args) -> Any:
    """The environment's ``method(*args)``, run in its process (no call in flight)."""
    assert self._pending is None, 'a call is already in flight'
    self._conn.send((method, args))
    status, payload = self._recv(self.step_timeout, 'answer')
    if status == 'error':
      raise EnvError(f'{self.name}: environment raised:\n{payload}')
    return payload

  def step(self, action: Any) -> dm_env.TimeStep:
    self.send_step(action)
    return self.receive()

  def close(self) -> None:
    if self._process is None:
      return
    try:
      if self._process.poll() is None:
        self._conn.send(('close', None))
        self._process.wait(timeout=5)
    except (BrokenPipeError, ConnectionResetError, OSError,
            subprocess.TimeoutExpired):
      pass
    self._kill()
    self._process = None


def start_all(specs: Sequence[tuple[Callable[[int], dm_env.Environment], int, str]],
              niceness: int = 0, step_timeout: float = STEP_TIMEOUT_SECS,
              start_timeout: float = START_TIMEOUT_SECS) -> list[EnvProcess]:
  """One ``EnvProcess`` per ``(make_env, seed, name)``, their start-ups overlapping.

  All processes are launched before any is waited on, so building N
  environments takes about as long as the slowest one on N free cores. If one
  fails to start, all are closed and its error is raised.
  """
  envs: list[EnvProcess] = []
  try:
    for make_env, seed, name in specs:
      envs.append(EnvProcess(make_env, seed, name=name, niceness=niceness,
                             step_timeout=step_timeout, start_timeout=start_timeout,
                             _wait=False))
    for env in envs:
      env._handshake()  # pylint: disable=protected-access
  except BaseException:
    for env in envs:
      env.close()
    raise
  return envs


def step_all(envs: list[EnvProcess], actions: np.ndarray) -> list[dm_env.TimeStep]:
  """Steps every environment in parallel with its action; returns their time steps."""
  for env, action in zip(envs, actions):
    env.send_step(action)
  return [env.receive() for env in envs]


def reset_all(envs: list[EnvProcess]) -> list[dm_env.TimeStep]:
  for env in envs:
    env.send_reset()
  return [env.receive() for env in envs]
