"""Resuming from damaged checkpoint directories (agents/checkpointing.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from distral_tf import errors
from distral_tf import results
from distral_tf.agents import checkpointing


class _Learner:
  """What ``TrainingState`` needs of a learner: its checkpointed items."""

  def __init__(self):
    self.weights = tf.Variable(tf.zeros([512]))

  def checkpoint_items(self) -> dict:
    return dict(weights=self.weights)


def _state(logdir) -> checkpointing.TrainingState:
  state = checkpointing.TrainingState(_Learner(), num_tasks=2)
  state.restore_or_initialize(str(logdir))
  return state


def _saved_run(logdir, saves: int = 3) -> str:
  """A run that saved ``saves`` checkpoints, at 10, 20, ... frames per task."""
  writer = results.EpisodeWriter(str(logdir), 'a3c', 0)
  state = _state(logdir)
  for k in range(1, saves + 1):
    writer.write('a', 10 * k - 5, 1.0, 5)
    state.save(np.array([10 * k, 10 * k]), 0, float(k))
  writer.close()
  return os.path.join(str(logdir), checkpointing.CHECKPOINT_DIR)


def _data_file(directory, name) -> str:
  return [os.path.join(directory, f) for f in os.listdir(directory)
          if f.startswith(name + '.data-')][0]


def test_a_truncated_checkpoint_falls_back_on_the_newest_readable(tmp_path, capsys):
  directory = _saved_run(tmp_path)
  data = _data_file(directory, 'ckpt-3')
  os.truncate(data, os.path.getsize(data) // 2)  # A crash while writing it.
  state = _state(tmp_path)
  assert state.restored and state.frames.numpy().tolist() == [20, 20]
  out = capsys.readouterr()
  assert 'checkpoint' in out.err and 'ckpt-3 is unreadable' in out.err
  assert 'Falling back on the newest readable checkpoint' in out.out
  assert 'ckpt-2' in out.out
  assert not [f for f in os.listdir(directory) if f.startswith('ckpt-3')]
  assert state.manager.latest_checkpoint.endswith('ckpt-2')
  # The run goes on: its next checkpoint is readable and the one resumed from.
  state.save(np.array([25, 25]), 0, 4.0)
  again = _state(tmp_path)
  assert again.frames.numpy().tolist() == [25, 25]
  # Older checkpoints are rotated out as before.
  for k in range(3):
    again.save(np.array([30 + k, 30 + k]), 0, 5.0)
  assert sorted(f for f in os.listdir(directory) if f.endswith('.index')) == [
      'ckpt-4.index', 'ckpt-5.index', 'ckpt-6.index']


def test_a_checkpoint_with_a_damaged_index_falls_back_too(tmp_path):
  directory = _saved_run(tmp_path)
  os.truncate(os.path.join(directory, 'ckpt-3.index'), 20)
  data = _data_file(directory, 'ckpt-2')
  damaged = bytearray(open(data, 'rb').read())
  damaged[len(damaged) // 2] ^= 0xFF  # A flipped byte fails the checksum.
  with open(data, 'wb') as f:
    f.write(bytes(damaged))
  assert _state(tmp_path).frames.numpy().tolist() == [10, 10]


def test_no_readable_checkpoint_is_a_usage_error(tmp_path):
  directory = _saved_run(tmp_path, saves=2)
  for name in os.listdir(directory):
    if name.endswith('.index'):
      with open(os.path.join(directory, name), 'wb') as f:
        f.write(b'not a checkpoint')
  with pytest.raises(errors.UsageError, match='every checkpoint .* is corrupt'):
    _state(tmp_path)


def test_a_failed_first_save_does_not_block_the_rerun(tmp_path):
  directory = tmp_path / checkpointing.CHECKPOINT_DIR / 'ckpt-1_temp'
  directory.mkdir(parents=True)
  (directory / 'part-00000-of-00001.data-00000-of-00001').write_bytes(b'\0' * 100)
  results.EpisodeWriter(str(tmp_path), 'a3c', 0).close()
  state = _state(tmp_path)
  assert not state.restored and not directory.exists()
  state.save(np.array([5, 5]), 0, 1.0)
  assert _state(tmp_path).restored


def test_checkpoints_record_the_rows_they_cover(tmp_path):
  directory = _saved_run(tmp_path)
  with open(os.path.join(directory, checkpointing.ROWS_FILE)) as f:
    recorded = json.load(f)
  # Rows at 5, 15, 25 frames; each checkpoint covers those up to its counters.
  assert recorded == {'ckpt-1': dict(rows=1, env_steps=10),
                      'ckpt-2': dict(rows=2, env_steps=20),
                      'ckpt-3': dict(rows=3, env_steps=30)}


def test_resume_refuses_results_shorter_than_the_checkpoint(tmp_path):
  _saved_run(tmp_path)
  path = tmp_path / results.EPISODES_FILE
  lines = path.read_text().splitlines(keepends=True)
  path.write_text(''.join(lines[:-1]))
  with pytest.raises(errors.UsageError, match='cut short or replaced'):
    _state(tmp_path)
  path.write_text('')
  with pytest.raises(errors.UsageError, match='is empty'):
    _state(tmp_path)
  path.unlink()
  with pytest.raises(errors.UsageError, match='is missing'):
    _state(tmp_path)


def test_rows_after_the_checkpoint_do_not_block_a_second_resume(tmp_path):
  _saved_run(tmp_path)
  writer = results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  writer.write('b', 40, 1.0, 5)  # After the last checkpoint: dropped on resume.
  writer.close()
  state = _state(tmp_path)
  assert results.truncate_episodes(str(tmp_path), {'a': 30, 'b': 30}) == 1
  del state
  assert _state(tmp_path).frames.numpy().tolist() == [30, 30]
