"""Sweeps, transfer runs and the reproduction, scheduled for real around a fake trainer.

The fake trainer (``FAKE_TRAINER`` below, passed as ``--launch_command``) takes
the trainer's flags, records each start and end time and its arguments, writes
``episodes.csv`` and a finished ``summary.json``, and fails on request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from distral_tf import results
from distral_tf.experiments import analysis
from distral_tf.experiments import presets
from distral_tf.experiments import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_TRAINER = r'''
import json, os, sys, time
from distral_tf import results

args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
logdir, seed = args['logdir'], int(args['seed'])
os.makedirs(logdir, exist_ok=True)
with open(os.path.join(logdir, 'attempts.txt'), 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\n')
prior = args.get('prior_logdir')
if prior and not os.path.exists(os.path.join(prior, 'summary.json')):
  print('prior run not finished', file=sys.stderr)
  sys.exit(4)
state = os.environ['FAKE_STATE']
with open(state, 'a') as f:
  f.write(f'start {time.time()}\n')
try:
  time.sleep(float(os.environ.get('FAKE_SLEEP', '0')))
except KeyboardInterrupt:  # Like the trainer: save, then stop.
  open(os.path.join(logdir, 'interrupted.txt'), 'a').write('saved\n')
  sys.exit(130)
if str(seed) == os.environ.get('FAKE_FAIL_SEED'):
  print(f'simulated crash of seed {seed}', file=sys.stderr)
  sys.exit(3)
budget = int(args.get('env_steps_per_task', 1000))
tasks = args['tasks'].split(',') if 'tasks' in args else ['0', '1']
lr = float(args.get('learning_rate', 1e-3))
writer = results.EpisodeWriter(logdir, args['algorithm'], seed)
for steps in range(budget // 10, budget + 1, budget // 10):
  for t in tasks:
    writer.write(f'task{t}', steps, lr * 1000 * steps / budget + (5 if prior else 0), 5)
    if args['algorithm'].startswith('kl'):
      writer.write(f'task{t}', steps, 0.5, 5, policy='distilled')
writer.close()
results.write_json(os.path.join(logdir, 'config.json'), args)
results.write_json(os.path.join(logdir, 'summary.json'), dict(
    finished=True, wall_time_s=2.0, total_env_steps=budget * len(tasks)))
with open(state, 'a') as f:
  f.write(f'end {time.time()}\n')
'''


def make_env(tmp_path, **extra):
  script = tmp_path / 'fake_trainer.py'
  script.write_text(FAKE_TRAINER)
  env = dict(os.environ, PYTHONPATH=REPO, FAKE_STATE=str(tmp_path / 'state.txt'))
  env.update({k: str(v) for k, v in extra.items()})
  return env, f'--launch_command={sys.executable} {script}'


def run_module(module, args, env, timeout=120):
  return subprocess.run([sys.executable, '-m', f'distral_tf.experiments.{module}',
                         *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def attempts(logdir):
  path = os.path.join(logdir, 'attempts.txt')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def max_overlap(state_file):
  events = []
  with open(state_file) as f:
    for line in f:
      kind, t = line.split()
      events.append((float(t), 1 if kind == 'start' else -1))
  level = peak = 0
  for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
    level += delta
    peak = max(peak, level)
  return peak


def test_sweep_runs_the_grid_in_parallel_then_skips_finished_runs(tmp_path):
  env, launch = make_env(tmp_path, FAKE_SLEEP=1.0)
  sweep = tmp_path / 'sweep'
  args = ['--level_set=mazes', '--algorithms=a3c,kl_ent_2col', f'--sweep_dir={sweep}',
          '--entropy_costs=0.001,0.01', '--learning_rates=0.0003', '--seeds=1',
          '--parallel=2', '--env_steps_per_task=500', launch, '--',
          '--workers_per_task=3']
  proc = run_module('sweep', args, env)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  logdirs = [schedule.sweep_logdir(str(sweep), 'mazes', a, e, 3e-4, s)
             for a in ('a3c', 'kl_ent_2col') for e in (1e-3, 1e-2) for s in (0,)]
  assert logdirs[0].endswith(os.path.join('mazes', 'a3c', 'ent0.001_lr0.0003', 'seed0'))
  for logdir in logdirs:
    assert schedule.is_finished(logdir)
    (argv,) = attempts(logdir)
    assert f'--logdir={logdir}' in argv and '--workers_per_task=3' in argv
    assert '--env_steps_per_task=500' in argv and '--learning_rate=0.0003' in argv
  assert '--entropy_cost=0.01' in attempts(logdirs[1])[0]
  assert max_overlap(tmp_path / 'state.txt') == 2
  assert '4/4 done, 0 running, 0 failed' in proc.stdout

  proc = run_module('sweep', args, env)
  assert proc.returncode == 0
  assert all(len(attempts(d)) == 1 for d in logdirs)
  assert '4 already finished, 0 finished now, 0 failed' in proc.stdout


def test_failed_run_does_not_stop_the_others_and_is_reported(tmp_path):
  env, launch = make_env(tmp_path, FAKE_FAIL_SEED=1)
  sweep = tmp_path / 'sweep'
  args = ['--level_set=two_rooms', '--algorithms=kl_2col', f'--sweep_dir={sweep}',
          '--entropy_costs=0.03', '--learning_rates=0.001', '--seeds=3', launch]
  proc = run_module('sweep', args, env)
  assert proc.returncode == 1
  good = [schedule.sweep_logdir(str(sweep), 'two_rooms', 'kl_2col', 0.03, 1e-3, s)
          for s in (0, 2)]
  bad = schedule.sweep_logdir(str(sweep), 'two_rooms', 'kl_2col', 0.03, 1e-3, 1)
  assert all(schedule.is_finished(d) for d in good)
  assert not schedule.is_finished(bad)
  failure = open(os.path.join(bad, schedule.FAILURE_FILE)).read()
  assert 'exit status 3' in failure and 'simulated crash of seed 1' in failure
  assert 'simulated crash of seed 1' in proc.stdout
  assert '2/3 done, 0 running, 1 failed' in proc.stdout

  env.pop('FAKE_FAIL_SEED')
  proc = run_module('sweep', args, env)
  assert proc.returncode == 0, proc.stdout
  assert schedule.is_finished(bad) and len(attempts(bad)) == 2
  assert not os.path.exists(os.path.join(bad, schedule.FAILURE_FILE))
  assert all(len(attempts(d)) == 1 for d in good)


def test_interrupted_run_is_run_again_and_finished_run_skipped(tmp_path):
  env, launch = make_env(tmp_path)
  sweep = tmp_path / 'sweep'
  interrupted = schedule.sweep_logdir(str(sweep), 'mazes', 'a3c', 0.01, 1e-3, 0)
  finished = schedule.sweep_logdir(str(sweep), 'mazes', 'a3c', 0.01, 1e-3, 1)
  for logdir in (interrupted, finished):
    writer = results.EpisodeWriter(logdir, 'a3c', 0)
    writer.write('task0', 100, 1.0, 5)
    writer.close()
  results.write_json(os.path.join(interrupted, results.SUMMARY_FILE),
                     dict(finished=False))
  results.write_json(os.path.join(finished, results.SUMMARY_FILE), dict(finished=True))
  proc = run_module('sweep', ['--level_set=mazes', '--algorithms=a3c',
                              f'--sweep_dir={sweep}', '--entropy_costs=0.01',
                              '--learning_rates=0.001', '--seeds=2', launch], env)
  assert proc.returncode == 0, proc.stderr
  assert len(attempts(interrupted)) == 1 and schedule.is_finished(interrupted)
  assert attempts(finished) == []


def test_ctrl_c_interrupts_each_run_once_and_a_rerun_resumes_it(tmp_path):
  env, launch = make_env(tmp_path, FAKE_SLEEP=60)
  sweep = tmp_path / 'sweep'
  args = ['--level_set=mazes', '--algorithms=a3c', f'--sweep_dir={sweep}',
          '--entropy_costs=0.01', '--learning_rates=0.001', '--seeds=1', launch]
  logdir = schedule.sweep_logdir(str(sweep), 'mazes', 'a3c', 0.01, 1e-3, 0)
  # SIGINT as from a terminal, even when the tests run in a background job.
  proc = subprocess.Popen([sys.executable, '-m', 'distral_tf.experiments.sweep', *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline = time.time() + 60
  while not os.path.exists(tmp_path / 'state.txt') and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 130
  assert 'interrupted: stopping 1 running command(s)' in out
  assert open(os.path.join(logdir, 'interrupted.txt')).read() == 'saved\n'
  assert not schedule.is_finished(logdir)
  env['FAKE_SLEEP'] = '0'
  assert run_module('sweep', args, env).returncode == 0
  assert len(attempts(logdir)) == 2 and schedule.is_finished(logdir)


def test_dry_run_and_usage_errors(tmp_path):
  env, launch = make_env(tmp_path)
  base = ['--level_set=mazes', f'--sweep_dir={tmp_path}', launch]
  proc = run_module('sweep', base + ['--algorithms=a3c', '--seeds=1', '--dry_run'], env)
  assert proc.returncode == 0
  assert len(proc.stdout.splitlines()) == 9  # 3 entropy costs x 3 learning rates.
  assert '--entropy_cost=0.003 --learning_rate=0.0001' in proc.stdout
  # Seed first: a sweep stopped part way has every algorithm and setting.
  proc = run_module('sweep', base + ['--algorithms=a3c,kl_2col', '--seeds=2',
                                     '--entropy_costs=0.01', '--learning_rates=0.001',
                                     '--dry_run'], env)
  order = [(a.split('--algorithm=')[1].split()[0], a.split('--seed=')[1].split()[0])
           for a in proc.stdout.splitlines()]
  assert order == [('a3c', '0'), ('kl_2col', '0'), ('a3c', '1'), ('kl_2col', '1')]
  for bad in (['--algorithms=a3c,nope'], ['--entropy_costs=0.1,-1'],
              ['--algorithms=a3c', '--', '--seed=3'], ['--algorithms=a3c', '--', 'x']):
    proc = run_module('sweep', base + bad, env)
    assert proc.returncode == 2, bad
    assert proc.stderr.startswith('error: ') and len(proc.stderr.splitlines()) == 1
  assert not os.path.exists(tmp_path / 'mazes')


def test_transfer_pretrains_then_learns_the_held_out_task_from_pi0(tmp_path):
  env, launch = make_env(tmp_path, FAKE_SLEEP=0.3)
  root = tmp_path / 'transfer'
  args = ['--level_set=minigrid', '--algorithm=kl_ent_2col', '--holdout_task=1',
          '--num_tasks=3', f'--transfer_dir={root}', '--seeds=2', '--parallel=3',
          '--env_steps_per_task=800', '--holdout_env_steps=400', launch]
  proc = run_module('transfer', args, env)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  run_dir = root / 'minigrid' / 'kl_ent_2col' / 'holdout1'
  for seed in (0, 1):
    (pretrain,) = attempts(run_dir / 'pretrain' / f'seed{seed}')
    assert '--tasks=0,2' in pretrain and '--env_steps_per_task=800' in pretrain
    assert '--num_tasks=3' in pretrain
    (prior,) = attempts(run_dir / 'prior' / f'seed{seed}')
    assert '--tasks=1' in prior and '--env_steps_per_task=400' in prior
    assert f'--prior_logdir={run_dir / "pretrain" / f"seed{seed}"}' in prior
    (scratch,) = attempts(run_dir / 'scratch' / f'seed{seed}')
    assert not any(a.startswith('--prior_logdir') for a in scratch)
  stem = run_dir / 'transfer_minigrid_task1'
  for ext, magic in (('png', b'\x89PNG'), ('pdf', b'%PDF')):
    assert (tmp_path / f'{stem}.{ext}').read_bytes()[:4] == magic
  table = (tmp_path / f'{stem}.md').read_text()
  assert '| prior | 2 | 5.55 +- 0 |' in table and '| scratch | 2 | 0.55 +- 0 |' in table
  assert ('Pretraining, final return per seed (0, 1; mean over its tasks): task policies '
          '0.550, 0.550; pi_0 0.500, 0.500.') in table
  proc = run_module('transfer', args, env)
  assert proc.returncode == 0
  assert '6 already finished' in proc.stdout


def test_transfer_rejects_an_algorithm_without_pi0(tmp_path):
  env, launch = make_env(tmp_path)
  proc = run_module('transfer', ['--level_set=minigrid', '--algorithm=a3c',
                                 '--holdout_task=0', '--num_tasks=2',
                                 f'--transfer_dir={tmp_path}', launch], env)
  assert proc.returncode == 2 and 'no distilled pi_0' in proc.stderr


def test_reproduce_smoke_preset_writes_figures_table_and_doc(tmp_path):
  env, launch = make_env(tmp_path)
  doc = tmp_path / 'docs' / 'reproduction.md'
  doc.parent.mkdir()
  doc.write_text('# R\n\n## Results\n\n<!-- results:begin -->\nTBD\n'
                 '<!-- results:end -->\n\nafter\n')
  out = tmp_path / 'docs' / 'reproduction'
  proc = run_module('reproduce', ['--preset=smoke', f'--sweep_dir={tmp_path / "runs"}',
                                   f'--transfer_dir={tmp_path / "transfer"}',
                                   f'--out={out}', f'--results_doc={doc}', '--parallel=2',
                                   launch], env, timeout=300)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  # 14 sweep runs, 3 of the miniworld subset, 3 transfer runs.
  assert '20/20 done' in proc.stdout
  for name in ('figure4_two_rooms.png', 'figure4_minigrid.pdf', 'figure4_miniworld.png',
               'figure4_table.csv', 'figure4_table.md', 'figure4_claims.md',
               'results.md', 'transfer_two_rooms_task1.png',
               'transfer_two_rooms_task1.md'):
    assert (out / name).exists(), name
  assert sorted(os.listdir(tmp_path / 'runs' / 'miniworld')) == [
      'a3c', 'a3c_multitask', 'kl_ent_2col']
  text = doc.read_text()
  assert "The paper's claims on these runs:" in text and '**minigrid**' in text
  assert '](reproduction/transfer_two_rooms_task1.png)' in text
  assert 'AUC difference prior - scratch, paired by seed' in text
  assert 'TBD' not in text and text.endswith('<!-- results:end -->\n\nafter\n')
  assert '](reproduction/figure4_minigrid.png)' in text
  assert '| minigrid | pi_0 | kl_ent_2col |' in text
  assert '20 of 20 runs finished' in text
  assert ('recorded in `reproduce_time.json` for two_rooms, minigrid, miniworld ran' in text and
          '(1 invocation(s), --parallel=2)' in text)
  log = json.loads((out / 'runs' / 'reproduce_time.json').read_text())
  assert [i["runs_completed"] for i in log["invocations"]] == [20], proc.stdout
  assert log['invocations'][0]['level_sets'] == ['two_rooms', 'minigrid', 'miniworld']
  assert 'run records in ' in proc.stdout and ': 0 restored, 0 recorded' in proc.stdout
  assert 'distral_tf.experiments.sweep --level_set=two_rooms' in text
  # The miniworld subset: its table rows, its claims that cannot be made, its note.
  assert ('`miniworld` runs only a3c, a3c_multitask, kl_ent_2col; not run there: '
          'a3c_2col, kl_1col, kl_ent_1col, kl_2col.') in text
  assert '--algorithms=a3c,a3c_multitask,kl_ent_2col' in text
  rows = [l.split(' | ')[1:3] for l in text.splitlines() if l.startswith('| miniworld |')]
  assert rows == [['pi_i', 'a3c'], ['pi_i', 'a3c_multitask'], ['pi_i', 'kl_ent_2col'],
                  ['pi_0', 'a3c_multitask'], ['pi_0', 'kl_ent_2col']]
  claims_md = (out / 'figure4_claims.md').read_text()
  miniworld = claims_md.split('**miniworld**')[1].split('**')[0]
  assert 'Not run on miniworld: a3c_2col, kl_1col, kl_ent_1col, kl_2col' in miniworld
  lines = [l for l in miniworld.splitlines() if l.startswith('- *')]
  assert len(lines) == 9
  assert sum(l.startswith('- *not run*: ') for l in lines) == 6, miniworld
  assert ('- *not run*: KL+ent >= KL at the end of training. final return of pi_i: '
          'kl_ent_2col vs kl_2col not compared (not run on this level set: kl_2col).'
          ) in lines
  # Each run was recorded as it finished (the sync before running recorded none).
  records = out / 'runs'
  recorded = sorted(os.path.relpath(d, records) for d, _, files in os.walk(records)
                    if 'episodes.csv.xz' in files)
  assert len(recorded) == 20 and recorded[0].startswith('reproduction' + os.sep), recorded
  assert sum(r.startswith('transfer' + os.sep) for r in recorded) == 3, recorded
  # A fresh checkout: no runs, only the records. Nothing runs again; same results.
  table = (out / 'figure4_table.md').read_text()
  starts = (tmp_path / 'state.txt').read_text().count('start')
  shutil.rmtree(tmp_path / 'runs')
  shutil.rmtree(tmp_path / 'transfer')
  (out / 'figure4_table.md').unlink()
  proc = run_module('reproduce', ['--preset=smoke', f'--sweep_dir={tmp_path / "runs"}',
                                   f'--transfer_dir={tmp_path / "transfer"}',
                                   f'--out={out}', f'--results_doc={doc}', '--parallel=2',
                                   launch], env, timeout=300)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  assert ': 20 restored, 0 recorded' in proc.stdout and '20/20 done' in proc.stdout
  assert (tmp_path / 'state.txt').read_text().count('start') == starts
  assert (out / 'figure4_table.md').read_text() == table
  log = json.loads((records / 'reproduce_time.json').read_text())['invocations']
  assert [i['runs_completed'] for i in log] == [20, 0]
  assert '(2 invocation(s), --parallel=2)' in doc.read_text()


def test_reproduce_runs_a_preset_in_pieces_with_max_runs(tmp_path):
  env, launch = make_env(tmp_path)
  sweep, out = tmp_path / 'runs', tmp_path / 'out'
  transfer = tmp_path / 'transfer'
  common = ['--preset=dmlab_smoke', f'--sweep_dir={sweep}', f'--out={out}',
            f'--transfer_dir={transfer}', launch]
  first = run_module('reproduce', [*common, '--max_runs=1'], env)
  assert first.returncode == 0, first.stderr + first.stdout
  # The preset has no transfer runs: its --transfer_dir is neither made nor held.
  assert not transfer.exists()
  assert '--max_runs=1: running 1 of the 2 unfinished runs' in first.stdout
  a3c = schedule.sweep_logdir(str(sweep), 'mazes', 'a3c', 0.01, 5e-4, 0)
  kl = schedule.sweep_logdir(str(sweep), 'mazes', 'kl_ent_2col', 0.01, 5e-4, 0)
  assert schedule.is_finished(a3c) and not os.path.exists(kl)
  # The plan's trainer flags reach the runs.
  assert '--lr_anneal_frames=12000000' in attempts(a3c)[0]
  # Drawn from the run there is, into the preset's own part.
  assert (out / 'dmlab_smoke' / 'figure4_mazes.png').exists()
  second = run_module('reproduce', common, env)
  assert second.returncode == 0, second.stderr + second.stdout
  assert schedule.is_finished(kl) and len(attempts(a3c)) == 1
  log = json.loads((out / 'runs' / 'reproduce_time.json').read_text())['invocations']
  assert [i['runs_completed'] for i in log] == [1, 1]
  assert {i['preset'] for i in log} == {'dmlab_smoke'}


def test_reproduce_checks_its_results_doc_before_running_anything(tmp_path):
  env, launch = make_env(tmp_path)
  unmarked = tmp_path / 'plain.md'
  unmarked.write_text('# no block here\n')
  missing = tmp_path / 'missing.md'
  for doc, message in ((missing, f'--results_doc {missing}: No such file or directory'),
                       (unmarked, f'--results_doc {unmarked} lacks the lines '
                                  '<!-- results:begin -->')):
    proc = run_module('reproduce', ['--preset=smoke', f'--sweep_dir={tmp_path / "runs"}',
                                     f'--transfer_dir={tmp_path / "transfer"}',
                                     f'--out={tmp_path / "out"}', f'--results_doc={doc}',
                                     launch], env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'runs').exists()  # Nothing ran.


def test_reproduce_refuses_a_records_dir_it_cannot_write_before_running(tmp_path):
  env, launch = make_env(tmp_path)
  a_file = tmp_path / 'records.txt'
  a_file.write_text('not a directory\n')
  proc = run_module('reproduce', ['--preset=smoke', f'--sweep_dir={tmp_path / "runs"}',
                                   f'--transfer_dir={tmp_path / "transfer"}',
                                   f'--out={tmp_path / "out"}', f'--records_dir={a_file}',
                                   launch], env)
  assert proc.returncode == 2, proc.stderr
  assert f'--records_dir={a_file} is a file, not a directory' in proc.stderr
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'runs').exists()


def test_an_interrupted_reproduction_records_its_wall_time(tmp_path):
  env, launch = make_env(tmp_path, FAKE_SLEEP=60)
  runs = tmp_path / 'runs'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'distral_tf.experiments.reproduce', '--preset=smoke',
       f'--sweep_dir={runs}', f'--transfer_dir={tmp_path / "transfer"}',
       f'--out={tmp_path / "out"}', launch], cwd=REPO, env=env, stdout=subprocess.PIPE,
      text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline = time.time() + 60
  while not os.path.exists(tmp_path / 'state.txt') and time.time() < deadline:
    time.sleep(0.1)
  time.sleep(1.0)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 130, out
  log = json.loads((tmp_path / 'out' / 'runs' / 'reproduce_time.json').read_text())
  log = log['invocations']
  assert len(log) == 1 and log[0]['runs_completed'] == 0, log
  assert 1.0 <= log[0]['seconds'] < 60


def test_reproduce_runs_a_part_of_its_preset_with_level_sets(tmp_path):
  proc = run_module('reproduce', ['--print_commands', '--level_sets=minigrid',
                                   f'--sweep_dir={tmp_path}'], os.environ.copy())
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert len(lines) == 3 and '--level_set=minigrid' in lines[0]
  assert 'transfer --level_set=minigrid' in lines[1]
  assert lines[2].endswith('--level_sets=minigrid')
  proc = run_module('reproduce', ['--print_commands', '--level_sets=mazes'],
                    os.environ.copy())
  assert proc.returncode == 2
  assert proc.stderr.strip() == ('error: --level_sets: mazes not in the preset; it has '
                                 'two_rooms, minigrid, miniworld')
  # miniworld: a subset of the algorithms, no transfer.
  proc = run_module('reproduce', ['--print_commands', '--level_sets=miniworld',
                                   f'--sweep_dir={tmp_path}'], os.environ.copy())
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert len(lines) == 2 and lines[1].endswith('--level_sets=miniworld')
  assert '--level_set=miniworld --algorithms=a3c,a3c_multitask,kl_ent_2col ' in lines[0]
  assert '--seeds=2' in lines[0]


def test_reproduce_draws_every_level_set_with_runs_whatever_level_sets_runs(tmp_path):
  """A preset run a level set at a time: each invocation draws all that has run."""
  env, launch = make_env(tmp_path)
  doc = tmp_path / 'doc.md'
  doc.write_text('<!-- results:adaptive_smoke:begin -->\n'
                 '<!-- results:adaptive_smoke:end -->\n')
  out = tmp_path / 'out'
  common = ['--preset=adaptive_smoke', f'--sweep_dir={tmp_path / "runs"}',
            f'--out={out}', f'--results_doc={doc}', launch]
  proc = run_module('reproduce', ['--level_sets=two_rooms', *common], env, timeout=300)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  text = doc.read_text()
  # minigrid has no run yet: not drawn, and the block says it is a part.
  assert 'figure4_two_rooms.png' in text and 'figure4_minigrid.png' not in text
  assert '--preset=adaptive_smoke --level_sets=two_rooms`: 3 of 3 runs' in text
  proc = run_module('reproduce', ['--level_sets=minigrid', *common], env, timeout=300)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  assert '3/3 done' in proc.stdout  # only minigrid's runs ran
  text = doc.read_text()
  assert 'figure4_two_rooms.png' in text and 'figure4_minigrid.png' in text
  assert '--preset=adaptive_smoke`: 6 of 6 runs' in text
  assert '| two_rooms | pi_i | a3c |' in text and '| minigrid | pi_i | a3c |' in text
  assert 'sweep --level_set=two_rooms' in text and 'sweep --level_set=minigrid' in text
  log = json.loads((out / 'runs' / 'reproduce_time.json').read_text())['invocations']
  assert [i['level_sets'] for i in log] == [['two_rooms'], ['minigrid']]


def test_a_sweep_plan_runs_its_subset_of_the_algorithms():
  from distral_tf.experiments import reproduce  # pylint: disable=g-import-not-at-top
  subset = ('a3c', 'a3c_multitask', 'kl_ent_2col')
  plan = presets.SweepPlan('miniworld', (0.01,), (5e-4, 1e-3), seeds=2,
                             env_steps_per_task=100, num_tasks=4, workers_per_task=8,
                             algorithms=subset)
  assert plan.num_runs == 3 * 2 * 2 and plan.total_frames == 12 * 100 * 4
  assert plan.not_run == ('a3c_2col', 'kl_1col', 'kl_ent_1col', 'kl_2col')
  specs = reproduce.plan_specs(plan, 'S')
  assert len(specs) == plan.num_runs
  assert sorted({s.logdir.split(os.sep)[2] for s in specs}) == list(subset)
  assert specs[0].logdir == schedule.sweep_logdir('S', 'miniworld', 'a3c', 0.01, 5e-4, 0)
  assert all(f'--algorithm={s.logdir.split(os.sep)[2]}' in s.args for s in specs)
  assert '--algorithms=a3c,a3c_multitask,kl_ent_2col ' in reproduce.sweep_command(
      plan, 'S', 1)
  full = presets.SweepPlan('two_rooms', (0.01,), (1e-3,), seeds=1,
                             env_steps_per_task=100, num_tasks=2, workers_per_task=1)
  assert full.algorithms == analysis.ALGORITHM_ORDER and full.not_run == ()
  assert full.num_runs == 7 and len(reproduce.plan_specs(full, 'S')) == 7
  for bad in (('a3c', 'nope'), (), ('a3c', 'a3c')):
    with pytest.raises(ValueError):
      presets.SweepPlan('two_rooms', (0.01,), (1e-3,), seeds=1, env_steps_per_task=1,
                          num_tasks=2, workers_per_task=1, algorithms=bad)


def test_the_wall_time_sentence_counts_the_invocations_of_the_level_sets_drawn(tmp_path):
  from distral_tf.experiments import reproduce  # pylint: disable=g-import-not-at-top
  records = str(tmp_path)
  # An invocation logged before level sets were: it counts for every level set.
  results.write_json(os.path.join(records, reproduce.TIME_LOG), dict(
      invocations=[dict(seconds=360.0, runs_completed=1, parallel=1)]))
  reproduce.record_invocation(records, 3600.0, 4, 2, ['minigrid'])
  reproduce.record_invocation(records, 1800.0, 9, 2, ['two_rooms', 'minigrid'])
  reproduce.record_invocation(records, 7200.0, 6, 2, ['miniworld'])
  assert reproduce.wall_time_sentence(records, ['minigrid']) == (
      ' Its invocations recorded in `reproduce_time.json` for minigrid ran 1.60 hours of '
      'wall time in all (3 invocation(s), --parallel=1,2).')
  assert 'for two_rooms ran 0.60 hours' in reproduce.wall_time_sentence(records, ['two_rooms'])
  assert '3.60 hours of wall time in all (4 invocation(s)' in reproduce.wall_time_sentence(
      records, ['two_rooms', 'miniworld', 'minigrid'])
  assert reproduce.wall_time_sentence(str(tmp_path / 'none'), ['minigrid']) == ''


def test_an_invocation_whose_runs_were_run_again_leaves_the_wall_time(tmp_path):
  from distral_tf.experiments import reproduce  # pylint: disable=g-import-not-at-top
  records = str(tmp_path)
  for run in ('r/two_rooms/a/seed0', 'r/two_rooms/a/seed1', 'r/two_rooms/b/seed0'):
    os.makedirs(os.path.join(records, run))
  # First sitting: both seeds of a; second: b (its record removed since); third:
  # seed 0 of a again, after its record was removed and rewritten.
  reproduce.record_invocation(records, 3600.0, 2, 2, ['two_rooms'],
                              runs=['r/two_rooms/a/seed0', 'r/two_rooms/a/seed1'])
  reproduce.record_invocation(records, 1800.0, 1, 2, ['two_rooms'], runs=['r/gone/seed0'])
  reproduce.record_invocation(records, 900.0, 1, 2, ['two_rooms'],
                              runs=['r/two_rooms/a/seed0'])
  reproduce.record_invocation(records, 360.0, 0, 1, ['two_rooms'])  # None finished.
  # The first still stands for a's seed 1; the second for nothing.
  assert reproduce.wall_time_sentence(records, ['two_rooms']) == (
      ' Its invocations recorded in `reproduce_time.json` for two_rooms ran 1.35 hours of '
      'wall time in all (3 invocation(s), --parallel=1,2; 1 earlier invocation(s) left '
      'out, their runs run again or unrecorded).')
  reproduce.record_invocation(records, 60.0, 1, 2, ['two_rooms'],
                              runs=['r/two_rooms/a/seed1'])
  assert '0.37 hours of wall time in all (3 invocation(s), --parallel=1,2; 2 earlier' in (
      reproduce.wall_time_sentence(records, ['two_rooms']))


def _trainer_defaults(plan):
  """(algorithm, the trainer's configuration at its defaults on the plan's level set)."""
  from distral_tf import cli  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import config  # pylint: disable=g-import-not-at-top
  fv = cli.FLAGS
  try:
    for algorithm in plan.algorithms:
      fv.unparse_flags()
      fv(['distral_tf', *analysis.ENTRIES[algorithm].launch_args,
          f'--level_set={plan.level_set}'])
      yield algorithm, config.from_flags(fv)[0]
  finally:
    fv.unparse_flags()


def test_dmlab_plan_takes_the_mazes_defaults_and_the_long_schedule():
  from distral_tf.agents import config_limits  # pylint: disable=g-import-not-at-top
  (plan,) = presets.PRESETS['dmlab_cpu']
  assert (plan.level_set, plan.num_tasks, plan.seeds, plan.num_runs) == ('mazes', 4, 2, 12)
  assert plan.algorithms == ('a3c', 'a3c_multitask', 'a3c_2col', 'kl_2col', 'kl_ent_2col',
                             'kl_ent_2col_adaptive')
  # The 8 environments of a 2-core machine (what the level set's default gives there).
  assert plan.workers_per_task == config_limits.machine_workers_per_task(
      4, cores=2, memory_bytes=24e9)
  for algorithm, deep in _trainer_defaults(plan):
    assert plan.entropy_costs == (deep.entropy_cost,), algorithm
    assert plan.learning_rates == (deep.learning_rate,), algorithm
  # Every run anneals its rate over 12M frames per task, past its budget.
  from distral_tf.experiments import reproduce  # pylint: disable=g-import-not-at-top
  (spec, *_) = reproduce.plan_specs(plan, 'S')
  assert '--lr_anneal_frames=12000000' in spec.args
  assert presets.DMLAB_LR_ANNEAL_FRAMES > plan.env_steps_per_task


def test_cpu_miniworld_plan_takes_every_algorithms_defaults():
  (plan,) = [p for p in presets.PRESETS['cpu'] if p.level_set == 'miniworld']
  assert plan.algorithms == ('a3c', 'a3c_multitask', 'kl_ent_2col')
  assert (plan.seeds, plan.num_tasks, plan.num_runs) == (2, 4, 6)
  for algorithm, deep in _trainer_defaults(plan):
    assert plan.entropy_costs == (deep.entropy_cost,), algorithm
    assert plan.learning_rates == (deep.learning_rate,), algorithm
    assert plan.workers_per_task == deep.workers_per_task


def test_transfer_runs_of_a_chosen_setting_have_their_own_directory():
  from distral_tf.experiments import transfer_runs  # pylint: disable=g-import-not-at-top
  plan = transfer_runs.TransferPlan('two_rooms', 'kl_ent_2col', holdout=3, num_tasks=4,
                                    seeds=1, entropy_cost=0.05)
  specs = transfer_runs.transfer_specs(plan, 'T')
  assert [s.logdir for s in specs] == [
      os.path.join('T', 'two_rooms', 'kl_ent_2col', 'holdout3', 'ent0.05_lrdefault',
                   kind, 'seed0') for kind in transfer_runs.KINDS]
  assert '--entropy_cost=0.05' in specs[0].args
  assert not any(a.startswith('--learning_rate') for a in specs[0].args)
  assert '--tasks=0,1,2' in specs[0].args and '--tasks=3' in specs[1].args


def _children(pid: int) -> list[int]:
  """The processes ``pid`` started that are still its children (Linux)."""
  try:
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      return [int(p) for p in f.read().split()]
  except OSError:
    return []


def _gone(pid: int) -> bool:
  """Whether ``pid`` has exited (a zombie waiting for its new parent counts)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(') ', 1)[1].startswith(('Z', 'X'))
  except OSError:
    return True


def _start_two_runs(tmp_path, env, args) -> tuple[subprocess.Popen, list[int]]:
  """A sweep of two runs at once, and its runs' pids once both have started."""
  proc = subprocess.Popen([sys.executable, '-m', 'distral_tf.experiments.sweep', *args],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  state = tmp_path / 'state.txt'
  deadline = time.time() + 60
  runs = []
  while time.time() < deadline:
    runs = _children(proc.pid)
    if len(runs) == 2 and state.exists() and state.read_text().count('start') == 2:
      return proc, runs
    time.sleep(0.1)
  proc.kill()
  raise AssertionError('the sweep did not start its two runs')


def _two_run_sweep(tmp_path, sleep: float) -> tuple[dict, list[str]]:
  env, launch = make_env(tmp_path, FAKE_SLEEP=sleep)
  return env, ['--level_set=mazes', '--algorithms=a3c', f'--sweep_dir={tmp_path / "sweep"}',
               '--entropy_costs=0.01', '--learning_rates=0.001,0.003', '--seeds=1',
               '--parallel=2', launch]


def test_runs_die_with_a_killed_sweep(tmp_path):
  env, args = _two_run_sweep(tmp_path, sleep=120)
  proc, runs = _start_two_runs(tmp_path, env, args)
  try:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while not all(_gone(p) for p in runs) and time.time() < deadline:
      time.sleep(0.1)
    assert all(_gone(p) for p in runs), 'runs outlived their killed sweep'
  finally:
    for pid in runs:
      if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
  # Run again, the sweep finishes both runs.
  env['FAKE_SLEEP'] = '0'
  again = run_module('sweep', args, env)
  assert again.returncode == 0, again.stderr
  assert '2 finished now' in again.stdout


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
  env, args = _two_run_sweep(tmp_path, sleep=120)
  proc, runs = _start_two_runs(tmp_path, env, args)
  try:
    second = run_module('sweep', args, env)
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    sweep = tmp_path / 'sweep'
    assert line.startswith(f'error: --sweep_dir={sweep} is in use by pid {proc.pid} on ')
    assert '\n' not in line and 'distral_tf.experiments.sweep' in line
    assert sorted(_children(proc.pid)) == sorted(runs)  # Its runs go on.
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in runs:
      if not _gone(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_second_reproduction_on_the_same_directories_is_refused(tmp_path):
  env, launch = make_env(tmp_path, FAKE_SLEEP=60)
  args = ['--preset=smoke', f'--sweep_dir={tmp_path / "runs"}',
          f'--transfer_dir={tmp_path / "transfer"}', f'--out={tmp_path / "out"}', launch]
  first = subprocess.Popen([sys.executable, '-m', 'distral_tf.experiments.reproduce',
                            *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.time() + 60
    while not (tmp_path / 'state.txt').exists() and time.time() < deadline:
      assert first.poll() is None
      time.sleep(0.1)
    second = run_module('reproduce', args, env)
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith(
        f'error: --out={tmp_path / "out"} is in use by pid {first.pid} on ')
    assert len(second.stderr.strip().splitlines()) == 1
    # Another --out, but the same runs: refused too.
    other = [a for a in args if not a.startswith('--out=')] + [
        f'--out={tmp_path / "out2"}']
    third = run_module('reproduce', other, env)
    assert third.returncode == 2
    assert f'--sweep_dir={tmp_path / "runs"} is in use by pid {first.pid}' in third.stderr
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
