"""episodes.csv survives crashes: torn rows, damaged or shortened files, full disks."""

import os

import pytest

from distral_tf import errors
from distral_tf import results

HEADER = ','.join(results.EPISODE_FIELDS) + '\n'


def _write(logdir, rows) -> str:
  """episodes.csv with rows ``(task, env_steps)`` through ``EpisodeWriter``."""
  writer = results.EpisodeWriter(str(logdir), 'a3c', 0)
  for task, steps in rows:
    writer.write(task, steps, 1.0, 5)
  writer.close()
  return os.path.join(str(logdir), results.EPISODES_FILE)


def test_every_row_is_on_disk_whole_as_soon_as_it_is_written(tmp_path):
  writer = results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  writer.write('a', 10, 0.5, 3)
  writer.write('b', 12, -1.25, 4, policy='distilled')
  # Read by another handle before any flush or close, as after a crash.
  with open(writer.path, encoding='utf-8') as f:
    text = f.read()
  assert text == HEADER + 'a3c,0,a,10,0.5,3,task\na3c,0,b,12,-1.25,4,distilled\n'
  writer.close()


def test_a_torn_last_row_is_left_out_and_dropped_on_resume(tmp_path, capsys):
  path = _write(tmp_path, [('a', 5), ('b', 5), ('a', 10)])
  with open(path, 'a') as f:
    f.write('a3c,0,b,1')  # Power went off in the middle of this row.
  assert [r['env_steps'] for r in results.read_episodes(str(tmp_path))] == [5, 5, 10]
  assert results.truncate_episodes(str(tmp_path), {'a': 100, 'b': 100}) == 0
  assert 'dropped an incomplete last row (9 bytes)' in capsys.readouterr().err
  with open(path) as f:
    assert f.read().endswith('a3c,0,a,10,1,5,task\n')
  # The run goes on appending whole rows after the repaired end.
  writer = results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  writer.write('b', 20, 2.0, 7)
  writer.close()
  assert [(r['task'], r['env_steps']) for r in results.read_episodes(str(tmp_path))] == [
      ('a', 5), ('b', 5), ('a', 10), ('b', 20)]


def test_reopening_a_torn_file_repairs_it_before_appending(tmp_path, capsys):
  path = _write(tmp_path, [('a', 5)])
  with open(path, 'a') as f:
    f.write('a3c,0,a,7,0.')
  writer = results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  writer.write('a', 9, 1.0, 2)
  writer.close()
  assert 'dropped an incomplete last row' in capsys.readouterr().err
  assert [r['env_steps'] for r in results.read_episodes(str(tmp_path))] == [5, 9]


def test_truncation_keeps_rows_up_to_the_checkpoint(tmp_path):
  _write(tmp_path, [('a', 5), ('b', 6), ('a', 11), ('b', 12)])
  assert results.truncate_episodes(str(tmp_path), {'a': 10, 'b': 12}) == 1
  assert [(r['task'], r['env_steps']) for r in results.read_episodes(str(tmp_path))] == [
      ('a', 5), ('b', 6), ('b', 12)]


@pytest.mark.parametrize('content, words', [
    (bytes(range(128, 256)) + b'\n', ['not a results file', 'UTF-8']),
    (b'hello,world\n1,2\n', ['not a results file', 'first line']),
    (HEADER.encode() + b'a3c,0,a,x,1,5,task\na3c,0,a,9,1,5,task\n', ['line 2']),
    (HEADER.encode() + b'a3c,0,a\na3c,0,a,9,1,5,task\n', ['line 2', '3 fields']),
], ids=['binary', 'another_csv', 'bad_value', 'short_row'])
def test_unreadable_results_are_usage_errors(tmp_path, content, words):
  (tmp_path / results.EPISODES_FILE).write_bytes(content)
  for read in (lambda: results.read_episodes(str(tmp_path)),
               lambda: results.truncate_episodes(str(tmp_path), {'a': 10})):
    with pytest.raises(errors.UsageError) as raised:
      read()
    for word in words:
      assert word in str(raised.value)


def test_resume_refuses_a_missing_empty_or_shortened_file(tmp_path):
  logdir = str(tmp_path)
  path = _write(tmp_path, [('a', 0), ('b', 0), ('a', 10), ('b', 12), ('a', 30)])
  # The checkpoint (smallest frame counter 20) was saved after 4 of these rows.
  results.check_episodes_for_resume(logdir, 'ckpt-2', 20, 4)
  with open(path) as f:
    lines = f.readlines()
  with open(path, 'w') as f:
    f.writelines(lines[:-2])  # Cut short: a row the checkpoint covers is gone.
  with pytest.raises(errors.UsageError, match='holds 3 episodes .* after 4: the file '
                     'was cut short or replaced'):
    results.check_episodes_for_resume(logdir, 'ckpt-2', 20, 4)
  results.check_episodes_for_resume(logdir, 'ckpt-2', 20, None)  # Nothing recorded.
  with open(path, 'w') as f:
    f.write(HEADER)
  with pytest.raises(errors.UsageError, match='holds 0 episodes'):
    results.check_episodes_for_resume(logdir, 'ckpt-2', 20, 4)
  with open(path, 'w'):
    pass
  with pytest.raises(errors.UsageError, match='is empty'):
    results.check_episodes_for_resume(logdir, 'ckpt-2', 20, 0)
  os.remove(path)
  with pytest.raises(errors.UsageError, match='is missing'):
    results.check_episodes_for_resume(logdir, 'ckpt-2', 20, 0)


def test_row_counter_reads_what_was_appended(tmp_path):
  writer = results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  counter = results.RowCounter(writer.path)
  assert counter.count(100) == 0
  for steps in (0, 5, 30):
    writer.write('a', steps, 1.0, 1)
  assert counter.count(10) == 2
  writer.write('b', 8, 1.0, 1)
  with open(writer.path, 'a') as f:
    f.write('a3c,0,b,9')  # Half a row: not counted yet.
  assert counter.count(10) == 3
  assert counter.count(40) == 4  # The row past the bound counts once it is reached.
  writer.close()
  results.truncate_episodes(str(tmp_path), {'a': 5, 'b': 100})  # Replaces the file.
  assert counter.count(40) == 3


def test_full_disk_is_a_usage_error(tmp_path):
  if not os.path.exists('/dev/full'):
    pytest.skip('needs /dev/full')
  os.symlink('/dev/full', tmp_path / results.EPISODES_FILE)
  with pytest.raises(errors.UsageError, match='no space left'):
    results.EpisodeWriter(str(tmp_path), 'a3c', 0)
  os.symlink('/dev/full', tmp_path / 'summary.json.tmp')
  with pytest.raises(errors.UsageError, match='no space left'):
    results.write_json(str(tmp_path / 'summary.json'), {'a': 1})
