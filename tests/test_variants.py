"""Variants of a deep algorithm (``kl_ent_2col_adaptive``) through the experiments.

A variant is an algorithm run with a trainer switch; sweeps launch it with the
switch into its own directories, analysis finds it from ``config.json``, and the
claims and the reproduction presets put it beside the paper's algorithms.
"""

from __future__ import annotations

import os

import pytest

from distral_tf import errors
from distral_tf import results
from distral_tf.experiments import analysis
from distral_tf.experiments import claims
from distral_tf.experiments import presets
from distral_tf.experiments import schedule

from test_claims import fake_run
from test_sweep import attempts, make_env, run_module

ADAPTIVE = 'kl_ent_2col_adaptive'


def test_an_entry_is_its_algorithm_and_its_switches():
  assert analysis.ENTRY_ORDER.index(ADAPTIVE) == analysis.ENTRY_ORDER.index(
      'kl_ent_2col') + 1
  assert analysis.launch_args(ADAPTIVE) == ('--algorithm=kl_ent_2col', '--adaptive_costs')
  assert analysis.launch_args('a3c') == ('--algorithm=a3c',)
  assert analysis.entry_name('kl_ent_2col', {'adaptive_costs': True}) == ADAPTIVE
  assert analysis.entry_name('kl_ent_2col', {'adaptive_costs': False}) == 'kl_ent_2col'
  assert analysis.entry_name('kl_ent_2col', {}) == 'kl_ent_2col'
  # A switch no entry has on that algorithm: no entry, named by its flags.
  assert analysis.entry_name('kl_1col', {'adaptive_costs': True}) is None
  assert analysis.run_name('kl_1col', {'adaptive_costs': True}) == (
      'kl_1col --adaptive_costs')
  assert analysis.distilled_source(ADAPTIVE) == analysis.distilled_source('kl_ent_2col')
  analysis.check_entries(['a3c', ADAPTIVE], 'algorithms')
  with pytest.raises(errors.UsageError, match='unknown kl_ent_2col_fast'):
    analysis.check_entries(['kl_ent_2col_fast'], 'algorithms')


def test_a_sweep_launches_a_variant_with_its_switch_into_its_own_directory(tmp_path):
  env, launch = make_env(tmp_path)
  sweep = tmp_path / 'sweep'
  args = ['--level_set=two_rooms', f'--algorithms=kl_ent_2col,{ADAPTIVE}',
          f'--sweep_dir={sweep}', '--entropy_costs=0.05', '--learning_rates=0.003',
          '--seeds=1', '--env_steps_per_task=100', launch]
  proc = run_module('sweep', args, env)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  fixed, adaptive = (schedule.sweep_logdir(str(sweep), 'two_rooms', a, 0.05, 3e-3, 0)
                     for a in ('kl_ent_2col', ADAPTIVE))
  (argv,) = attempts(adaptive)
  assert '--algorithm=kl_ent_2col' in argv and '--adaptive_costs' in argv
  (argv,) = attempts(fixed)
  assert '--adaptive_costs' not in argv
  # A switch that makes an entry cannot be passed to the trainer by hand.
  proc = run_module('sweep', args[:-1] + [launch, '--', '--adaptive_costs'], env)
  assert proc.returncode == 2
  assert 'are those of kl_ent_2col_adaptive' in proc.stderr


def write_run(logdir, algorithm, config, final):
  os.makedirs(logdir)
  writer = results.EpisodeWriter(logdir, algorithm, 0)
  for steps in range(10, 101, 10):
    writer.write('task0', steps, final * steps / 100, 5)
  writer.close()
  results.write_json(os.path.join(logdir, 'config.json'), dict(
      config, algorithm=algorithm, level_set='two_rooms', seed=0, entropy_cost=0.05,
      learning_rate=3e-3, env_steps_per_task=100))
  results.write_json(os.path.join(logdir, 'summary.json'), dict(finished=True))


def test_runs_are_found_as_the_entry_their_config_says(tmp_path):
  root = tmp_path / 'sweep'
  write_run(str(root / 'a'), 'kl_ent_2col', {'adaptive_costs': True}, 1.0)
  write_run(str(root / 'b'), 'kl_ent_2col', {}, 0.5)
  write_run(str(root / 'c'), 'kl_1col', {'adaptive_costs': True}, 0.5)
  runs, notes = analysis.discover_runs(str(root))
  assert sorted(r.algorithm for r in runs) == ['kl_ent_2col', ADAPTIVE]
  (note,) = notes
  assert 'kl_1col --adaptive_costs is none of the entries' in note


def test_a_variant_that_ran_joins_the_distral_claims_on_lines_of_its_own():
  values = {'a3c': 0.1, 'a3c_multitask': 0.2, 'a3c_2col': 0.3, 'kl_ent_2col': 0.0,
            ADAPTIVE: 0.9}
  runs = [fake_run(a, seed, {'goal_r2_c10': v + 0.01 * seed})
          for a, v in values.items() for seed in range(3)]
  comparisons, _ = claims.level_set_comparisons(runs, 'two_rooms', num_replicates=200)
  made = [c for c in comparisons if isinstance(c, claims.Comparison)]
  auc = [c for c in made if c.claim == claims.DISTRAL_AUC]
  assert [(c.left, c.right) for c in auc] == [('kl_ent_2col', 'a3c_2col'),
                                              (ADAPTIVE, 'a3c_2col')]
  assert [c.verdict for c in auc] == ['disagrees', 'agrees']
  good = [c for c in made if c.claim == claims.DISTRAL_GOOD]
  assert [c.left for c in good] == ['kl_ent_2col', ADAPTIVE]
  # Not run: no line of its own, the paper's nine claims only.
  plain = [r for r in runs if r.algorithm != ADAPTIVE]
  comparisons, _ = claims.level_set_comparisons(plain, 'two_rooms', num_replicates=50)
  assert len(comparisons) == len(claims.CLAIM_SPECS)


def test_a_variant_that_ran_is_compared_with_its_own_algorithm_at_the_end():
  # pi_i: the variant ends 0.5 higher than its algorithm (spread 0.01): agrees.
  # pi_0: 0.3 lower: disagrees.
  runs = []
  for seed in range(3):
    runs.append(fake_run('kl_ent_2col', seed, {'goal_r2_c10': 0.4 + 0.01 * seed},
                         distilled={'goal_r2_c10': 0.6 + 0.01 * seed}))
    runs.append(fake_run(ADAPTIVE, seed, {'goal_r2_c10': 0.9 + 0.01 * seed},
                         distilled={'goal_r2_c10': 0.3 + 0.01 * seed}))
  comparisons, _ = claims.level_set_comparisons(runs, 'two_rooms', num_replicates=200)
  keeps = [c for c in comparisons if c.claim == claims.VARIANT_KEEPS]
  assert [(c.panel, c.metric, c.left, c.right) for c in keeps] == [
      ('task', claims.FINAL, ADAPTIVE, 'kl_ent_2col'),
      ('distilled', claims.FINAL, ADAPTIVE, 'kl_ent_2col')]
  assert [c.verdict for c in keeps] == ['agrees', 'disagrees']
  assert keeps[0].difference == pytest.approx(0.5)
  assert keeps[1].difference == pytest.approx(-0.3)
  assert keeps[0].ci[0] == pytest.approx(0.5 - 0.02, abs=0.02)
  result = analysis.analyse_level_set(runs, 'two_rooms')
  text = claims.claims_markdown(runs, [result], num_replicates=200)
  assert ('- *disagrees*: A variant ends at least where its algorithm does. final return '
          'of pi_0: kl_ent_2col_adaptive 0.310 +- 0.010 vs kl_ent_2col 0.610 +- 0.010; '
          'difference -0.300') in text
  # Its algorithm not run: the line says so.
  alone = [r for r in runs if r.algorithm == ADAPTIVE]
  comparisons, _ = claims.level_set_comparisons(alone, 'two_rooms', num_replicates=50)
  keeps = [c for c in comparisons if c.claim == claims.VARIANT_KEEPS]
  assert [c.verdict for c in keeps] == ['not run', 'not run']
  assert keeps[0].not_run == ('kl_ent_2col',)


def test_the_adaptive_preset_adds_the_variant_to_the_cpu_sweeps():
  from distral_tf.experiments import reproduce  # pylint: disable=g-import-not-at-top
  cpu = {p.level_set: p for p in presets.PRESETS['cpu']}
  adaptive = presets.PRESETS['adaptive']
  assert [p.level_set for p in adaptive] == ['two_rooms', 'minigrid']
  for plan in adaptive:
    base = cpu[plan.level_set]
    assert plan.algorithms == base.algorithms + (ADAPTIVE,)
    assert (plan.entropy_costs, plan.learning_rates, plan.seeds,
            plan.env_steps_per_task) == (base.entropy_costs, base.learning_rates,
                                         base.seeds, base.env_steps_per_task)
  assert reproduce.figures_dir('docs/reproduction', 'adaptive') == os.path.join(
      'docs/reproduction', 'adaptive')
  assert reproduce.figures_dir('docs/reproduction', 'cpu') == 'docs/reproduction'
  assert reproduce.block_marks('adaptive') == ('<!-- results:adaptive:begin -->',
                                               '<!-- results:adaptive:end -->')
  assert reproduce.block_marks('cpu') == (reproduce.BEGIN_MARK, reproduce.END_MARK)


def test_reproduce_prints_the_adaptive_presets_commands(tmp_path):
  proc = run_module('reproduce', ['--print_commands', '--preset=adaptive',
                                   f'--sweep_dir={tmp_path}', '--out=OUT'],
                    dict(os.environ))
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert len(lines) == 3, lines
  assert all(f'{ADAPTIVE} ' in line for line in lines[:2])
  assert '--sweep_dir=' in lines[2] and '--out=OUT/adaptive' in lines[2]
  assert lines[2].endswith(
      f'--algorithms={",".join(analysis.ALGORITHM_ORDER)},{ADAPTIVE}')
