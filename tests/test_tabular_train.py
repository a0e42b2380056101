"""End-to-end tests of the tabular trainer through ``cli.run_from_args``."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distral_tf import cli
from distral_tf import errors
from distral_tf import results
from distral_tf.agents import config as agents_config
from distral_tf.tabular import train

COMMON = ['--level_set=two_rooms', '--seed=0', '--num_tasks=8',
          '--env_steps_per_task=8000', '--tabular_eval_interval=2000']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp('tabular')
  out = {}
  for algorithm in ('soft_q', 'distral_soft_q'):
    logdir = str(base / algorithm)
    summary = cli.run_from_args(COMMON + [f'--algorithm={algorithm}',
                                          f'--logdir={logdir}'])
    out[algorithm] = (logdir, summary)
  yield out
  cli.FLAGS.unparse_flags()


def test_files_are_written(runs):
  logdir, summary = runs['distral_soft_q']
  with open(os.path.join(logdir, results.EPISODES_FILE), newline='') as f:
    header = next(csv.reader(f))
  assert tuple(header) == results.EPISODE_FIELDS
  rows = results.read_episodes(logdir)
  tasks = {r['task'] for r in rows}
  assert len(tasks) == 8 and all(t.startswith('goal_r') for t in tasks)
  assert {r['algorithm'] for r in rows} == {'distral_soft_q'}
  distilled = results.select(rows, policy='distilled')
  # Evaluations of pi_0 at 2000, 4000, 6000, 8000 steps, 4 episodes per task each.
  assert sorted({r['env_steps'] for r in distilled}) == [2000, 4000, 6000, 8000]
  assert len(distilled) == 4 * 8 * 4
  task_rows = results.select(rows, policy='task')
  assert max(r['env_steps'] for r in task_rows) <= 8000
  # Episode lengths add up to the steps of finished episodes.
  for t in tasks:
    trows = results.select(task_rows, task=t)
    assert sum(r['episode_length'] for r in trows) == max(r['env_steps'] for r in trows)
  with open(os.path.join(logdir, results.CONFIG_FILE)) as f:
    config = json.load(f)
  assert config['algorithm'] == 'distral_soft_q' and config['tabular_rollout_length'] == 10
  with open(os.path.join(logdir, results.SUMMARY_FILE)) as f:
    on_disk = json.load(f)
  assert on_disk['finished'] is True
  assert on_disk['total_env_steps'] == 8 * 8000
  assert set(on_disk['task']['tasks']) == tasks
  assert summary['task']['mean_final_return'] == on_disk['task']['mean_final_return']
  assert os.path.getsize(os.path.join(logdir, 'learning_curves.png')) > 0
  policies = train.load_policies(logdir)
  np.testing.assert_allclose(policies['pi0'].sum(-1), 1.0)
  assert policies['q'].shape[0] == 8
  # soft_q has no distilled policy to evaluate.
  soft_rows = results.read_episodes(runs['soft_q'][0])
  assert not results.select(soft_rows, policy='distilled')


def test_returns_rise_and_distral_learns_faster(runs):
  for algorithm in ('soft_q', 'distral_soft_q'):
    rows = results.select(results.read_episodes(runs[algorithm][0]), policy='task')
    first = np.mean([r['episode_return'] for r in rows if r['env_steps'] <= 1000])
    final = runs[algorithm][1]['task']['mean_final_return']
    assert final > first + 0.3, algorithm
  distral = runs['distral_soft_q'][1]
  soft = runs['soft_q'][1]
  assert distral['task']['mean_auc'] > soft['task']['mean_auc'] + 0.1
  # Distral's task policies end near the optimal return.
  assert distral['task']['mean_final_return'] > 0.9 * distral['mean_optimal_return']


def test_finished_run_is_reused(runs, capsys):
  logdir, summary = runs['soft_q']
  before = len(results.read_episodes(logdir))
  again = cli.run_from_args(COMMON + ['--algorithm=soft_q', f'--logdir={logdir}'])
  assert 'finished already' in capsys.readouterr().out
  assert again['task']['mean_auc'] == pytest.approx(summary['task']['mean_auc'])
  assert len(results.read_episodes(logdir)) == before


def test_alpha_below_one_learns(tmp_path):
  summary = cli.run_from_args(
      ['--level_set=two_rooms', '--seed=1', '--num_tasks=3', '--alpha=0.5',
       '--env_steps_per_task=8000', '--algorithm=distral_soft_q',
       '--tabular_eval_episodes=0', f'--logdir={tmp_path}'])
  cli.FLAGS.unparse_flags()
  assert summary['hyperparameters']['alpha'] == 0.5
  rows = results.select(results.read_episodes(str(tmp_path)), policy='task')
  first = np.mean([r['episode_return'] for r in rows if r['env_steps'] <= 1000])
  assert summary['task']['mean_final_return'] > first + 0.5


@pytest.mark.parametrize('flag, message', [
    ('--tabular_rollout_length=0', 'tabular_rollout_length'),
    ('--discount=1.0', r'discount must be in \[0, 1\)'),
    ('--learning_rate=1.5', r'learning_rate must be in \(0, 1\]'),
    ('--tabular_pseudocount=-1', 'tabular_pseudocount'),
    ('--num_tasks=40', r'\[1, 25\]'),
])
def test_bad_values_are_usage_errors(tmp_path, flag, message):
  with pytest.raises(errors.UsageError, match=message):
    cli.run_from_args(['--algorithm=distral_soft_q', flag, f'--logdir={tmp_path}'])
  cli.FLAGS.unparse_flags()


def test_figure3_runs_both_agents_and_writes_its_numbers(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run(
      [sys.executable, '-m', 'distral_tf.experiments.figure3', f'--logdir={tmp_path}',
       '--seeds=2', '--num_tasks=8', '--env_steps_per_task=8000'],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert proc.returncode == 0, proc.stderr
  with open(tmp_path / 'figure3.json') as f:
    numbers = json.load(f)
  for ext in ('png', 'pdf'):
    assert (tmp_path / f'figure3.{ext}').stat().st_size > 0
  for algorithm in ('soft_q', 'distral_soft_q'):
    for seed in (0, 1):
      assert (tmp_path / algorithm / f'seed{seed}' / results.SUMMARY_FILE).exists()
  a, b = numbers['agents']['distral_soft_q'], numbers['agents']['soft_q']
  # The AUC is the mean of the task- and seed-averaged curve.
  assert a['auc'] == pytest.approx(np.mean(a['curve_mean']))
  assert a['normalised_auc'] > b['normalised_auc']
  assert numbers['normalised_auc_ratio'] == pytest.approx(
      a['normalised_auc'] / b['normalised_auc'])
  assert 0 < numbers['mean_random_return'] + 2 < numbers['mean_optimal_return'] + 2
  assert numbers['near_optimal_threshold'] == pytest.approx(
      0.9 * numbers['mean_optimal_return'])
  # Distral gets near-optimal within the budget, at the first bin whose mean reaches it.
  steps = a['steps_to_near_optimal']
  assert steps is not None
  ends, curve = np.array(numbers['curve_bin_ends']), np.array(a['curve_mean'])
  assert curve[ends == steps][0] >= numbers['near_optimal_threshold']
  assert (curve[ends < steps] < numbers['near_optimal_threshold']).all()
  assert 'normalised AUC ratio' in proc.stdout


def test_evaluations_do_not_change_training():
  from distral_tf.envs import two_rooms  # pylint: disable=g-import-not-at-top
  from distral_tf.envs import two_rooms_tasks  # pylint: disable=g-import-not-at-top
  from distral_tf.tabular import agent  # pylint: disable=g-import-not-at-top
  goals = two_rooms_tasks.draw_goals(two_rooms.DEFAULTS, 3, seed=0)
  out = []
  for episodes in (0, 3):
    rows = []
    config = agent.AgentConfig(env_steps_per_task=1500, eval_interval=200,
                               eval_episodes=episodes, seed=2)
    state = agent.train(config, two_rooms.DEFAULTS, goals,
                        lambda *row: rows.append(row))
    out.append(([r for r in rows if r[-1] == 'task'], state.pi0))
    assert len(rows) - len(out[-1][0]) == episodes * 3 * 8  # 8 evaluations.
  assert out[0][0] == out[1][0]
  np.testing.assert_array_equal(out[0][1], out[1][1])


def _tree(logdir) -> dict:
  """Every file under ``logdir`` and its bytes."""
  out = {}
  for root, _, files in os.walk(logdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, logdir)] = f.read()
  return out


def test_a_deep_run_s_directory_is_refused_and_left_untouched(tmp_path):
  cli.FLAGS.unparse_flags()
  cli.FLAGS(['distral_tf', '--algorithm=kl_ent_2col', f'--logdir={tmp_path}'])
  config, _ = agents_config.from_flags(cli.FLAGS)
  results.write_json(str(tmp_path / results.CONFIG_FILE), dict(config.config_record))
  writer = results.EpisodeWriter(str(tmp_path), 'kl_ent_2col', 0)
  for steps in range(0, 1000, 100):
    writer.write('goal_r1_c10', steps, -1.4, 20)
  writer.close()
  before = _tree(tmp_path)
  with pytest.raises(errors.UsageError,
                     match=r'holds another run: --algorithm=kl_ent_2col \(now soft_q\)'):
    cli.run_from_args(COMMON + ['--algorithm=soft_q', f'--logdir={tmp_path}'])
  cli.FLAGS.unparse_flags()
  assert _tree(tmp_path) == before


def test_a_finished_run_with_other_flags_is_refused(runs):
  logdir, _ = runs['soft_q']
  before = _tree(logdir)
  for changed in ('--seed=1', '--env_steps_per_task=4000', '--two_rooms_step_limit=40',
                  '--tabular_eval_episodes=1'):
    flag = changed.split('=')[0]
    with pytest.raises(errors.UsageError, match=f'holds another run: {flag}='):
      cli.run_from_args([a for a in COMMON if not a.startswith(flag + '=')] +
                        ['--algorithm=soft_q', changed, f'--logdir={logdir}'])
  cli.FLAGS.unparse_flags()
  assert _tree(logdir) == before


def test_an_unfinished_run_starts_afresh(tmp_path):
  args = ['--algorithm=soft_q', '--num_tasks=2', '--env_steps_per_task=500',
          f'--logdir={tmp_path}']
  cli.run_from_args(args)
  first = results.read_episodes(str(tmp_path))
  (tmp_path / results.SUMMARY_FILE).unlink()  # Stopped before the end ...
  with open(tmp_path / results.EPISODES_FILE, 'a') as f:
    f.write('soft_q,0,goal')  # ... in the middle of a row.
  summary = cli.run_from_args(args)
  cli.FLAGS.unparse_flags()
  assert summary['finished']
  assert results.read_episodes(str(tmp_path)) == first  # Same seed: same episodes.
