"""The evaluator of pi_0 (distral_tf/agents/evaluator.py): when, how long, at what cost."""

import threading

import dm_env
import numpy as np
import pytest
import tensorflow as tf

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import evaluator as evaluator_lib
from distral_tf.envs import batch as batch_lib


class ThreeSteps(dm_env.Environment):
  """Episodes of ``length`` steps (default 3), reward 1 each."""

  def __init__(self, length=3):
    self._t = 0
    self._length = length

  def reset(self):
    self._t = 0
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    self._t += 1
    obs = np.full(1, self._t, np.float32)
    return (dm_env.termination(1.0, obs) if self._t == self._length
            else dm_env.transition(1.0, obs))

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


class Act:
  """pi_0's batched inference: action 0 everywhere; counts calls and batch sizes."""

  def __init__(self):
    self.batches = []

  def __call__(self, observations, first, state):
    del first
    self.batches.append(len(observations))
    return tf.zeros(tf.shape(observations)[:1], tf.int32), state


def _evaluator(progress, recorder, interval, episodes, next_eval=0, lengths=None,
               share=None, frames_per_step=1, act=None):
  lengths = lengths or [3] * len(progress.task_names)
  envs = [batch_lib.LocalEnv(lambda s, n=n: ThreeSteps(n), 0) for n in lengths]
  recorder.evaluator = evaluator_lib.Evaluator(
      envs, act or Act(), Network(), progress, recorder, interval, episodes, next_eval,
      frames_per_step=frames_per_step, share=share)
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
    assert sorted((r[0], r[1]) for r in recorder.rows) == [(0, 55), (0, 55), (1, 57),
                                                           (1, 57)]
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
  assert sorted((r[0], r[1]) for r in recorder.rows) == [(0, 120), (1, 130), (2, 140)]
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
  assert 3 <= len(during) < 10**6 and {r[0] for r in during} == {0, 1}  # Side by side.
  # Then the last evaluation: one episode per task at the budget.
  assert sorted((r[0], r[1]) for r in recorder.rows if r[1] == 100) == [(0, 100), (1, 100)]


def test_tasks_are_evaluated_side_by_side_with_one_inference_per_step():
  progress = actor_lib.Progress(['a', 'b', 'c'], budget=100, frames=[100, 100, 100])
  recorder, act = Recorder(), Act()
  evaluator = _evaluator(progress, recorder, interval=50, episodes=1, next_eval=100,
                         lengths=[2, 7, 4], frames_per_step=4, act=act)
  evaluator.run(threading.Event())
  assert evaluator.error is None
  # As many inferences as the longest episode has steps, each over every task.
  assert act.batches == [3] * 7
  assert sorted((r[0], r[2], r[3]) for r in recorder.rows) == [(0, 2.0, 2), (1, 7.0, 7),
                                                               (2, 4.0, 4)]
  assert evaluator.frames == 4 * (2 + 7 + 4)  # Only the episodes' own steps.


class Training(threading.Thread):
  """Adds ``per_tick`` frames to every task every few milliseconds, up to the budget."""

  def __init__(self, progress, per_tick):
    super().__init__(daemon=True)
    self.progress, self.per_tick = progress, per_tick

  def run(self):
    while not self.progress.all_done():
      with self.progress.lock:
        self.progress.frames += self.per_tick
      threading.Event().wait(0.002)


def test_evaluation_keeps_within_its_share_of_the_training_frames():
  progress = actor_lib.Progress(['a', 'b'], budget=20_000, frames=[0, 0])
  recorder = Recorder()
  share, frames_per_step = 0.1, 4
  evaluator = _evaluator(progress, recorder, interval=10**9, episodes=10**6,
                         share=share, frames_per_step=frames_per_step, lengths=[5, 5])
  seen = []
  record = recorder.record

  def record_and_check(*args, **kwargs):
    with progress.lock:
      trained = int(progress.frames.sum())
    seen.append((evaluator.frames, trained))
    record(*args, **kwargs)

  recorder.record = record_and_check
  thread = threading.Thread(target=evaluator.run, args=(threading.Event(),))
  thread.start()
  Training(progress, per_tick=2).start()
  thread.join(timeout=60)
  assert not thread.is_alive() and evaluator.error is None
  during = [(f, t) for f, t in seen if t < 40_000]
  assert len(during) > 10  # It did evaluate while training ran ...
  # ... never more than its share, but for the step of every task in flight.
  assert all(f <= share * t + 2 * frames_per_step for f, t in during)
  assert evaluator.frames > 0.5 * share * 40_000 - 2 * 5 * frames_per_step  # Used most of it.


def test_share_zero_never_evaluates():
  progress = actor_lib.Progress(['a', 'b'], budget=2_000, frames=[0, 0])
  recorder = Recorder()
  evaluator = _evaluator(progress, recorder, interval=100, episodes=3, share=0.0)
  thread = threading.Thread(target=evaluator.run, args=(threading.Event(),))
  thread.start()
  threading.Event().wait(0.3)
  # Nothing started: no environment reset, no status, no inference.
  assert recorder.rows == [] and evaluator.status() == ''
  assert all(env._timestep is None for env in evaluator._envs)  # pylint: disable=protected-access
  Training(progress, per_tick=5).start()
  thread.join(timeout=30)
  assert not thread.is_alive() and evaluator.error is None
  assert recorder.rows == [] and evaluator.frames == 0
  assert evaluator.status() == ''


@pytest.mark.parametrize('share,recorded', [(0.1, False), (0.5, True)])
def test_the_final_evaluation_may_step_its_share_of_the_run(capsys, share, recorded):
  # 2 tasks x 100 frames trained; episodes of 10 steps of 4 frames: 80 frames.
  progress = actor_lib.Progress(['a', 'b'], budget=100, frames=[100, 100])
  recorder = Recorder()
  evaluator = _evaluator(progress, recorder, interval=100, episodes=1, next_eval=100,
                         lengths=[10, 10], share=share, frames_per_step=4)
  evaluator.run(threading.Event())
  assert evaluator.error is None
  out = capsys.readouterr().out
  if recorded:  # 80 frames within 0.5 x 200.
    assert sorted((r[0], r[1]) for r in recorder.rows) == [(0, 100), (1, 100)]
    assert 'stopped at its share' not in out
  else:  # 0.1 x 200 = 20 frames: cut after 3 steps of both tasks (24 frames).
    assert recorder.rows == [] and evaluator.frames == 24
    assert ('The final evaluation of pi_0 stopped at its share of the run\'s frames '
            '(20 frames, --eval_share=0.1) before the episodes of a, b ended') in out
