"""Environments in their own processes: start-up of many at once, niceness."""

import functools
import os
import time

import pytest

from distral_tf.envs import level_sets
from distral_tf.envs import process

TWO_ROOMS = level_sets.make_level_set('two_rooms', 1, 0)


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
