"""Checkpoints of a deep run: weights, RMSProp statistics, counters, schedule.

A checkpoint holds everything needed to resume as if the run had not stopped:
the learner's items (network, optimiser with its shared statistics, learning
rate, agent steps that drive the annealing), the per-task frame counters, the
next pi_0 evaluation and the wall time so far. Checkpoints live in
``<logdir>/checkpoints``; the last ``MAX_TO_KEEP`` are kept.

Resuming takes the newest checkpoint whose files read back whole (every tensor,
checksums included). Newer ones that do not (a crash or a full disk while
writing) are removed, with a warning, and so are the temporary directories a
save leaves when it fails. ``ROWS_FILE`` records, per checkpoint, how many rows
of ``episodes.csv`` it covers, so that a resumed run refuses a results file that
was cut short, emptied or deleted (``results.check_episodes_for_resume``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import numpy as np
import tensorflow as tf

from distral_tf import errors
from distral_tf import results

CHECKPOINT_DIR = 'checkpoints'
MAX_TO_KEEP = 3
# Per checkpoint: rows of episodes.csv with env_steps at most its smallest
# per-task frame counter, when it was saved.
ROWS_FILE = 'episode_rows.json'
_CHECKPOINT_NAME = re.compile(r'ckpt-(\d+)')
# A save that failed leaves its shards in ``ckpt-N_temp`` (or ``..._temp_<id>``).
_TEMP_NAME = re.compile(r'.+_temp(_\w+)?')


def _describe(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


def _unreadable_reason(prefix: str) -> str | None:
  """Why the checkpoint ``prefix`` cannot be read back whole; None if it can."""
  try:
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a damaged file raises (IndexError, OpError, ...) means unreadable.
    return _describe(e)
  return None


def _remove_stale_temp_dirs(directory: str) -> None:
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if _TEMP_NAME.fullmatch(name) and os.path.isdir(path):
      shutil.rmtree(path)


def _checkpoints_on_disk(directory: str) -> list[str]:
  """Prefixes of the checkpoints with an index file, newest first."""
  numbered = []
  for name in os.listdir(directory):
    stem, ext = os.path.splitext(name)
    match = _CHECKPOINT_NAME.fullmatch(stem)
    if ext == '.index' and match:
      numbered.append((int(match.group(1)), os.path.join(directory, stem)))
  return [prefix for _, prefix in sorted(numbered, reverse=True)]


def _latest_in_state_file(directory: str) -> str | None:
  """The latest checkpoint the ``checkpoint`` state file names, if it can be read."""
  try:
    return tf.train.latest_checkpoint(directory)
  except Exception:  # pylint: disable=broad-except
    return None  # A damaged state file is written again.


def _write_state_file(directory: str, prefixes: list[str]) -> None:
  """Makes ``prefixes`` (oldest first) the checkpoints the manager keeps and rotates."""
  stamps = [os.path.getmtime(p + '.index') for p in prefixes]
  tf.compat.v1.train.update_checkpoint_state(
      directory, os.path.abspath(prefixes[-1]), [os.path.abspath(p) for p in prefixes],
      all_model_checkpoint_timestamps=stamps,
      # Older than every checkpoint kept, so the manager deletes them in turn.
      last_preserved_timestamp=min(stamps) - 1.0)


def _remove_checkpoint(prefix: str) -> None:
  directory, stem = os.path.split(prefix)
  for name in os.listdir(directory):
    if name == stem + '.index' or name.startswith(stem + '.data-'):
      os.remove(os.path.join(directory, name))


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
    self._directory = ''
    self._rows: dict[str, dict] = {}
    self._row_counter: results.RowCounter | None = None

  def restore_or_initialize(self, logdir: str) -> None:
    """Restores the newest readable checkpoint in ``logdir`` if there is one.

    Raises ``errors.UsageError`` if no checkpoint there can be resumed from, or
    if ``episodes.csv`` is not the file the checkpoint was saved with.
    """
    directory = os.path.join(logdir, CHECKPOINT_DIR)
    self._directory = directory
    self._row_counter = results.RowCounter(os.path.join(logdir, results.EPISODES_FILE))
    self._rows = self._read_rows_file()
    path = self._choose_checkpoint(directory) if os.path.isdir(directory) else None
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, MAX_TO_KEEP)
    if path is None:
      return
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
      raise errors.UsageError(
          f'cannot resume from {path}: the checkpoint is from an incompatible '
          f'configuration ({_describe(e)}); remove {directory} or choose another '
          '--logdir') from None
    self.restored = True
    record = self._rows.get(os.path.basename(path), {})
    results.check_episodes_for_resume(
        logdir, path, int(np.min(self.frames.numpy())), record.get('rows'))

  def _choose_checkpoint(self, directory: str) -> str | None:
    """The newest readable checkpoint; removes newer unreadable ones and stale files."""
    _remove_stale_temp_dirs(directory)
    candidates = _checkpoints_on_disk(directory)
    if not candidates:
      leftovers = sorted(n for n in os.listdir(directory) if not n.startswith(ROWS_FILE))
      if leftovers:
        raise errors.UsageError(
            f'{directory} holds {", ".join(leftovers[:3])} but no checkpoint '
            '(ckpt-N.index); remove it or choose another --logdir')
      return None
    unreadable = []
    for prefix in candidates:
      reason = _unreadable_reason(prefix)
      if reason is None:
        break
      unreadable.append((prefix, reason))
    else:
      newest, reason = unreadable[0]
      raise errors.UsageError(
          f'cannot resume from {newest}: every checkpoint in {directory} is corrupt '
          f'or from an incompatible configuration ({reason}); remove {directory} '
          'or choose another --logdir')
    for bad, reason in unreadable:
      _remove_checkpoint(bad)
      print(f'warning: checkpoint {bad} is unreadable ({reason}); removed it',
            file=sys.stderr, flush=True)
    kept = list(reversed(candidates[len(unreadable):]))
    if unreadable or _latest_in_state_file(directory) != prefix:
      if unreadable:
        print(f'Falling back on the newest readable checkpoint, {prefix}', flush=True)
      _write_state_file(directory, kept[-MAX_TO_KEEP:])
    return prefix

  def save(self, frames: np.ndarray, next_eval: int, wall_time: float) -> str:
    """Saves a checkpoint; a full disk is a one-line ``errors.UsageError``."""
    self.frames.assign(frames)
    self.next_eval.assign(next_eval)
    self.wall_time.assign(wall_time)
    with errors.disk_full_is_usage_error(self._directory):
      path = self.manager.save()
      self._record_rows(path, int(np.min(frames)))
    return path

  def _record_rows(self, path: str, env_steps: int) -> None:
    rows = self._row_counter.count(env_steps) if self._row_counter else 0
    self._rows[os.path.basename(path)] = dict(rows=rows, env_steps=env_steps)
    live = {os.path.basename(p) for p in self.manager.checkpoints}
    self._rows = {k: v for k, v in self._rows.items() if k in live}
    results.write_json(os.path.join(self._directory, ROWS_FILE), self._rows)

  def _read_rows_file(self) -> dict[str, dict]:
    try:
      with open(os.path.join(self._directory, ROWS_FILE)) as f:
        rows = json.load(f)
    except (OSError, ValueError):
      return {}  # None yet, or cut off: resuming checks less, nothing else.
    return rows if isinstance(rows, dict) else {}


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
