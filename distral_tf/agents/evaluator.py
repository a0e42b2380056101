"""Evaluation of the distilled policy pi_0 on every task, at a bounded cost.

The ``Evaluator`` thread plays pi_0 (eq. 6: pi_0 = softmax h) on every task
when the slowest task reaches the next evaluation point: ``episodes`` episodes
per task, all tasks at once, their environments stepped together with one
batched inference of pi_0 per step. The next point is then the following
multiple of ``interval`` frames per task (points passed while evaluating are
skipped, never made up).

Its cost is bounded (``share``, ``--eval_share``): while training runs it
steps only while its own frames stay within that share of the training frames
stepped since it started; ``share=0`` evaluates only at the end. Once every
task reached its budget, one last evaluation runs if one is due, one episode
per task, side by side, at full speed; an evaluation still running then is
abandoned (its unfinished episodes unrecorded). The last one may step at most
the share of all the run's training frames: in a run too short for that, the
episodes still running when it is spent are cut, unrecorded, and a line says
so. Evaluation thus steps at most twice the share of the training frames, and
a run ends soon after its last training frame. ``status`` says what it is
doing, for the progress line.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from distral_tf.agents import actor as actor_lib
from distral_tf.agents import cpu_use

# Seconds between two looks at the training frames while the share is spent.
WAIT_SECS = 0.05


class Evaluator:
  """Evaluates pi_0 on every task at intervals of frames (rows ``policy=distilled``).

  ``envs``: one environment per task, with ``send_reset``, ``send_step`` and
  ``receive`` (``envs.process.EnvProcess`` or ``envs.batch.LocalEnv``).
  ``act_fn(observations, first, state) -> (actions, state)`` acts with pi_0
  on a batch of them (``actor.make_pi0_act_fn``). ``share``: the largest
  ratio of evaluation frames to training frames while training runs; None
  for no bound. ``before_evaluation`` is called as each evaluation starts (the
  cluster's chief copies the policy from the ps tasks there).
  """

  def __init__(self, envs: Sequence[Any], act_fn: Callable, network,
               progress: actor_lib.Progress, recorder: actor_lib.EpisodeRecorder,
               interval: int, episodes: int, next_eval: int = 0,
               frames_per_step: int = 1, share: float | None = None,
               before_evaluation: Callable[[], None] | None = None):
    self._envs = list(envs)
    self._before_evaluation = before_evaluation
    self._act = act_fn
    self._network = network
    self._progress = progress
    self._recorder = recorder
    self._interval = interval
    self._episodes = episodes
    self._frames_per_step = frames_per_step
    self._share = share
    self.next_eval = next_eval
    self.frames = 0  # Frames stepped in evaluation by this evaluator.
    self.error: BaseException | None = None
    self._trained_at_start = self._training_frames()
    self._lock = threading.Lock()
    self._status = ''
    self.clock = cpu_use.ThreadClock()

  @property
  def environments(self) -> list:
    return list(self._envs)

  def status(self) -> str:
    """What it is doing: '' when idle, else the evaluation and its progress."""
    with self._lock:
      return self._status

  def _set_status(self, text: str) -> None:
    with self._lock:
      self._status = text

  def _training_frames(self) -> int:
    with self._progress.lock:
      return int(self._progress.frames.sum())

  def run(self, stop: threading.Event) -> None:
    self.clock.start()
    try:
      while not stop.is_set():
        with self._progress.lock:
          reached = int(self._progress.frames.min())
        done = self._progress.all_done()
        if reached >= self.next_eval:
          # Advanced first: a checkpoint taken during the evaluation must not
          # have it run again on resume (its rows are already in the results).
          self.next_eval = (reached // self._interval + 1) * self._interval
          self.evaluate(stop, episodes=1 if done else self._episodes, final=done)
        elif done:
          return
        else:
          time.sleep(0.2)
        self.clock.mark('evaluation')
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e
      stop.set()
    finally:
      self.clock.mark('evaluation')
      self._set_status('')

  def _within_share(self) -> bool:
    if self._share is None:
      return True
    return self.frames < self._share * (self._training_frames() - self._trained_at_start)

  def evaluate(self, stop: threading.Event, episodes: int, final: bool = False) -> None:
    """``episodes`` of pi_0 on every task, side by side; records each as it ends.

    A non-final evaluation keeps within the share and ends when training does.
    The final one may step the share of all the run's training frames; episodes
    still running when it is spent are cut, unrecorded, with a line saying so.
    """
    allowance = None  # Frames the final evaluation may step.
    if final and self._share is not None:
      allowance = self._share * self._training_frames()
    start_frames = self.frames

    def spent() -> bool:
      return allowance is not None and self.frames - start_frames >= allowance

    def cut() -> bool:
      return stop.is_set() or spent() or (not final and self._progress.all_done())

    with self._progress.lock:
      steps = self._progress.frames.copy()  # Each task's rows carry its frames now.
    envs, n = self._envs, len(self._envs)
    left = np.full(n, episodes)
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    kind = 'final evaluation' if final else 'evaluation'
    if not final:  # Nothing is reset before the share allows a step.
      while not self._within_share() and not cut():
        time.sleep(WAIT_SECS)
      if cut():
        return
    if self._before_evaluation is not None:
      self._before_evaluation()
    self._set_status(f'{kind} of pi_0: starting {n} episodes')
    for env in envs:
      env.send_reset()
    observations = [env.receive().observation for env in envs]
    first = np.ones(n, bool)
    state = self._network.pi0_initial_state(n)
    while left.any() and not cut():
      if not final:
        while not self._within_share() and not cut():
          time.sleep(WAIT_SECS)
        if cut():
          break
      self._set_status(f'{kind} of pi_0: {n - int(np.count_nonzero(left))} of {n} '
                       f'tasks done, {self.frames - start_frames:,} frames')
      self.clock.mark('evaluation')
      actions, state = self._act(np.stack(observations), first, state)
      actions = np.asarray(actions)
      playing = np.flatnonzero(left)
      for i in playing:
        envs[i].send_step(int(actions[i]))
      first = np.zeros(n, bool)
      for i in playing:
        timestep = envs[i].receive()
        self.frames += self._frames_per_step
        observations[i] = timestep.observation
        if timestep.first():  # Its process died and restarted: play the episode again.
          returns[i], lengths[i], first[i] = 0.0, 0, True
          continue
        returns[i] += timestep.reward
        lengths[i] += 1
        if timestep.last():
          self._recorder.record(i, float(returns[i]), int(lengths[i]), policy='distilled',
                                env_steps=int(steps[i]))
          left[i] -= 1
          returns[i], lengths[i] = 0.0, 0
          if left[i]:
            envs[i].send_reset()
            observations[i] = envs[i].receive().observation
            first[i] = True
    if final and left.any() and spent():
      unfinished = [self._progress.task_names[i] for i in np.flatnonzero(left)]
      print(f'The final evaluation of pi_0 stopped at its share of the run\'s frames '
            f'({allowance:,.0f} frames, --eval_share={self._share:g}) before the episodes '
            f'of {", ".join(unfinished)} ended: they are not recorded. Raise --eval_share '
            'to evaluate pi_0 in a run this short.', flush=True)
    self._set_status('')
