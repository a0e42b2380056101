"""Checkpoints of a deep run: weights, RMSProp statistics, counters, schedule.

A checkpoint holds everything needed to resume as if the run had not stopped:
the learner's items (network, optimiser with its shared statistics, learning
rate, agent steps that drive the annealing), the per-task frame counters, the
next pi_0 evaluation and the wall time so far. Checkpoints live in
``<logdir>/checkpoints``.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from distral_tf import errors

CHECKPOINT_DIR = 'checkpoints'
MAX_TO_KEEP = 3


def _describe(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


class TrainingState:
  """The checkpointed state of a run and its ``CheckpointManager``."""

  def __init__(self, learner, num_tasks: int):
    self.frames = tf.Variable(np.zeros(num_tasks, np.int64), trainable=False,
                              name='frames_per_task')
    self.next_eval = tf.Variable(0, dtype=tf.int64, trainable=False, name='next_eval')
    self.wall_time = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                 name='wall_time')
    self.checkpoint = tf.train.Checkpoint(
        frames=self.frames, next_eval=self.next_eval, wall_time=self.wall_time,
        **learner.checkpoint_items())
    self.manager = None
    self.restored = False

  def restore_or_initialize(self, logdir: str) -> None:
    """Restores the latest checkpoint in ``logdir`` if there is one."""
    directory = os.path.join(logdir, CHECKPOINT_DIR)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, MAX_TO_KEEP)
    path = self.manager.latest_checkpoint
    if path is None:
      if os.path.isdir(directory) and os.listdir(directory):
        raise errors.UsageError(
            f'{directory} holds files but no readable checkpoint index; remove it or '
            'choose another --logdir')
      return
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
      raise errors.UsageError(
          f'cannot resume from {path}: the checkpoint is corrupt or from an '
          f'incompatible configuration ({_describe(e)}); remove {directory} or choose '
          'another --logdir') from None
    self.restored = True

  def save(self, frames: np.ndarray, next_eval: int, wall_time: float) -> str:
    self.frames.assign(frames)
    self.next_eval.assign(next_eval)
    self.wall_time.assign(wall_time)
    return self.manager.save()


def load_prior(network, prior_logdir: str) -> None:
  """Initialises ``network``'s pi_0 from the latest checkpoint in ``prior_logdir``.

  Only pi_0's variables are read (the distilled network of 1col, the shared
  column of 2col); the task columns keep their fresh initialisation.
  """
  directory = os.path.join(prior_logdir, CHECKPOINT_DIR)
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    raise errors.UsageError(f'--prior_logdir: no checkpoint in {directory}')
  partial = tf.train.Checkpoint(network=tf.train.Checkpoint(pi0=network.pi0))
  try:
    partial.restore(path).expect_partial().assert_existing_objects_matched()
  except (tf.errors.OpError, ValueError, AssertionError) as e:
    raise errors.UsageError(
        f'--prior_logdir: {path} has no pi_0 matching this network '
        f'({_describe(e)})') from None
