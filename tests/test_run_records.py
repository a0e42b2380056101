"""Records of finished runs: written once, restored only where they can stand in for the run."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.experiments import analysis
from distral_tf.experiments import run_records
from distral_tf.experiments import schedule


def write_run(logdir, finished=True, returns=(0.1, 0.5, 0.9), checkpoint=False):
  """A run as the trainer leaves it: config, episodes, summary (and a checkpoint)."""
  os.makedirs(logdir, exist_ok=True)
  writer = results.EpisodeWriter(str(logdir), 'kl_ent_2col', 0)
  for i, r in enumerate(returns):
    writer.write('task0', 100 * (i + 1), r, 7)
  writer.close()
  results.write_json(os.path.join(logdir, 'config.json'), dict(
      algorithm='kl_ent_2col', seed=0, level_set='two_rooms', env_steps_per_task=300))
  results.write_json(os.path.join(logdir, 'summary.json'), dict(finished=finished))
  if checkpoint:
    os.makedirs(os.path.join(logdir, 'checkpoints'))


def test_a_record_restores_the_run_that_figures_read(tmp_path):
  runs = tmp_path / 'runs'
  logdir = runs / 'two_rooms' / 'kl_ent_2col' / 'ent0.01_lr0.001' / 'seed0'
  write_run(logdir, returns=[0.25 * i for i in range(400)], checkpoint=True)
  records = run_records.Records(str(tmp_path / 'records'), {str(runs): 'reproduction'})
  record_dir = records.record_dir(str(logdir))
  assert record_dir == str(tmp_path / 'records' / 'reproduction' / 'two_rooms' /
                           'kl_ent_2col' / 'ent0.01_lr0.001' / 'seed0')
  assert run_records.record(str(logdir), record_dir)
  assert sorted(os.listdir(record_dir)) == ['config.json', 'episodes.csv.xz', 'summary.json']
  episodes = os.path.getsize(logdir / 'episodes.csv')
  assert os.path.getsize(os.path.join(record_dir, 'episodes.csv.xz')) < episodes / 3
  before = analysis.load_run(str(logdir), str(runs))
  fresh = tmp_path / 'fresh'
  restored = fresh / 'two_rooms' / 'kl_ent_2col' / 'ent0.01_lr0.001' / 'seed0'
  assert run_records.restore(record_dir, str(restored))
  assert (restored / 'episodes.csv').read_bytes() == (logdir / 'episodes.csv').read_bytes()
  assert schedule.is_finished(str(restored)) and not (restored / 'checkpoints').exists()
  after = analysis.load_run(str(restored), str(fresh))
  assert after.scores['task'].aucs == before.scores['task'].aucs
  assert after.entropy_cost == 0.01 and after.learning_rate == 0.001


def test_records_are_written_once_and_never_over_a_run(tmp_path):
  runs = tmp_path / 'runs'
  logdir = runs / 'a' / 'seed0'
  records = run_records.Records(str(tmp_path / 'records'), {str(runs): 'reproduction'})
  record_dir = records.record_dir(str(logdir))
  write_run(logdir, finished=False)
  assert not run_records.record(str(logdir), record_dir)  # Unfinished: no record.
  write_run(logdir, returns=(1.0,))
  assert run_records.record(str(logdir), record_dir)
  write_run(logdir, returns=(2.0,))
  assert not run_records.record(str(logdir), record_dir)  # Written once.
  # A directory holding a run (even an unfinished one) is not overwritten.
  other = runs / 'b' / 'seed0'
  write_run(other, finished=False, returns=(3.0,))
  assert not run_records.restore(record_dir, str(other))
  assert [r['episode_return'] for r in results.read_episodes(str(other))] == [3.0]
  assert not run_records.restore(str(tmp_path / 'nothing'), str(runs / 'c'))
  with pytest.raises(ValueError, match='lies under none of'):
    records.record_dir(str(tmp_path / 'elsewhere' / 'seed0'))


def test_sync_restores_a_prerequisite_only_with_the_runs_that_need_it(tmp_path):
  runs = tmp_path / 'transfer'
  pretrain, prior = str(runs / 'pretrain' / 'seed0'), str(runs / 'prior' / 'seed0')
  specs = [schedule.RunSpec(pretrain, ()), schedule.RunSpec(prior, (), (pretrain,))]
  records = run_records.Records(str(tmp_path / 'records'), {str(runs): 'transfer'})
  write_run(pretrain)
  count = run_records.sync(specs, records)
  assert (count.restored, count.recorded) == (0, 1)
  # On a fresh machine the pretraining run's record lacks its checkpoint, which
  # the prior run needs: it is not restored, so that it runs again.
  shutil.rmtree(runs)
  count = run_records.sync(specs, records)
  assert (count.restored, count.recorded) == (0, 0) and not os.path.exists(pretrain)
  # Once the prior run is recorded too (here: from another machine), both are restored.
  elsewhere = str(tmp_path / 'elsewhere')
  write_run(elsewhere)
  assert run_records.record(elsewhere, records.record_dir(prior))
  count = run_records.sync(specs, records)
  assert (count.restored, count.recorded) == (2, 0)
  assert schedule.is_finished(pretrain) and schedule.is_finished(prior)
  with open(os.path.join(prior, 'summary.json')) as f:
    assert json.load(f) == dict(finished=True)


def test_a_record_that_cannot_be_written_is_a_warning_and_comes_with_the_next_sync(
    tmp_path, capsys):
  runs = tmp_path / 'runs'
  logdir = runs / 'a' / 'seed0'
  write_run(logdir)
  blocked = tmp_path / 'records'
  blocked.write_text('a file where the records should go')  # As a full disk would: OSError.
  records = run_records.Records(str(blocked), {str(runs): 'reproduction'})
  spec = schedule.RunSpec(logdir=str(logdir), args=())
  assert run_records.sync([spec], records) == run_records.SyncCount(0, 0)
  assert f'could not record the run in {logdir}' in capsys.readouterr().err
  assert schedule.is_finished(str(logdir))  # The run itself is untouched.
  blocked.unlink()
  assert run_records.sync([spec], records) == run_records.SyncCount(0, 1)
  assert run_records.is_recorded(records.record_dir(str(logdir)))


def test_a_full_disk_while_restoring_is_one_error_and_leaves_no_half_run(tmp_path, monkeypatch):
  runs = tmp_path / 'runs'
  logdir = runs / 'a' / 'seed0'
  write_run(logdir)
  records = run_records.Records(str(tmp_path / 'records'), {str(runs): 'reproduction'})
  record_dir = records.record_dir(str(logdir))
  assert run_records.record(str(logdir), record_dir)
  restored = tmp_path / 'fresh' / 'a' / 'seed0'
  real_open, opened = open, []

  def open_until_full(path, mode='r', *args, **kwargs):
    # The episodes are written, then the disk fills while config.json is written.
    if 'w' in mode and str(restored) in str(path):
      opened.append(path)
      if len(opened) == 2:
        raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    return real_open(path, mode, *args, **kwargs)

  monkeypatch.setattr('builtins.open', open_until_full)
  with pytest.raises(errors.UsageError, match='no space left on the device'):
    run_records.restore(record_dir, str(restored))
  monkeypatch.undo()
  assert len(opened) == 2
  assert not run_dir.run_files_in(str(restored)) and os.listdir(restored) == []
  assert run_records.restore(record_dir, str(restored))  # Space freed: restored in full.
  assert (restored / 'episodes.csv').read_bytes() == (logdir / 'episodes.csv').read_bytes()
  assert schedule.is_finished(str(restored))


def test_a_record_that_does_not_read_is_named_in_a_warning_and_left_out(tmp_path, capsys):
  """Half of an episodes.csv.xz, or a summary.json that is not JSON: the other
  records are restored and drawn as before."""
  runs = tmp_path / 'runs'
  names = ('cut', 'garbled', 'whole')
  specs = [schedule.RunSpec(logdir=str(runs / name / 'seed0'), args=()) for name in names]
  records = run_records.Records(str(tmp_path / 'records'), {str(runs): 'reproduction'})
  for spec in specs:
    write_run(spec.logdir, returns=[0.01 * i for i in range(300)])
  assert run_records.sync(specs, records) == run_records.SyncCount(0, 3)
  cut = tmp_path / 'records' / 'reproduction' / 'cut' / 'seed0'
  xz = cut / run_records.EPISODES_RECORD
  xz.write_bytes(xz.read_bytes()[:xz.stat().st_size // 2])
  garbled = tmp_path / 'records' / 'reproduction' / 'garbled' / 'seed0'
  (garbled / 'summary.json').write_text('{"finished": tru')
  shutil.rmtree(runs)  # A fresh checkout.
  capsys.readouterr()

  count = run_records.sync(specs, records)
  assert count == run_records.SyncCount(restored=1, recorded=0)
  warnings = capsys.readouterr().err.strip().splitlines()
  assert len(warnings) == 2, warnings
  assert warnings[0].startswith(f'warning: the run record {cut} is left out: '
                                'episodes.csv.xz does not decompress')
  assert warnings[1].startswith(f'warning: the run record {garbled} is left out: '
                                'its summary.json does not read')
  assert schedule.is_finished(specs[2].logdir)
  for spec in specs[:2]:  # Left as they were: no run there, to be run again.
    assert not os.path.exists(spec.logdir) or not run_dir.run_files_in(spec.logdir)
  runs_read, _ = analysis.discover_runs(str(runs))
  assert [r.logdir for r in runs_read] == [specs[2].logdir]
