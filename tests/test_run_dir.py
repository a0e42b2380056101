"""A log directory takes one run: checks of its place and of the run it holds."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from distral_tf import cli
from distral_tf import errors
from distral_tf import results
from distral_tf import run_dir
from distral_tf.agents import config as agents_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_a_config_without_the_runs_flags_is_refused(tmp_path, fv):
  """An emptied config.json must not let another run resume these results."""
  _save_deep_run(str(tmp_path), fv(*DEEP, f'--logdir={tmp_path}'))
  results.EpisodeWriter(str(tmp_path), 'kl_ent_2col', 0).close()
  (tmp_path / results.CONFIG_FILE).write_text('{}')
  other = _deep_run_flags(fv(*DEEP, '--seed=5', '--learning_rate=0.1',
                             f'--logdir={tmp_path}'))
  with pytest.raises(errors.UsageError, match='lacks the flags of a run') as raised:
    run_dir.check_same_run(str(tmp_path), other, run_dir.RESUMABLE_FLAGS)
  assert 'level_set, algorithm, seed' in str(raised.value)
  # A config saved before a flag was added still resumes.
  saved = dict(_deep_run_flags(fv(*DEEP, f'--logdir={tmp_path}')))
  del saved['lstm_skip']
  results.write_json(str(tmp_path / results.CONFIG_FILE), saved)
  assert run_dir.check_same_run(str(tmp_path), _deep_run_flags(
      fv(*DEEP, f'--logdir={tmp_path}')), run_dir.RESUMABLE_FLAGS)


def _immutable(path) -> bool:
  """``chattr +i path``; False where the tool or the file system refuses it."""
  if shutil.which('chattr') is None:
    return False
  return subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode == 0


def test_prepare_refuses_a_checkpoint_directory_that_takes_no_files(tmp_path):
  """As root, permissions do not stop writes: the directory is made immutable."""
  checkpoints = tmp_path / 'checkpoints'
  checkpoints.mkdir()
  if not _immutable(checkpoints):
    pytest.skip('chattr +i is not available here')
  try:
    with pytest.raises(errors.UsageError) as raised:
      run_dir.prepare(str(tmp_path))
  finally:
    subprocess.run(['chattr', '-i', str(checkpoints)], check=True)
  assert f'cannot write in --logdir={tmp_path}: its checkpoints/' in str(raised.value)
  assert os.listdir(checkpoints) == []
  run_dir.prepare(str(tmp_path))


HOLDER = textwrap.dedent('''
    import sys, time
    from distral_tf import run_dir
    run_dir.hold(sys.argv[1])
    print('held', flush=True)
    time.sleep(120)
    ''')


def test_a_directory_is_held_until_its_process_ends(tmp_path):
  """A second process is refused, told who holds it; the lock dies with its holder."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path), '--marker'],
                            stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(run_dir.DirectoryInUse) as raised:
      run_dir.hold(str(tmp_path))
    message = str(raised.value)
    assert message.startswith(f'--logdir={tmp_path} is in use by pid {holder.pid} on ')
    assert '--marker' in message and '\n' not in message
  finally:
    holder.kill()  # SIGKILL: nothing of the holder's runs after it.
    holder.wait()
  run_dir.hold(str(tmp_path))
  run_dir.hold(str(tmp_path))  # Again in the same process: already ours.
  lock = tmp_path / run_dir.LOCK_FILE
  assert json.loads(lock.read_text())['pid'] == os.getpid()
  run_dir.release(str(tmp_path))
  assert not lock.exists()
  with run_dir.held({'out': str(tmp_path / 'new')}):
    assert (tmp_path / 'new' / run_dir.LOCK_FILE).exists()
  assert not (tmp_path / 'new' / run_dir.LOCK_FILE).exists()
