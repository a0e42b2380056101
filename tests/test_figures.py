"""Figure 4's analysis and files, on small synthetic log directories."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from distral_tf import results
from distral_tf.experiments import analysis
from distral_tf.experiments import panels
from distral_tf.experiments import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = 1000
STEP = 20  # One episode per curve bin: BUDGET / results.CURVE_BINS.
TASKS = ('t0', 't1')


def ramp(c):
  """Return c * steps / BUDGET: AUC 0.51 c, final (last 10 episodes) 0.91 c."""
  return lambda steps: c * steps / BUDGET


def const(c):
  return lambda steps: c


def late(c):
  """0 until 80% of the budget, then c: AUC 0.2 c, final c."""
  return lambda steps: c if steps > 0.8 * BUDGET else 0.0


def write_run(root, level_set, algorithm, ent, lr, seed, task_fns, distilled_fns=None,
              finished=True, upto=BUDGET):
  """A run's episodes.csv, config.json and (if finished) summary.json."""
  logdir = schedule.sweep_logdir(root, level_set, algorithm, ent, lr, seed)
  writer = results.EpisodeWriter(logdir, algorithm, seed)
  for steps in range(STEP, upto + 1, STEP):
    for task, fn in task_fns.items():
      writer.write(task, steps, fn(steps), 10)
    for task, fn in (distilled_fns or {}).items():
      writer.write(task, steps, fn(steps), 10, policy='distilled')
  writer.close()
  results.write_json(os.path.join(logdir, results.CONFIG_FILE), dict(
      level_set=level_set, algorithm=algorithm, seed=seed, entropy_cost=ent,
      learning_rate=lr, env_steps_per_task=BUDGET))
  if finished:
    results.write_json(os.path.join(logdir, results.SUMMARY_FILE),
                       dict(finished=True, wall_time_s=1.0, total_env_steps=upto))
  return logdir


def both(fn):
  return {t: fn for t in TASKS}


def by_algorithm(result, panel):
  return {a.algorithm: a for a in result.panels[panel]}


def test_normalised_level_sets_match_the_dmlab_level_sets():
  from distral_tf.dmlab import games  # pylint: disable=g-import-not-at-top
  assert set(analysis.NORMALISED_LEVEL_SETS) == set(games.NORMALISED_BY_A3C)


def test_auc_and_final_return_values(tmp_path):
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 0, both(ramp(2.0)))
  runs, _ = analysis.discover_runs(str(tmp_path))
  metrics = analysis.run_metrics(runs[0], 'task')
  assert metrics.aucs['t0'] == pytest.approx(0.51 * 2.0)
  assert metrics.finals['t1'] == pytest.approx(0.91 * 2.0)
  np.testing.assert_allclose(metrics.mean_curve, 2.0 * np.arange(1, 51) / 50)


def test_best_setting_is_chosen_by_mean_auc_over_seeds_and_tasks(tmp_path):
  # A: AUC 0.51 everywhere. B: one seed at 0.9, one at 0.1 (mean 0.5, max 0.9).
  # C: final 1.0 but AUC 0.2. Only the mean AUC picks A.
  for seed in (0, 1):
    write_run(tmp_path, 'mazes', 'kl_ent_2col', 0.001, 1e-4, seed, both(ramp(1.0)))
    write_run(tmp_path, 'mazes', 'kl_ent_2col', 0.01, 1e-4, seed,
              both(const(0.9 if seed == 0 else 0.1)))
    write_run(tmp_path, 'mazes', 'kl_ent_2col', 0.001, 1e-3, seed, both(late(1.0)))
  runs, _ = analysis.discover_runs(str(tmp_path))
  result = analysis.analyse_level_set(runs, 'mazes')
  algo = by_algorithm(result, 'task')['kl_ent_2col']
  assert algo.best_setting == (0.001, 1e-4)
  assert algo.setting_scores[(0.01, 1e-4)] == pytest.approx(0.5)
  assert algo.setting_scores[(0.001, 1e-3)] == pytest.approx(0.2)
  assert sorted(algo.best_logdirs) == sorted(
      schedule.sweep_logdir(str(tmp_path), 'mazes', 'kl_ent_2col', 0.001, 1e-4, s)
      for s in (0, 1))
  np.testing.assert_allclose(algo.best.mean, np.arange(1, 51) / 50)
  np.testing.assert_allclose(algo.best.std, 0.0, atol=1e-12)
  assert not result.normalised
  row = panels.table_rows([result])[0]
  assert (row['entropy_cost'], row['learning_rate'], row['seeds']) == ('0.001',
                                                                      '0.0001', 2)
  assert float(row['final_return']) == pytest.approx(0.91)
  assert float(row['auc']) == pytest.approx(0.51)
  assert float(row['final_return_std']) == 0.0


def test_spread_over_seeds(tmp_path):
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 0, both(const(1.0)))
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 1, both(const(3.0)))
  runs, _ = analysis.discover_runs(str(tmp_path))
  algo = by_algorithm(analysis.analyse_level_set(runs, 'mazes'), 'task')['a3c']
  np.testing.assert_allclose(algo.best.mean, 2.0)
  np.testing.assert_allclose(algo.best.std, np.sqrt(2.0))
  row = panels.table_rows([analysis.analyse_level_set(runs, 'mazes')])[0]
  assert float(row['auc_std']) == pytest.approx(np.sqrt(2.0), rel=1e-3)


def test_normalisation_by_best_a3c_score_per_task(tmp_path):
  for level_set in ('navigation', 'mazes'):
    write_run(tmp_path, level_set, 'a3c', 0.01, 1e-3, 0,
              {'t0': const(10.0), 't1': const(2.0)})
    write_run(tmp_path, level_set, 'a3c', 0.01, 1e-4, 0,
              {'t0': const(4.0), 't1': const(4.0)})
    # Multitask A3C is not the baseline: its 100 must not set the scale.
    write_run(tmp_path, level_set, 'a3c_multitask', 0.01, 1e-3, 0,
              {'t0': const(100.0), 't1': const(1.0)})
    write_run(tmp_path, level_set, 'kl_ent_2col', 0.01, 1e-3, 0,
              {'t0': const(5.0), 't1': const(4.0)},
              distilled_fns={'t0': const(2.0), 't1': const(2.0)})
  runs, _ = analysis.discover_runs(str(tmp_path))
  nav = analysis.analyse_level_set(runs, 'navigation')
  assert nav.normalised
  assert nav.scales == {'t0': 10.0, 't1': 4.0}
  task = by_algorithm(nav, 'task')
  assert task['kl_ent_2col'].best.finals == [pytest.approx((0.5 + 1.0) / 2)]
  assert task['a3c'].best_setting == (0.01, 1e-3)        # (1 + 0.5) / 2 > (0.4 + 1) / 2
  assert task['a3c'].sorted_finals == pytest.approx([0.75, 0.7])
  assert task['a3c_multitask'].best.finals == [pytest.approx((10.0 + 0.25) / 2)]
  distilled = by_algorithm(nav, 'distilled')
  assert distilled['kl_ent_2col'].best.finals == [pytest.approx((0.2 + 0.5) / 2)]
  mazes = analysis.analyse_level_set(runs, 'mazes')
  assert not mazes.normalised and mazes.scales == {}
  assert by_algorithm(mazes, 'task')['kl_ent_2col'].best.finals == [4.5]


def test_final_returns_of_every_run_sorted_decreasing(tmp_path):
  values = {(0.001, 1e-4, 0): 0.3, (0.001, 1e-4, 1): 0.9, (0.01, 1e-4, 0): 0.1,
            (0.01, 1e-3, 0): 0.5, (0.01, 1e-3, 1): 0.7}
  for (ent, lr, seed), v in values.items():
    write_run(tmp_path, 'mazes', 'a3c_2col', ent, lr, seed, both(const(v)))
  runs, _ = analysis.discover_runs(str(tmp_path))
  algo = by_algorithm(analysis.analyse_level_set(runs, 'mazes'), 'task')['a3c_2col']
  assert algo.sorted_finals == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1])
  assert algo.num_runs == 5


def test_distilled_panel_holds_pi0_and_a3c_multitask(tmp_path):
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 0, both(const(1.0)))
  write_run(tmp_path, 'mazes', 'a3c_multitask', 0.01, 1e-3, 0, both(const(0.7)))
  # A3C_2col's shared column is not distilled: left out even if it has pi_0 rows.
  write_run(tmp_path, 'mazes', 'a3c_2col', 0.01, 1e-3, 0, both(const(1.0)),
            distilled_fns=both(const(0.4)))
  write_run(tmp_path, 'mazes', 'kl_2col', 0.01, 1e-3, 0, both(const(1.0)),
            distilled_fns=both(const(0.6)))
  write_run(tmp_path, 'mazes', 'kl_1col', 0.01, 1e-3, 0, both(const(1.0)))
  runs, _ = analysis.discover_runs(str(tmp_path))
  result = analysis.analyse_level_set(runs, 'mazes')
  distilled = by_algorithm(result, 'distilled')
  assert set(distilled) == {'a3c_multitask', 'kl_2col'}
  assert distilled['a3c_multitask'].best.finals == [pytest.approx(0.7)]
  assert distilled['kl_2col'].best.finals == [pytest.approx(0.6)]
  assert any('kl_1col has no pi_0 episodes' in n for n in result.notes)
  assert any('no runs of kl_ent_1col, kl_ent_2col' in n for n in result.notes)
  assert [r['policy'] for r in panels.table_rows([result])].count('pi_0') == 2


def test_unfinished_runs_count_and_transfer_runs_are_left_out(tmp_path):
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 0, both(const(1.0)))
  write_run(tmp_path, 'mazes', 'a3c', 0.01, 1e-3, 1, both(const(3.0)), finished=False,
            upto=BUDGET // 2)
  other = write_run(tmp_path / 'x', 'mazes', 'kl_2col', 0.01, 1e-3, 0, both(const(9.0)))
  results.write_json(os.path.join(other, results.CONFIG_FILE), dict(
      level_set='mazes', algorithm='kl_2col', seed=0, tasks=['1']))
  runs, notes = analysis.discover_runs(str(tmp_path))
  assert {r.algorithm for r in runs} == {'a3c'}
  assert any('chosen tasks' in n for n in notes)
  result = analysis.analyse_level_set(runs, 'mazes')
  algo = by_algorithm(result, 'task')['a3c']
  assert (algo.num_runs, algo.num_finished) == (2, 1)
  assert algo.best.finals == [1.0, 3.0]
  assert any('1 of 2 runs are not finished' in n for n in result.notes)


def test_figure4_command_writes_png_pdf_and_tables(tmp_path):
  sweep = tmp_path / 'sweep'
  for algorithm in ('a3c', 'a3c_multitask', 'kl_ent_2col'):
    for seed in (0, 1):
      write_run(sweep, 'lasertag', algorithm, 0.01, 1e-3, seed,
                both(ramp(1.0 + seed)), distilled_fns=both(ramp(0.5)))
  write_run(sweep, 'two_rooms', 'kl_2col', 0.03, 1e-3, 0, both(ramp(1.0)),
            distilled_fns=both(ramp(1.0)), finished=False, upto=600)
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'distral_tf.experiments.figure4', f'--sweep_dir={sweep}',
       f'--out={out}'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  for stem in ('figure4_lasertag', 'figure4_two_rooms'):
    with open(out / f'{stem}.png', 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(out / f'{stem}.pdf', 'rb') as f:
      assert f.read(5) == b'%PDF-'
  with open(out / f'{panels.TABLE_STEM}.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  lasertag = {(r['algorithm'], r['policy']): r for r in rows if r['level_set'] ==
              'lasertag'}
  assert set(lasertag) == {('a3c', 'pi_i'), ('a3c_multitask', 'pi_i'),
                           ('kl_ent_2col', 'pi_i'), ('a3c_multitask', 'pi_0'),
                           ('kl_ent_2col', 'pi_0')}
  # Best A3C final per task is 0.91 * 2 (seed 1): seed 0 scores 0.5, seed 1 scores 1.
  assert float(lasertag[('a3c', 'pi_i')]['final_return']) == pytest.approx(0.75)
  assert lasertag[('a3c', 'pi_i')]['normalised'] == 'yes'
  md = (out / f'{panels.TABLE_STEM}.md').read_text()
  assert '| lasertag | pi_0 | kl_ent_2col |' in md
  assert 'no runs of a3c, a3c_multitask' in proc.stdout  # two_rooms lacks them.
  # Distral's curves equal A3C's here: no claim can be told apart.
  claims_md = (out / panels.CLAIMS_FILE).read_text()
  assert ('- *cannot tell*: Distral (2col) >= the A3C baselines in AUC. AUC of pi_i: '
          'kl_ent_2col') in claims_md
  assert '+0.000' in claims_md


def test_figure4_of_a_subset_of_the_algorithms(tmp_path):
  subset = ('a3c', 'a3c_multitask', 'kl_ent_2col')
  for algorithm, c in zip(subset, (0.5, 1.0, 2.0)):
    for seed in (0, 1):
      write_run(tmp_path, 'miniworld', algorithm, 0.01, 5e-4, seed, both(ramp(c)),
                distilled_fns=both(ramp(c)) if algorithm == 'kl_ent_2col' else None)
  logs = []
  report = panels.write_figure4(str(tmp_path), str(tmp_path / 'out'), ['miniworld'],
                                log=logs.append)
  (result,) = report['results']
  assert [a.algorithm for a in result.panels['task']] == list(subset)
  assert [a.algorithm for a in result.panels['distilled']] == ['a3c_multitask',
                                                               'kl_ent_2col']
  assert [(r['policy'], r['algorithm']) for r in report['rows']] == [
      ('pi_i', 'a3c'), ('pi_i', 'a3c_multitask'), ('pi_i', 'kl_ent_2col'),
      ('pi_0', 'a3c_multitask'), ('pi_0', 'kl_ent_2col')]
  assert float(report['rows'][2]['auc']) == pytest.approx(0.51 * 2.0)
  assert 'note: miniworld: no runs of a3c_2col, kl_1col, kl_ent_1col, kl_2col ' \
         '(skipped)' in logs
  with open(tmp_path / 'out' / 'figure4_miniworld.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  claims_md = (tmp_path / 'out' / panels.CLAIMS_FILE).read_text()
  assert 'Not run on miniworld: a3c_2col, kl_1col, kl_ent_1col, kl_2col;' in claims_md
  assert claims_md.count('- *not run*: ') == 6
  assert ('- *agrees*: Distral (2col) >= the A3C baselines in AUC. AUC of pi_i: '
          'kl_ent_2col 1.020 +- 0.000 vs a3c_multitask 0.510 +- 0.000;') in claims_md


def test_figure4_command_without_runs_is_a_usage_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'distral_tf.experiments.figure4',
       f'--sweep_dir={tmp_path}', f'--out={tmp_path / "out"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error: no runs')


def test_frames_to_reach_a_threshold_over_consecutive_episodes():
  rows = [dict(env_steps=10 * (i + 1), episode_return=r)
          for i, r in enumerate([0, 0, 1, 1, 0, 1, 1, 1])]
  # Means over 3 consecutive episodes: 1/3, 2/3, 2/3, 2/3, 2/3, 1.
  assert results.frames_to_reach(rows, 0.6, 3) == 40
  assert results.frames_to_reach(rows, 0.9, 3) == 80
  assert results.frames_to_reach(rows, 1.1, 3) is None
  assert results.frames_to_reach(rows[:2], 0.0, 3) is None
  # Order of the rows does not matter, only their frame counts.
  assert results.frames_to_reach(rows[::-1], 0.6, 3) == 40
