"""Where a run's CPU goes (distral_tf/agents/cpu_use.py), measured on real threads
and processes that burn known amounts of CPU."""

import functools
import os
import signal
import threading
import time

import dm_env
import numpy as np
import pytest

from distral_tf.agents import cpu_use
from distral_tf.envs import process


def _burn(seconds: float) -> None:
  start = time.thread_time()
  while time.thread_time() - start < seconds:
    pass


class BurningEnv(dm_env.Environment):
  """Every step burns ``step_cpu`` seconds of CPU inside the environment."""

  def __init__(self, step_cpu: float):
    self._step_cpu = step_cpu

  def reset(self):
    return dm_env.restart(np.zeros(2, np.float32))

  def step(self, action):
    _burn(self._step_cpu)
    return dm_env.transition(0.0, np.zeros(2, np.float32))

  def observation_spec(self):
    return dm_env.specs.Array((2,), np.float32)

  def action_spec(self):
    return dm_env.specs.DiscreteArray(2)


def _make_burning_env(step_cpu: float, seed: int) -> BurningEnv:
  del seed
  return BurningEnv(step_cpu)


def test_a_thread_clock_splits_the_thread_cpu_into_its_sections():
  clock = cpu_use.ThreadClock()

  def work():
    clock.start()
    _burn(0.3)
    clock.mark('a')
    time.sleep(0.3)  # Waiting is not CPU.
    _burn(0.1)
    clock.mark('b')

  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
  seconds = clock.read()
  assert abs(seconds['a'] - 0.3) < 0.03 and abs(seconds['b'] - 0.1) < 0.03


def test_environment_processes_report_their_cpu_inside_and_outside_the_environment():
  env = process.EnvProcess(functools.partial(_make_burning_env, 0.02), 0)
  try:
    env.reset()
    before = env.cpu_seconds()
    for _ in range(20):
      env.step(0)
    inside, total = (a - b for a, b in zip(env.cpu_seconds(), before))
    assert abs(inside - 20 * 0.02) < 0.05
    assert total >= inside
    # A killed process's CPU stays counted: the restarted one adds to it.
    os.kill(env.pid, signal.SIGKILL)
    assert env.step(0).first()  # Restarted, the step lost.
    for _ in range(10):
      env.step(0)
    assert env.cpu_seconds()[0] - before[0] > 20 * 0.02 + 9 * 0.02 - 0.05
  finally:
    env.close()


def test_accounting_attributes_each_part_and_keeps_threads_that_ended():
  actor, learner, evaluator = (cpu_use.ThreadClock() for _ in range(3))
  env = process.EnvProcess(functools.partial(_make_burning_env, 0.01), 0)
  env.reset()
  go, stop = threading.Event(), threading.Event()

  def act():
    actor.start()
    go.wait()
    for _ in range(10):
      _burn(0.01)
      actor.mark('inference')
      env.step(0)  # 0.01 s inside the environment's process.
      actor.mark('observations')
    stop.wait()

  def learn():
    learner.start()
    go.wait()
    _burn(0.2)
    learner.mark('learning')
    stop.wait()

  def evaluate():
    evaluator.start()
    go.wait()
    _burn(0.15)
    evaluator.mark('evaluation')  # Then the thread ends.

  threads = [threading.Thread(target=f) for f in (act, learn, evaluate)]
  for thread in threads:
    thread.start()
  try:
    accounting = cpu_use.Accounting([actor], [learner], [env], [], evaluator,
                                    threading.get_native_id())
    before = accounting.snapshot()
    go.set()
    threads[2].join()
    while actor.read().get('observations', 0) == 0 or 'learning' not in learner.read():
      time.sleep(0.01)
    time.sleep(0.3)
    after = accounting.snapshot()
  finally:
    stop.set()
    for thread in threads:
      thread.join()
    env.close()
  used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in cpu_use.PARTS
          if k != cpu_use.IDLE}
  assert abs(used[cpu_use.INFERENCE] - 0.1) < 0.03
  assert abs(used[cpu_use.LEARNING] - 0.2) < 0.03
  assert abs(used[cpu_use.EVALUATOR] - 0.15) < 0.03  # Though its thread ended.
  assert abs(used[cpu_use.ENV_STEP] - 0.1) < 0.03
  assert used[cpu_use.OBSERVATIONS] < 0.05  # Waiting for the process is not CPU.

  table = cpu_use.breakdown(before, after, frames=1000, cores=2)
  assert abs(table[cpu_use.LEARNING] - 0.2) < 0.03  # ms per frame: 0.2 s / 1000.
  assert abs(table['total'] - 2 * (after['wall'] - before['wall'])) < 1e-9
  assert abs(sum(table[p] for p in cpu_use.PARTS) - table['total']) < 1e-9


@pytest.mark.skipif(not os.path.exists(f'/proc/{os.getpid()}/schedstat'),
                    reason='no scheduler statistics (/proc/<pid>/schedstat)')
def test_threads_sharing_one_core_are_counted_waiting_for_it():
  """Two busy threads on one core: each waits about half the time, outside the sum."""
  previous = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(previous)})  # Threads started now inherit it.
  try:
    accounting = cpu_use.Accounting([], [], [], [], None, threading.get_native_id())
    threads = [threading.Thread(target=_burn, args=(0.2,)) for _ in range(2)]
    before = accounting.snapshot()
    for thread in threads:
      thread.start()
    # Measured while they still run: a thread's counters go with it.
    while before[cpu_use.WAITING] + 0.1 > accounting.snapshot()[cpu_use.WAITING]:
      assert any(thread.is_alive() for thread in threads), 'neither thread waited'
      time.sleep(0.01)
    after = accounting.snapshot()
    for thread in threads:
      thread.join()
  finally:
    os.sched_setaffinity(0, previous)
  table = cpu_use.breakdown(before, after, frames=1000, cores=2)
  assert table[cpu_use.WAITING] >= 0.1  # ms per frame: >= 0.1 s / 1000 frames.
  assert abs(sum(table[p] for p in cpu_use.PARTS) - table['total']) < 1e-9
  assert any(line.startswith('threads waiting for a core')
             for line in cpu_use.format_table(table))
