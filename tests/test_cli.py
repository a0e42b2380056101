"""Bad flags of ``python -m distral_tf.launch`` exit 2 with one line on stderr."""

import os
import subprocess
import sys

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
