"""Environments in their own processes: start-up of many at once, niceness, hangs."""

import functools
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time

import dm_env
from dm_env import specs
import numpy as np
import pytest

from distral_tf.envs import level_sets
from distral_tf.envs import process

TWO_ROOMS = level_sets.make_level_set('two_rooms', 1, 0)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rendezvous_env(directory: str, count: int, fail: bool, seed: int):
  """Builds a grid world only once ``count`` processes have all started building.

  Start-ups that ran one after another would never meet here.
  """
  open(os.path.join(directory, f'{seed}'), 'w').close()
  deadline = time.time() + 60
  while len(os.listdir(directory)) < count:
    if time.time() > deadline:
      raise RuntimeError('the other environments never started')
    time.sleep(0.01)
  if fail:
    raise ValueError('this environment cannot be built')
  return TWO_ROOMS.tasks[0].make_env(seed)


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def test_start_all_builds_the_environments_together_at_the_given_niceness(tmp_path):
  make = functools.partial(_rendezvous_env, str(tmp_path), 4, False)
  envs = process.start_all([(make, seed, f'env{seed}') for seed in range(4)], niceness=7)
  try:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert [os.getpriority(os.PRIO_PROCESS, env.pid) for env in envs] == [
        min(base + 7, 19)] * 4
    assert all(t.first() for t in process.reset_all(envs))
    assert all(t.mid() for t in process.step_all(envs, [0, 1, 2, 3]))
  finally:
    for env in envs:
      env.close()


def test_start_all_closes_every_process_when_one_fails(tmp_path, monkeypatch):
  started = []
  real_init = process.EnvProcess.__init__

  def recording_init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    started.append(self.pid)

  monkeypatch.setattr(process.EnvProcess, '__init__', recording_init)
  specs = [(functools.partial(_rendezvous_env, str(tmp_path), 3, seed == 1), seed,
            f'env{seed}') for seed in range(3)]
  with pytest.raises(process.EnvError, match='env1: environment failed to start'):
    process.start_all(specs)
  assert len(started) == 3 and not any(_alive(pid) for pid in started)


def _slow_to_start_env(seed: int):
  """Takes far too long to build."""
  time.sleep(600)
  return TWO_ROOMS.tasks[0].make_env(seed)


def test_a_stopped_environment_is_killed_and_restarted(caplog):
  env = process.EnvProcess(TWO_ROOMS.tasks[0].make_env, 3, name='stopped',
                           step_timeout=1.0)
  try:
    assert env.reset().first()
    assert env.step(0).mid()
    stopped = env.pid
    os.kill(stopped, signal.SIGSTOP)  # Hangs it, as a deadlock in native code would.
    start = time.monotonic()
    timestep = env.step(1)
    assert time.monotonic() - start < 30
    # The restarted environment starts a fresh episode; the run goes on.
    assert timestep.first() and env.restarts == 1
    assert env.pid != stopped and not _alive(stopped)
    assert env.step(2).mid()
    assert 'stopped: environment process' in caplog.text
    assert 'did not answer within 1 s; killed it; restarting it' in caplog.text
  finally:
    env.close()


def test_a_stopped_environment_without_restarts_is_an_error():
  env = process.EnvProcess(TWO_ROOMS.tasks[0].make_env, 3, name='stopped',
                           restart_on_crash=False, step_timeout=0.5)
  try:
    env.reset()
    stopped = env.pid
    os.kill(stopped, signal.SIGSTOP)
    with pytest.raises(process.EnvError, match='did not answer within 0.5 s'):
      env.step(0)
    assert not _alive(stopped)
  finally:
    env.close()


def test_an_environment_that_never_starts_is_killed(monkeypatch):
  started = []
  real_launch = process.EnvProcess._launch  # pylint: disable=protected-access

  def recording_launch(self):
    real_launch(self)
    started.append(self.pid)

  monkeypatch.setattr(process.EnvProcess, '_launch', recording_launch)
  start = time.monotonic()
  with pytest.raises(process.EnvError, match='slow: environment process .* did not '
                     'start within 2 s'):
    process.start_all([(_slow_to_start_env, 0, 'slow')], start_timeout=2.0)
  assert time.monotonic() - start < 30
  assert len(started) == 1 and not _alive(started[0])


@pytest.mark.parametrize('sent', [0, 1])
def test_a_child_whose_parent_goes_away_while_starting_exits_silently(sent):
  """The parent stopped (Ctrl-C) before or while sending the factory."""
  parent, child = socket.socketpair()
  proc = subprocess.Popen(
      [sys.executable, '-c', process._CHILD_CODE, str(child.fileno()), '0'],  # pylint: disable=protected-access
      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  child.close()
  conn = multiprocessing.connection.Connection(parent.detach())
  if sent:
    conn.send(list(sys.path))
  conn.close()
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0
  assert not err and not out, err


class _Chatty(dm_env.Environment):
  """Prints on every reset, as DeepMind Lab's level scripts do."""

  def reset(self):
    os.write(1, b'MAZE GENERATED\n')
    print('printed by the environment', flush=True)
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    return dm_env.transition(0.0, np.zeros(1, np.float32))

  def observation_spec(self):
    return specs.Array((1,), np.float32)

  def action_spec(self):
    return specs.DiscreteArray(2)


def _make_chatty(seed):
  del seed
  return _Chatty()


def test_what_an_environment_prints_stays_out_of_the_runs_output():
  code = ('from distral_tf.envs import process; import test_env_process as t; '
          'e = process.EnvProcess(t._make_chatty, 0, name="chatty"); e.reset(); e.close(); '
          'print("parent done")')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [REPO, os.path.dirname(os.path.abspath(__file__))])))
  assert out.returncode == 0, out.stderr
  assert out.stdout == 'parent done\n'
