"""A log directory takes one run: checks of its place and of the run it holds."""

import json
import os

import pytest
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.agents import config as agents_config

DEEP = ['--level_set=two_rooms', '--algorithm=kl_ent_2col', '--num_tasks=2']


@pytest.fixture
def fv():
  """``cli.FLAGS`` parsed from a list of flags (reset afterwards)."""

  def parse(*args):
    cli.FLAGS.unparse_flags()
    cli.FLAGS(['distral_tf', *args])
    return cli.FLAGS

  yield parse
  cli.FLAGS.unparse_flags()


def _save_deep_run(logdir, fv) -> None:
  """``config.json`` exactly as the deep trainer writes it."""
  config, _ = agents_config.from_flags(fv)
  os.makedirs(logdir, exist_ok=True)
  results.write_json(os.path.join(logdir, results.CONFIG_FILE),
                     dict(config.config_record))


def _run_flags(fv) -> dict:
  """The run's flags as given (as the tabular trainer compares them)."""
  return run_dir.run_flags(fv.flags_by_module_dict(), fv.flag_values_dict())


def _deep_run_flags(fv) -> dict:
  """The run's flags as the deep trainers compare them: level-set defaults merged."""
  config, _ = agents_config.from_flags(fv)
  return config.run_flags


def test_prepare_creates_the_directory(tmp_path):
  logdir = tmp_path / 'a' / 'b'
  run_dir.prepare(str(logdir))
  assert logdir.is_dir() and not os.listdir(logdir)


@pytest.mark.parametrize('make, words', [
    (lambda t: '', ['--logdir is empty']),
    (lambda t: '  ', ['--logdir is empty']),
    (lambda t: _file(t / 'f'), ['is a file']),
    (lambda t: os.path.join(_file(t / 'f'), 'sub', 'run'), ['lies under', 'is a file']),
    (lambda t: '/proc/distral_tf_run', ['cannot create']),
])
def test_prepare_refuses_unusable_places(tmp_path, make, words):
  with pytest.raises(errors.UsageError) as raised:
    run_dir.prepare(make(tmp_path))
  for word in words:
    assert word in str(raised.value)


def _file(path) -> str:
  path.write_text('not a directory')
  return str(path)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes in any directory')
def test_prepare_refuses_a_read_only_directory(tmp_path):
  tmp_path.chmod(0o500)
  try:
    with pytest.raises(errors.UsageError, match='cannot write in'):
      run_dir.prepare(str(tmp_path))
  finally:
    tmp_path.chmod(0o700)


def test_no_run_yet_and_the_same_run(tmp_path, fv):
  flags_now = fv(*DEEP, f'--logdir={tmp_path}')
  assert run_dir.check_same_run(str(tmp_path), _run_flags(flags_now),
                                run_dir.RESUMABLE_FLAGS) is None
  _save_deep_run(str(tmp_path), flags_now)
  again = _deep_run_flags(fv(*DEEP, f'--logdir={tmp_path}'))
  config = run_dir.check_same_run(str(tmp_path), again, run_dir.RESUMABLE_FLAGS)
  assert config['algorithm'] == 'kl_ent_2col'


@pytest.mark.parametrize('changed, named', [
    (['--seed=1'], ['--seed=0 (now 1)']),
    (['--tasks=1'], ['--tasks= (now 1)']),
    (['--num_tasks=3'], ['--num_tasks=2 (now 3)']),
    (['--two_rooms_room_size=7'], ['--two_rooms_room_size={} (now 7)']),
    (['--alpha=0.2', '--entropy_cost=0.1'], ['--alpha={} (now 0.2)',
                                             '--entropy_cost={} (now 0.1)']),
    (['--unroll_length=7', '--workers_per_task=1'], ['--unroll_length={} (now 7)',
                                                      '--workers_per_task={} (now 1)']),
    (['--algorithm=soft_q'], ['--algorithm=kl_ent_2col (now soft_q)']),
])
def test_another_run_is_refused_naming_the_flags(tmp_path, fv, changed, named):
  _save_deep_run(str(tmp_path), fv(*DEEP, f'--logdir={tmp_path}'))
  saved = json.loads((tmp_path / results.CONFIG_FILE).read_text())
  now = _deep_run_flags(fv(*DEEP, *changed, f'--logdir={tmp_path}'))
  with pytest.raises(errors.UsageError, match='holds another run') as raised:
    run_dir.check_same_run(str(tmp_path), now, run_dir.RESUMABLE_FLAGS)
  for words in named:
    name = words[2:words.index('=')]
    assert words.format(saved[name]) in str(raised.value)


def test_budget_and_execution_flags_may_change_on_resume(tmp_path, fv):
  _save_deep_run(str(tmp_path), fv(*DEEP, f'--logdir={tmp_path}'))
  now = _deep_run_flags(fv(
      *DEEP, '--env_steps_per_task=99', '--max_seconds=5', '--tf_threads=1',
      '--checkpoint_secs=3', '--log_interval_secs=2', '--env_niceness=3',
      f'--logdir={tmp_path}/../{tmp_path.name}'))
  assert run_dir.check_same_run(str(tmp_path), now, run_dir.RESUMABLE_FLAGS)
  # A run that does not checkpoint (tabular) cannot change its budget.
  with pytest.raises(errors.UsageError, match=r'--env_steps_per_task=\d+ \(now 99\)'):
    run_dir.check_same_run(str(tmp_path), now, run_dir.EXECUTION_FLAGS)


def test_only_flags_of_the_trainers_are_compared():
  fv = flags.FlagValues()
  flags.DEFINE_integer('seed', 0, '', flag_values=fv, module_name='distral_tf.cli')
  flags.DEFINE_integer('seeds', 5, '', flag_values=fv,
                       module_name='distral_tf.experiments.figure3')
  flags.DEFINE_integer('verbosity', 0, '', flag_values=fv, module_name='absl.logging')
  flags.DEFINE_integer('new_flag', 1, '', flag_values=fv,
                       module_name='distral_tf.agents.config')
  fv(['p'])
  assert _run_flags(fv) == dict(seed=0, new_flag=1)
  saved = dict(seed=0, seeds=3, verbosity=1)  # Saved before new_flag existed.
  assert run_dir.differing_flags(saved, _run_flags(fv), frozenset()) == []
  assert run_dir.differing_flags(dict(saved, new_flag=2), _run_flags(fv),
                                 frozenset()) == ['--new_flag=2 (now 1)']


def test_results_without_a_config_are_refused(tmp_path, fv):
  results.EpisodeWriter(str(tmp_path), 'a3c', 0).close()
  with pytest.raises(errors.UsageError, match='episodes.csv but no config.json'):
    run_dir.check_same_run(str(tmp_path), _run_flags(fv(*DEEP)),
                           run_dir.RESUMABLE_FLAGS)


def test_unreadable_config_is_refused(tmp_path, fv):
  (tmp_path / results.CONFIG_FILE).write_text('{"seed": 0')
  with pytest.raises(errors.UsageError, match='config.json is unreadable'):
    run_dir.check_same_run(str(tmp_path), _run_flags(fv(*DEEP)),
                           run_dir.RESUMABLE_FLAGS)


def test_deep_trainer_resume_check_compares_every_flag(tmp_path, fv):
  from distral_tf.agents import builders  # pylint: disable=g-import-not-at-top
  _save_deep_run(str(tmp_path), fv(*DEEP, f'--logdir={tmp_path}'))
  same, _ = agents_config.from_flags(
      fv(*DEEP, '--env_steps_per_task=100', f'--logdir={tmp_path}'))
  builders.check_resumable(same)
  for changed in ('--seed=1', '--tasks=0', '--two_rooms_task_seed=5', '--discount=0.5'):
    other, _ = agents_config.from_flags(fv(*DEEP, changed, f'--logdir={tmp_path}'))
    with pytest.raises(errors.UsageError, match=changed.split('=')[0] + '='):
      builders.check_resumable(other)
  saved = json.loads((tmp_path / results.CONFIG_FILE).read_text())
  assert saved['seed'] == 0
