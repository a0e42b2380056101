"""The Figure 4 claims: scores at the best setting, bootstrap intervals, verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distral_tf import results
from distral_tf.envs import two_rooms
from distral_tf.envs import two_rooms_tasks
from distral_tf.experiments import analysis
from distral_tf.experiments import claims
from distral_tf.experiments import random_returns


def samples(**by_setting):
  """{'s1': [(auc, final, good), ...]} -> Samples keyed by (entropy cost, rate)."""
  out = {}
  for k, (name, rows) in enumerate(sorted(by_setting.items())):
    out[(0.01 * (k + 1), 1e-3)] = np.asarray(rows, dtype=np.float64)
  return out


def constant(auc, final, n=3, good=0.0):
  return samples(a=[(auc, final, good)] * n)


def test_point_score_is_the_metric_at_the_setting_with_best_mean_auc():
  s = samples(a=[(1.0, 0.1, 0), (3.0, 0.3, 1)], b=[(2.5, 0.9, 1), (2.5, 0.7, 1)])
  assert claims.best_setting_scores(s, claims.AUC)[0] == pytest.approx(2.5)
  assert claims.best_setting_scores(s, claims.FINAL)[0] == pytest.approx(0.8)
  assert claims.best_setting_std(s, claims.FINAL) == pytest.approx(np.std([0.9, 0.7],
                                                                          ddof=1))
  # Share of good runs is over every setting: 3 of 4.
  assert claims.share_of_good(s)[0] == pytest.approx(0.75)


def test_bootstrap_interval_of_a_mean_has_the_width_of_its_standard_error():
  rng = np.random.default_rng(1)
  values = rng.normal(0.0, 1.0, size=40)
  s = samples(a=[(v, v, 0) for v in values])
  reps = claims.best_setting_scores(s, claims.FINAL, np.random.default_rng(0), 4000)
  # Bootstrap of a mean: spread std / sqrt(n) (population std), centred on the mean.
  se = np.std(values) / np.sqrt(len(values))
  assert np.std(reps) == pytest.approx(se, rel=0.1)
  assert np.mean(reps) == pytest.approx(np.mean(values), abs=0.1 * se)


def test_replicates_choose_the_best_setting_again():
  # Setting a: AUC mean 1.1 (0 or 2.2), final 0; setting b: AUC about 1.0, final 1.
  # The point estimate picks a. Resampling a's two seeds gives AUC means 0, 1.1,
  # 1.1, 2.2 with probability 1/4 each; only the first loses to b (0.95..1.05).
  s = samples(a=[(0.0, 0.0, 0), (2.2, 0.0, 0)], b=[(0.95, 1.0, 1), (1.05, 1.0, 1)])
  assert claims.best_setting_scores(s, claims.FINAL)[0] == 0.0
  reps = claims.best_setting_scores(s, claims.FINAL, np.random.default_rng(0), 4000)
  assert set(np.unique(reps)) == {0.0, 1.0}
  assert np.mean(reps) == pytest.approx(0.25, abs=0.03)


def test_verdicts():
  clear = {'left': constant(2.0, 1.0), 'right': constant(1.0, 0.5)}
  c = claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'], clear,
                     num_replicates=200)
  assert c.verdict == 'agrees'
  assert c.difference == pytest.approx(1.0)
  assert c.ci == pytest.approx((1.0, 1.0))
  c = claims.compare('right >= left', 'task', claims.AUC, ['right'], ['left'], clear,
                     num_replicates=200)
  assert c.verdict == 'disagrees'
  # Overlapping seeds: a difference of 0.1 under a spread of about 1.
  noisy = {'left': samples(a=[(0.1, 0, 0), (1.1, 0, 0), (2.1, 0, 0)]),
           'right': samples(a=[(0.0, 0, 0), (1.0, 0, 0), (2.0, 0, 0)])}
  c = claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'], noisy,
                     num_replicates=500)
  assert c.verdict == 'cannot tell'
  assert c.spread == pytest.approx(1.0)
  assert c.ci[0] < 0 < c.ci[1]
  # Every seed differs by the same 0.1 but the seeds' spread is 1: cannot tell.
  shifted = {'left': samples(a=[(1.1, 0, 0)] * 3 + [(3.1, 0, 0)] * 3),
             'right': samples(a=[(1.0, 0, 0)] * 3 + [(3.0, 0, 0)] * 3)}
  c = claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'],
                     shifted, num_replicates=200)
  assert c.difference == pytest.approx(0.1)
  assert c.verdict == 'cannot tell'


def test_one_seed_at_a_setting_cannot_tell_however_large_the_difference():
  # One seed each: the bootstrap cannot vary and there is no spread.
  one = {'left': constant(2.0, 1.0, n=1), 'right': constant(1.0, 0.5, n=1)}
  for metric in (claims.AUC, claims.FINAL, claims.GOOD):
    c = claims.compare('left >= right', 'task', metric, ['left'], ['right'], one,
                       num_replicates=100)
    assert c.verdict == 'cannot tell' and c.seeds == 1, metric
  assert 'One seed at some setting' in claims.sentence(
      claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'], one,
                     num_replicates=100))
  # A second setting with one seed is enough to withhold a verdict.
  mixed = {'left': samples(a=[(2.0, 1.0, 1)] * 3, b=[(0.5, 0.2, 0)]),
           'right': constant(1.0, 0.5)}
  c = claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'], mixed,
                     num_replicates=100)
  assert c.seeds == 1 and c.verdict == 'cannot tell'
  # Two seeds everywhere: the verdict is given.
  two = {'left': constant(2.0, 1.0, n=2), 'right': constant(1.0, 0.5, n=2)}
  c = claims.compare('left >= right', 'task', claims.AUC, ['left'], ['right'], two,
                     num_replicates=100)
  assert c.verdict == 'agrees' and c.seeds == 2
  assert 'One seed' not in claims.sentence(c)


def test_a_group_is_scored_by_its_best_member_and_missing_algorithms_are_skipped():
  data = {'x': constant(1.0, 0.0), 'y': constant(3.0, 0.0), 'z': constant(2.0, 0.0)}
  c = claims.compare('claim', 'task', claims.AUC, ['z'], ['x', 'y', 'absent'], data,
                     num_replicates=100)
  assert (c.left, c.right, c.difference) == ('z', 'y', pytest.approx(-1.0))
  assert claims.compare('claim', 'task', claims.AUC, ['absent'], ['x'], data) is None


def fake_run(algorithm, seed, task_finals, setting=(0.01, 1e-3), distilled=None):
  """An ``analysis.Run`` whose policies' curves are constant at the given returns."""
  def scores(finals):
    curves = {t: np.full(results.CURVE_BINS, v) for t, v in finals.items()}
    return analysis.Scores(curves, dict(finals), dict(finals))
  sc = {'task': scores(task_finals)}
  if distilled is not None:
    sc['distilled'] = scores(distilled)
  return analysis.Run(logdir=f'{algorithm}/{seed}', level_set='two_rooms',
                      algorithm=algorithm, seed=seed, entropy_cost=setting[0],
                      learning_rate=setting[1], budget=100, finished=True, config={},
                      scores=sc)


def test_a_good_run_reaches_a_fraction_of_the_two_rooms_optimum():
  optimum = two_rooms_tasks.optimal_returns(None, ['goal_r2_c10'])['goal_r2_c10']
  runs = [fake_run('kl_ent_2col', s, {'goal_r2_c10': optimum * f})
          for s, f in enumerate((0.79, 0.81, 1.0))]
  runs += [fake_run('a3c', s, {'goal_r2_c10': -0.5}) for s in range(3)]
  got, good_means = claims.collect_samples(runs, 'task')
  assert 'optimal return' in good_means
  assert list(got['kl_ent_2col'].values())[0][:, claims.GOOD].tolist() == [0, 1, 1]
  assert claims.share_of_good(got['kl_ent_2col'])[0] == pytest.approx(2 / 3)
  assert claims.share_of_good(got['a3c'])[0] == 0.0


def test_without_a_known_optimum_good_is_relative_to_the_best_run():
  runs = [fake_run('a3c', s, {'t': v}) for s, v in enumerate((10.0, 7.9, 8.0))]
  got, good_means = claims.collect_samples(runs, 'task', reference=lambda run, scales: None)
  assert 'best run' in good_means
  assert list(got['a3c'].values())[0][:, claims.GOOD].tolist() == [1, 0, 1]


def test_on_deepmind_lab_good_is_twice_the_random_policys_return():
  random = random_returns.random_return('mazes', 'nav_maze_static_01')
  assert random and random > 0
  runs = [dataclasses.replace(fake_run('a3c', s, {'nav_maze_static_01': v}),
                              level_set='mazes')
          for s, v in enumerate((2 * random - 0.01, 2 * random, 0.5))]
  got, good_means = claims.collect_samples(runs, 'task')
  assert 'random policy' in good_means
  assert list(got['a3c'].values())[0][:, claims.GOOD].tolist() == [0, 1, 0]
  # Returns divided by a task's scale: so is the random policy's.
  got, _ = claims.collect_samples(runs, 'task', scales={'nav_maze_static_01': 2.0})
  assert list(got['a3c'].values())[0][:, claims.GOOD].tolist() == [0, 1, 0]
  # A task without a recorded random return: relative to the best run.
  other = [dataclasses.replace(fake_run('a3c', 0, {'t': 1.0}), level_set='mazes')]
  assert 'best run' in claims.collect_samples(other, 'task')[1]


def test_two_rooms_optimal_returns_by_task_name():
  layout = two_rooms.layout_of(two_rooms.DEFAULTS)
  cell = int(layout.goal_cells[3])
  name = two_rooms_tasks.task_name(layout, cell)
  assert two_rooms_tasks.optimal_returns(None, [name]) == {
      name: two_rooms.optimal_return(two_rooms.DEFAULTS, cell)}
  with pytest.raises(ValueError):
    two_rooms_tasks.optimal_returns(None, ['goal_0'])


def test_claims_markdown_states_every_claim_with_a_verdict():
  tasks = {'goal_r2_c10': 0.9}
  runs = []
  for seed in range(3):
    for algorithm, value in (('a3c', -0.5), ('a3c_multitask', -0.4), ('a3c_2col', 0.0),
                             ('kl_1col', 0.2), ('kl_ent_1col', 0.3), ('kl_2col', 0.8),
                             ('kl_ent_2col', 0.85)):
      distilled = ({t: value for t in tasks} if algorithm.startswith('kl') else None)
      runs.append(fake_run(algorithm, seed, {t: value + 0.01 * seed for t in tasks},
                           distilled=distilled))
  result = analysis.analyse_level_set(runs, 'two_rooms')
  text = claims.claims_markdown(runs, [result], num_replicates=200)
  lines = [l for l in text.splitlines() if l.startswith('- *')]
  assert len(lines) == 9
  assert all(l.startswith('- *agrees*') for l in lines), text
  assert 'kl_ent_2col 0.860 +- 0.010 vs a3c_2col 0.010 +- 0.010' in text


def subset_runs(algorithms, distilled=True):
  """Three seeds of ``algorithms`` on two_rooms, the Distral ones ahead."""
  value = {'a3c': 0.1, 'a3c_multitask': 0.2, 'kl_2col': 0.7, 'kl_ent_2col': 0.8}
  return [fake_run(a, seed, {'goal_r2_c10': value[a] + 0.01 * seed},
                   distilled=({'goal_r2_c10': value[a]}
                              if distilled and a.startswith('kl') else None))
          for a in algorithms for seed in range(3)]


def test_claims_of_algorithms_not_run_say_so():
  runs = subset_runs(('a3c', 'a3c_multitask', 'kl_ent_2col'))
  comparisons, _ = claims.level_set_comparisons(runs, 'two_rooms', num_replicates=200)
  assert len(comparisons) == 9
  made = [c for c in comparisons if isinstance(c, claims.Comparison)]
  missing = [c for c in comparisons if isinstance(c, claims.Missing)]
  # Distral vs baselines (AUC, good runs) and the distilled claim are made with
  # the members that ran; the six that need kl_2col or a 1col algorithm are not.
  assert [(c.left, c.right, c.not_run) for c in made] == [
      ('kl_ent_2col', 'a3c_multitask', ('a3c_2col',)),
      ('kl_ent_2col', 'a3c', ('a3c_2col',)),   # Good runs: 1 vs 0; a3c first of a tie.
      ('kl_ent_2col', 'a3c_multitask', ('kl_2col', 'kl_1col', 'kl_ent_1col'))]
  assert made[0].verdict == 'agrees' and made[0].difference == pytest.approx(0.6)
  assert len(missing) == 6 and all(m.verdict == 'not run' for m in missing)
  assert missing[0].left == ('kl_2col',) and missing[0].not_run == ('kl_2col',
                                                                      'a3c_2col')
  assert missing[0].unscored == ()
  result = analysis.analyse_level_set(runs, 'two_rooms')
  text = claims.claims_markdown(runs, [result], num_replicates=200)
  assert 'Not run on two_rooms: a3c_2col, kl_1col, kl_ent_1col, kl_2col;' in text
  lines = [l for l in text.splitlines() if l.startswith('- *')]
  assert len(lines) == 9 and sum(l.startswith('- *not run*: ') for l in lines) == 6
  assert ('- *not run*: 2col learns faster than 1col (AUC). AUC of pi_i: kl_ent_2col '
          'vs kl_ent_1col not compared (not run on this level set: kl_ent_1col).'
          ) in lines
  assert lines[0].startswith('- *agrees*: Distral (2col) >= the A3C baselines in AUC. '
                             'AUC of pi_i: kl_ent_2col 0.810 +- 0.010 vs a3c_multitask '
                             '0.210 +- 0.010;')
  assert lines[0].endswith('Not run on this level set, so not in its group: a3c_2col.')
  assert 'nan' not in text


def test_a_claim_whose_algorithms_ran_without_episodes_of_the_policy_says_so():
  # kl_2col ran but has no pi_0 episodes yet; no 2col algorithm has pi_0 scores.
  runs = subset_runs(('a3c_multitask', 'kl_2col'), distilled=False)
  comparisons, _ = claims.level_set_comparisons(runs, 'two_rooms', num_replicates=50)
  distilled = comparisons[-1]
  assert isinstance(distilled, claims.Missing) and distilled.panel == 'distilled'
  assert distilled.unscored == ('kl_2col',)
  assert distilled.not_run == ('kl_ent_2col', 'kl_1col', 'kl_ent_1col')
  assert claims.sentence(distilled) == (
      '- *no episodes yet*: pi_0 of the 2col algorithms is the best distilled policy '
      '(AUC). AUC of pi_0: kl_2col / kl_ent_2col vs kl_1col / kl_ent_1col / '
      'a3c_multitask not compared (not run on this level set: kl_ent_2col, kl_1col, '
      'kl_ent_1col; no pi_0 episodes yet: kl_2col).')


def test_transfer_auc_difference_is_paired_by_seed():
  from distral_tf.experiments import transfer_runs  # pylint: disable=g-import-not-at-top
  text = transfer_runs.paired_difference({0: 1.0, 1: 0.5, 2: 0.7},
                                         {0: 0.2, 1: 0.4, 2: 0.1, 3: 9.0})
  # Seed 3 has no prior run; differences 0.8, 0.1, 0.6.
  assert 'paired by seed: +0.500 +- 0.361 over 3 seeds (+0.800, +0.100, +0.600)' in text
  low, high = (float(v) for v in text.split('[')[1].rstrip('].').split(', '))
  assert 0.1 <= low < 0.5 < high <= 0.8
  assert 'no seed has both runs' in transfer_runs.paired_difference({}, {0: 1.0})


def test_the_pretraining_line_gives_each_seeds_final_returns_or_a_dash(tmp_path):
  from distral_tf.experiments import transfer_runs  # pylint: disable=g-import-not-at-top
  writer = results.EpisodeWriter(str(tmp_path / 'seed0'), 'kl_ent_2col', 0)
  for steps in range(100, 1001, 100):
    writer.write('task0', steps, 0.9, 5)
    writer.write('task0', steps, 0.4, 5, policy='distilled')
  writer.close()
  # Seed 1 has not started: no directory.
  assert transfer_runs.pretraining_line(str(tmp_path), [0, 1]) == (
      'Pretraining, final return per seed (0, 1; mean over its tasks): task policies '
      '0.900, -; pi_0 0.400, -.')
