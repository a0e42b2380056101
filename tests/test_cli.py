"""Bad flags, log directories and full disks: exit 2 with one line on stderr."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, cwd):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'distral_tf.launch', *args],
                        capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize('args, expected', [
    (['--level_set=bogus'], ['bogus', 'two_rooms', 'minigrid', 'lasertag']),
    (['--algorithm=nope'], ['nope', 'soft_q', 'distral_soft_q', 'kl_ent_2col']),
    (['--env_steps_per_task=-5'], ['env_steps_per_task', '-5']),
    (['--algorithm=soft_q', '--level_set=minigrid'], ['two_rooms', 'kl_2col']),
    (['--algorithm=distral_soft_q', '--tabular_rollout_length=0'],
     ['tabular_rollout_length', '>= 1']),
    (['--algorithm=soft_q', '--discount=1'], ['discount', '[0, 1)']),
    (['--algorithm=soft_q', '--num_tasks=30'], ['num_tasks', '[1, 25]']),
    (['stray_argument'], ['stray_argument']),
    (['--env_steps_per_task=1' + '0' * 30], ['--env_steps_per_task must be at most']),
    (['--algorithm=a3c', '--cluster=local:ps=1,workers=99999999999'],
     ['--cluster', '100000000000 servers', 'at most']),
    (['--algorithm=a3c', '--workers_per_task=0'], ['--workers_per_task must be > 0']),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, expected):
  proc = launch(*args, f'--logdir={tmp_path / "run"}', cwd=tmp_path)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error:')
  for word in expected:
    assert word in lines[0]
  assert not (tmp_path / 'run' / 'summary.json').exists()


def test_good_tabular_run_exits_0(tmp_path):
  proc = launch('--algorithm=distral_soft_q', '--env_steps_per_task=500',
                '--num_tasks=2', '--tabular_eval_interval=250',
                f'--logdir={tmp_path / "run"}', cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / 'run' / 'summary.json').exists()
  assert 'pi_i final' in proc.stdout


def _one_line_error(proc) -> str:
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
  return lines[0]


def _a_file(tmp_path) -> str:
  (tmp_path / 'f').write_text('a file')
  return str(tmp_path / 'f')


@pytest.mark.parametrize('algorithm', ['soft_q', 'a3c'])
@pytest.mark.parametrize('logdir, words', [
    (_a_file, ['is a file']),
    (lambda t: os.path.join(_a_file(t), 'run'), ['lies under', 'is a file']),
    (lambda t: '', ['--logdir is empty']),
    (lambda t: '/proc/distral_tf_run', ['cannot create --logdir=/proc/distral_tf_run']),
])
def test_unusable_logdir_exits_2_with_one_line(tmp_path, algorithm, logdir, words):
  proc = launch(f'--algorithm={algorithm}', f'--logdir={logdir(tmp_path)}',
                '--num_tasks=2', '--env_steps_per_task=500', cwd=tmp_path)
  line = _one_line_error(proc)
  for word in words:
    assert word in line


def test_full_disk_exits_2_with_one_line(tmp_path):
  if not os.path.exists('/dev/full'):
    pytest.skip('needs /dev/full')
  run = tmp_path / 'run'
  run.mkdir()
  os.symlink('/dev/full', run / 'config.json.tmp')  # Writing config.json fails.
  proc = launch('--algorithm=soft_q', f'--logdir={run}', '--num_tasks=2',
                '--env_steps_per_task=500', cwd=tmp_path)
  assert 'no space left on the device of' in _one_line_error(proc)


def test_deep_runs_are_checked_before_tensorflow_loads(tmp_path):
  """Bad deep flags and another run's directory are refused in a second, not 30."""
  logdir = tmp_path / 'run'
  script = textwrap.dedent(f"""
      import json, sys
      from distral_tf import cli, errors, results
      from distral_tf.agents import config
      cli.FLAGS(['distral_tf', '--algorithm=a3c', '--logdir={logdir}'])
      results.write_json('{logdir}/config.json',
                         dict(config.from_flags(cli.FLAGS)[0].config_record))
      refused = []
      for args in (['--workers_per_task=0'], ['--cluster=local:ps=1,workers=99999'],
                   ['--seed=1'], ['--two_rooms_room_size=7'], ['--algorithm=kl_2col']):
        try:
          cli.run_from_args(['--algorithm=a3c', '--logdir={logdir}', *args])
        except errors.UsageError as e:
          refused.append(str(e))
      print(json.dumps(dict(refused=refused, tf='tensorflow' in sys.modules)))
      """)
  logdir.mkdir()
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        env=env, cwd=tmp_path, timeout=120)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not out['tf']
  assert len(out['refused']) == 5
  for message, words in zip(out['refused'], (
      '--workers_per_task must be > 0', 'servers is more than this machine',
      '--seed=0 (now 1)', '--two_rooms_room_size=', '--algorithm=a3c (now kl_2col)')):
    assert words in message


def test_deepmind_lab_workers_fit_the_machine_unless_on_a_cluster():
  from distral_tf import cli  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import config  # pylint: disable=g-import-not-at-top
  gib = 2**30
  # 2 cores, 24 GiB, 8 tasks: 8 processes at most, one per task.
  assert config.machine_workers_per_task(8, cores=2, memory_bytes=24 * gib) == 1
  # 64 cores, 256 GiB: cores allow 256 processes, memory about 450.
  assert config.machine_workers_per_task(4, cores=64, memory_bytes=256 * gib) == 64
  # Memory binds: 16 cores but 4 GiB hold 7 processes.
  assert config.machine_workers_per_task(1, cores=16, memory_bytes=4 * gib) == 7
  assert config.machine_workers_per_task(8, cores=1, memory_bytes=1 * gib) == 1
  fv = cli.FLAGS
  fv.unparse_flags()
  fv(['distral_tf', '--level_set=lasertag'])
  deep, notes = config.from_flags(fv)
  assert deep.workers_per_task == config.machine_workers_per_task(8)
  assert notes and 'paper used 32' in notes[0]
  fv.unparse_flags()
  fv(['distral_tf', '--level_set=navigation', '--cluster=local:ps=1,workers=2'])
  deep, notes = config.from_flags(fv)
  assert not notes and deep.workers_per_task == 32
  fv.unparse_flags()
  fv(['distral_tf', '--level_set=mazes', '--workers_per_task=3'])
  assert config.from_flags(fv)[0].workers_per_task == 3
  fv.unparse_flags()


def test_the_a3c_family_takes_its_own_defaults():
  from distral_tf import cli  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import config  # pylint: disable=g-import-not-at-top
  fv = cli.FLAGS
  rates = {}
  for algorithm in ('a3c', 'a3c_2col', 'kl_ent_2col', 'kl_1col'):
    fv.unparse_flags()
    fv(['distral_tf', f'--algorithm={algorithm}'])
    rates[algorithm] = config.from_flags(fv)[0].learning_rate
  assert rates['a3c'] == rates['a3c_2col'] == config.A3C_FAMILY_DEFAULTS['two_rooms'][
      'learning_rate']
  assert rates['kl_ent_2col'] == rates['kl_1col'] == config.LEVEL_SET_DEFAULTS[
      'two_rooms']['learning_rate']
  assert rates['a3c'] != rates['kl_ent_2col']
  assert fv.learning_rate is None and not fv['workers_per_task'].present  # Left as given.
  assert fv.workers_per_task == config.DeepConfig.__dataclass_fields__[
      'workers_per_task'].default
  fv.unparse_flags()
  fv(['distral_tf', '--algorithm=a3c', '--learning_rate=0.5'])  # The flag wins.
  assert config.from_flags(fv)[0].learning_rate == 0.5
  # On minigrid the rate is the level set's for every algorithm; the entropy
  # cost is not: in the Distral algorithms' returns it is ten times smaller.
  costs = {}
  for algorithm in ('a3c', 'a3c_multitask', 'kl_ent_2col', 'kl_1col'):
    fv.unparse_flags()
    fv(['distral_tf', f'--algorithm={algorithm}', '--level_set=minigrid'])
    deep, _ = config.from_flags(fv)
    assert deep.learning_rate == config.LEVEL_SET_DEFAULTS['minigrid']['learning_rate']
    assert not deep.env_processes  # Stepped in the actor thread: cheaper than a pipe.
    costs[algorithm] = deep.entropy_cost
  assert costs['a3c'] == costs['a3c_multitask'] == 0.01
  assert costs['kl_ent_2col'] == costs['kl_1col'] == 1e-3
  fv.unparse_flags()
