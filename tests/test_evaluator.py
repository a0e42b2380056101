"""The evaluator of pi_0 (distral_tf/agents/actor.py): when it evaluates, and how long."""

import threading

import dm_env
import numpy as np
import tensorflow as tf

from distral_tf.agents import actor as actor_lib
from distral_tf.envs import batch as batch_lib


class ThreeSteps(dm_env.Environment):
  """Episodes of 3 steps, reward 1 each."""

  def __init__(self):
    self._t = 0

  def reset(self):
    self._t = 0
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    self._t += 1
    obs = np.full(1, self._t, np.float32)
    return dm_env.termination(1.0, obs) if self._t == 3 else dm_env.transition(1.0, obs)

  def observation_spec(self):
    return dm_env.specs.Array((1,), np.float32)

  def action_spec(self):
    return dm_env.specs.DiscreteArray(2)


class Network:
  def pi0_initial_state(self, batch):
    return tf.zeros([batch, 1])


class Recorder:
  def __init__(self):
    self.rows = []
    self.next_eval_seen = []
    self.evaluator = None

  def record(self, task, episode_return, length, policy, env_steps):
    self.rows.append((task, env_steps, episode_return, length, policy))
    self.next_eval_seen.append(self.evaluator.next_eval)


def _act(observations, first, state):
  del first
  return tf.zeros(tf.shape(observations)[:1], tf.int32), state


def _evaluator(progress, recorder, interval, episodes, next_eval=0):
  envs = [batch_lib.LocalEnv(lambda s: ThreeSteps(), 0) for _ in progress.task_names]
  recorder.evaluator = actor_lib.Evaluator(envs, _act, Network(), progress, recorder,
                                           interval, episodes, next_eval)
  return recorder.evaluator


def test_points_passed_while_busy_are_skipped_not_replayed():
  progress = actor_lib.Progress(['a', 'b'], budget=1000, frames=[55, 57])
  recorder = Recorder()
  evaluator = _evaluator(progress, recorder, interval=10, episodes=2)
  stop = threading.Event()
  thread = threading.Thread(target=evaluator.run, args=(stop,))
  thread.start()
  try:
    # Evaluated once (at 55 >= 0); the next point is 60, not 10, 20, ...
    for _ in range(100):
      if evaluator.next_eval == 60 and len(recorder.rows) == 4:
        break
      threading.Event().wait(0.05)
    assert evaluator.next_eval == 60
    assert len(recorder.rows) == 4  # 2 tasks x 2 episodes.
    assert [r[1] for r in recorder.rows] == [55, 55, 57, 57]
    assert all(r[2:] == (3.0, 3, 'distilled') for r in recorder.rows)
  finally:
    stop.set()
    thread.join()


def test_the_last_evaluation_runs_one_episode_per_task_and_ends():
  progress = actor_lib.Progress(['a', 'b', 'c'], budget=100, frames=[120, 130, 140])
  recorder = Recorder()
  evaluator = _evaluator(progress, recorder, interval=50, episodes=5, next_eval=100)
  evaluator.run(threading.Event())  # Returns by itself once the budget is reached.
  assert evaluator.error is None
  assert [(r[0], r[1]) for r in recorder.rows] == [(0, 120), (1, 130), (2, 140)]
  assert evaluator.next_eval == 150
  # The next point was due before any row was written: a checkpoint taken during
  # the evaluation saves it, and a resumed run does not evaluate (and write) again.
  assert recorder.next_eval_seen == [150, 150, 150]


def test_no_evaluation_is_due_at_the_end_when_the_last_point_was_done():
  progress = actor_lib.Progress(['a'], budget=100, frames=[110])
  recorder = Recorder()
  evaluator = _evaluator(progress, recorder, interval=50, episodes=1, next_eval=150)
  evaluator.run(threading.Event())
  assert recorder.rows == []


def test_an_evaluation_running_when_training_ends_is_cut_to_the_last_one():
  progress = actor_lib.Progress(['a', 'b'], budget=100, frames=[0, 0])
  recorder = Recorder()
  # A long evaluation (a million episodes per task) starts at frame 0.
  evaluator = _evaluator(progress, recorder, interval=50, episodes=10**6)
  thread = threading.Thread(target=evaluator.run, args=(threading.Event(),))
  thread.start()
  for _ in range(200):
    if len(recorder.rows) >= 3:
      break
    threading.Event().wait(0.05)
  with progress.lock:
    progress.frames[:] = [100, 100]  # Training reaches its budget meanwhile.
  thread.join(timeout=30)
  assert not thread.is_alive()
  assert evaluator.error is None
  during = [r for r in recorder.rows if r[1] == 0]
  assert 3 <= len(during) < 10**6 and {r[0] for r in during} == {0}  # Task b never began.
  # Then the last evaluation: one episode per task at the budget.
  assert [(r[0], r[1]) for r in recorder.rows if r[1] == 100] == [(0, 100), (1, 100)]
