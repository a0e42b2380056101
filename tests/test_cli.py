"""Bad flags, log directories and full disks: exit 2 with one line on stderr."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from distral_tf import run_dir

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
    # Values that passed the checks and then failed in training.
    (['--entropy_cost=inf'], ['--entropy_cost must be a finite number, got inf']),
    (['--learning_rate=inf'], ['--learning_rate must be a finite number, got inf']),
    (['--learning_rate=nan'], ['--learning_rate must be a finite number, got nan']),
    (['--grad_clip_norm=inf'], ['--grad_clip_norm must be a finite number']),
    (['--algorithm=soft_q', '--two_rooms_goal_reward=-inf'],
     ['--two_rooms_goal_reward must be a finite number']),
    (['--unroll_length=1000', '--env_steps_per_task=2000'],
     ['--unroll_length must be at most 100', 'got 1000']),
    (['--unroll_length=50', '--env_steps_per_task=40'],
     ['--unroll_length=50 is more than --env_steps_per_task=40']),
    (['--workers_per_task=100000'],
     ["--workers_per_task=100000 does not fit this machine's memory", 'for each of 8',
      'GB, and this machine has', 'per task fit']),
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
  from distral_tf.agents import config_limits  # pylint: disable=g-import-not-at-top
  gib = 2**30
  # 2 cores, 24 GiB, 8 tasks: 8 processes at most, one per task.
  assert config_limits.machine_workers_per_task(8, cores=2, memory_bytes=24 * gib) == 1
  # 64 cores, 256 GiB: cores allow 256 processes, memory about 450.
  assert config_limits.machine_workers_per_task(4, cores=64, memory_bytes=256 * gib) == 64
  # Memory binds: 16 cores but 4 GiB hold 7 processes.
  assert config_limits.machine_workers_per_task(1, cores=16, memory_bytes=4 * gib) == 7
  assert config_limits.machine_workers_per_task(8, cores=1, memory_bytes=1 * gib) == 1
  fv = cli.FLAGS
  fv.unparse_flags()
  fv(['distral_tf', '--level_set=lasertag'])
  deep, notes = config.from_flags(fv)
  assert deep.workers_per_task == config_limits.machine_workers_per_task(8)
  assert notes and 'paper used 32' in notes[0]
  fv.unparse_flags()
  fv(['distral_tf', '--level_set=navigation', '--cluster=tf_config'])
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


def test_a_config_emptied_of_its_flags_is_refused(tmp_path):
  """``{}`` in config.json: not resumed by another run (nor appended to)."""
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text('{}')
  episodes = 'algorithm,seed,task,env_steps,episode_return,episode_length,policy\n'
  (run / 'episodes.csv').write_text(episodes)
  proc = launch('--algorithm=a3c', '--seed=5', '--learning_rate=0.1', '--num_tasks=2',
                f'--logdir={run}', cwd=tmp_path)
  line = _one_line_error(proc)
  assert 'config.json lacks the flags of a run' in line
  assert (run / 'episodes.csv').read_text() == episodes
  assert sorted(os.listdir(run)) == ['config.json', 'episodes.csv']


def test_a_checkpoint_directory_that_takes_no_files_is_refused_before_training(tmp_path):
  """``chattr +i checkpoints/``: one line and exit 2, not an abort while saving."""
  if shutil.which('chattr') is None:
    pytest.skip('needs chattr')
  run = tmp_path / 'run'
  args = ['--algorithm=a3c', '--num_tasks=1', '--workers_per_task=2',
          '--env_steps_per_task=400', '--checkpoint_secs=1', f'--logdir={run}']
  config_script = textwrap.dedent(f"""
      from distral_tf import cli, results
      from distral_tf.agents import config
      cli.FLAGS(['distral_tf', *{args!r}])
      results.write_json('{run}/config.json',
                         dict(config.from_flags(cli.FLAGS)[0].config_record))
      """)
  run.mkdir()
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  subprocess.run([sys.executable, '-c', config_script], check=True, env=env, cwd=tmp_path,
                 timeout=120)
  (run / 'checkpoints').mkdir()
  if subprocess.run(['chattr', '+i', str(run / 'checkpoints')],
                    capture_output=True).returncode != 0:
    pytest.skip('the file system refuses chattr +i')
  try:
    proc = launch(*args, cwd=tmp_path)
  finally:
    subprocess.run(['chattr', '-i', str(run / 'checkpoints')], check=True)
  line = _one_line_error(proc)
  assert f'cannot write in --logdir={run}: its checkpoints/' in line
  assert 'Operation not permitted' in line
  assert not (run / 'episodes.csv').exists()  # Refused before training started.


def test_two_runs_cannot_share_a_log_directory(tmp_path):
  """The second of two identical commands is refused, told which run holds it."""
  run = tmp_path / 'run'
  args = ['--algorithm=distral_soft_q', '--num_tasks=2', '--env_steps_per_task=5000000',
          f'--logdir={run}']
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  first = subprocess.Popen([sys.executable, '-m', 'distral_tf.launch', *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=tmp_path, env=env)
  try:
    deadline = time.time() + 120
    while not (run / 'episodes.csv').exists() and time.time() < deadline:
      assert first.poll() is None, 'the first run ended early'
      time.sleep(0.1)
    second = launch(*args, cwd=tmp_path)
    line = _one_line_error(second)
    assert line.startswith(f'error: --logdir={run} is in use by pid {first.pid} on ')
    assert 'distral_tf.launch' in line and '--env_steps_per_task=5000000' in line
    assert first.poll() is None  # Untouched: still training, still its directory.
  finally:
    first.kill()
    first.wait()
  rows = [l.split(',') for l in (run / 'episodes.csv').read_text().splitlines()[1:]]
  for task in {r[2] for r in rows}:
    steps = [int(r[3]) for r in rows if r[2] == task and len(r) == 7]
    assert steps == sorted(steps)
  # The lock died with its holder (killed): the directory can be taken again.
  run_dir.hold(str(run))
  run_dir.release(str(run))


# Runs the command as ``python -m distral_tf.launch`` does, with one exit handler
# more: a slow one, as the exit handlers of a loaded machine are (absl's,
# logging's, multiprocessing's, matplotlib's, concurrent.futures').
SLOW_EXIT = textwrap.dedent('''
    import atexit, runpy, sys, time
    def slow_exit_handler():
      print('exiting', flush=True)
      time.sleep(5)
    atexit.register(slow_exit_handler)
    sys.argv = ['distral_tf.launch', *sys.argv[1:]]
    print('starting', flush=True)
    runpy.run_module('distral_tf.launch', run_name='__main__', alter_sys=True)
    ''')


def test_ctrl_c_during_start_up_is_one_line_even_when_pressed_again(tmp_path):
  """A second Ctrl-C while the process exits must not raise in an exit handler."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.Popen(
      [sys.executable, '-c', SLOW_EXIT, '--num_tasks=2', f'--logdir={tmp_path / "run"}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    assert proc.stdout.readline() == 'starting\n'
    time.sleep(0.5)  # The trainer's modules (and TensorFlow) are loading.
    proc.send_signal(signal.SIGINT)
    first = proc.stderr.readline()
    assert first.startswith('Stopped during start-up, before training began.'), first
    for _ in range(3):  # Pressed again while the process exits.
      time.sleep(0.3)
      if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
  finally:
    if proc.poll() is None:
      proc.kill()
  assert rest == '', rest


def test_ctrl_c_while_a_finished_run_exits_prints_nothing_more(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.Popen(
      [sys.executable, '-c', SLOW_EXIT, '--algorithm=distral_soft_q', '--num_tasks=2',
       '--env_steps_per_task=500', '--tabular_eval_interval=250',
       f'--logdir={tmp_path / "run"}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    out = ''
    for line in proc.stdout:  # Until the run has ended and the process exits.
      out += line
      if line == 'exiting\n':
        break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out += rest
  finally:
    if proc.poll() is None:
      proc.kill()
  assert err == '', err
  assert proc.returncode == 130
  assert 'pi_i final' in out  # Its output is whole.
