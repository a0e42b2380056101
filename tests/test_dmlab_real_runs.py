"""Whole runs on the real ``deepmind_lab``: each level set to its end, Ctrl-C and
resume, an environment process killed mid-run, JUMP on lasertag.

Skipped where DeepMind Lab is not installed (docs/dmlab.md, "DeepMind Lab").
Runs are small (two tasks, one or two workers, a few thousand frames, narrow
columns) but go through the whole trainer as a user's command does.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

deepmind_lab = pytest.importorskip('deepmind_lab')

# pylint: disable=g-import-not-at-top,wrong-import-position
from distral_tf import results
from distral_tf.agents import checkpointing
from distral_tf.dmlab import env as env_lib
from distral_tf.dmlab import games

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A DeepMind Lab maze episode: 60 seconds of 60 frames.
MAZE_EPISODE_FRAMES = 3600


def _launch_args(tmp_path, *args):
  return [sys.executable, '-m', 'distral_tf.launch', '--hidden_size=32',
          f'--logdir={tmp_path / "run"}',
          f'--dmlab_level_cache_dir={tmp_path / "cache"}', *args]


def _rows(logdir):
  with open(os.path.join(logdir, results.EPISODES_FILE), encoding='utf-8') as f:
    return list(csv.DictReader(f))


# Two tasks of each set; on lasertag the two of the shortest episodes (generated
# maps, 14,400 frames; the fixed maps' episodes are several times longer).
TWO_TASKS = {'mazes': (0, 1), 'navigation': (0, 1), 'lasertag': (4, 5)}


@pytest.mark.parametrize('level_set', games.LEVEL_SET_NAMES)
def test_each_level_set_trains_to_its_end_and_evaluates_pi0(tmp_path, level_set):
  budget = 1600
  tasks = TWO_TASKS[level_set]
  out = subprocess.run(
      _launch_args(tmp_path, f'--level_set={level_set}', '--algorithm=kl_ent_2col',
                   f'--tasks={",".join(map(str, tasks))}', '--workers_per_task=1',
                   f'--env_steps_per_task={budget}', '--log_interval_secs=2',
                   # The last evaluation of pi_0 plays one whole episode per task,
                   # here many times the run's frames.
                   '--eval_share=100'),
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  logdir = tmp_path / 'run'
  summary = json.loads((logdir / results.SUMMARY_FILE).read_text())
  assert summary['finished'] and summary['level_set'] == level_set
  assert summary['total_env_steps'] >= 2 * budget
  names = [games.LEVELS[level_set][t][0] for t in tasks]
  distilled = [r for r in _rows(logdir) if r['policy'] == 'distilled']
  # pi_0's last evaluation: one whole episode per task, at the budget.
  assert sorted(r['task'] for r in distilled
                if int(r['env_steps']) >= budget) == sorted(names)
  assert all(int(r['episode_length']) > 0 for r in distilled)
  assert (logdir / 'learning_curves.png').exists()
  assert summary['cpu_ms_per_frame'] == {} or summary['cpu_ms_per_frame']['total'] > 0


def test_ctrl_c_and_resume_lose_and_repeat_no_episode(tmp_path):
  budget = 5 * MAZE_EPISODE_FRAMES  # Per task: 5 episodes over its 2 workers.
  args = _launch_args(tmp_path, '--level_set=mazes', '--algorithm=a3c', '--num_tasks=1',
                      '--workers_per_task=2', f'--env_steps_per_task={budget}',
                      '--checkpoint_secs=1', '--log_interval_secs=1')
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  logdir = tmp_path / 'run'
  try:
    deadline = time.time() + 300
    # Stop once an episode is recorded and a checkpoint holds trained frames.
    while time.time() < deadline:
      time.sleep(0.5)
      rows_file = logdir / checkpointing.CHECKPOINT_DIR / 'episode_rows.json'
      if (logdir / results.EPISODES_FILE).exists() and len(_rows(logdir)) >= 1 and (
          rows_file.exists()):
        break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, err[-3000:]
  before = _rows(logdir)
  assert 1 <= len(before) < 5
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Resuming from' in out.stdout
  rows = _rows(logdir)
  # Every episode of every worker once: 2 workers x at least 2.5 episodes each.
  steps = [int(r['env_steps']) for r in rows]
  assert steps == sorted(steps)  # No row of a replayed stretch, nothing out of order.
  assert all(int(r['episode_length']) == MAZE_EPISODE_FRAMES // 4 for r in rows)
  assert len(rows) == pytest.approx(budget / MAZE_EPISODE_FRAMES, abs=2)
  assert rows[:len(before)] == before  # Ctrl-C saved a checkpoint covering them all.


def test_an_environment_process_killed_mid_run_is_restarted(tmp_path):
  args = _launch_args(tmp_path, '--level_set=lasertag', '--algorithm=a3c', '--num_tasks=1',
                      '--workers_per_task=2', '--env_steps_per_task=40000',
                      '--log_interval_secs=1')
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    lines = 0
    while lines < 2:  # Training under way: two progress lines.
      line = proc.stdout.readline()
      assert line, 'the run ended before training began'
      lines += line.startswith('frames ')
    children = subprocess.run(['pgrep', '-P', str(proc.pid), '-f', 'process.child_main'],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-3000:]
  assert 'restarting it' in err
  summary = json.loads((tmp_path / 'run' / results.SUMMARY_FILE).read_text())
  assert summary['finished'] and summary['interrupted_episodes'] >= 1


def test_jump_lifts_the_player_on_lasertag():
  """The lasertag action set's last action jumps: the player's height rises."""
  action_set = games.ACTION_SETS['lasertag']
  jump = env_lib.num_actions(action_set) - 1
  assert env_lib.action_names(action_set)[jump] == 'jump'
  turn = env_lib.action_names(action_set).index('look_left')  # Stays on the spot.
  code = f"""
import numpy as np, deepmind_lab
from distral_tf.dmlab import env as env_lib
lab = deepmind_lab.Lab('lt_chasm', ['DEBUG.POS.TRANS'], config={{'width': '96', 'height': '72'}})
lab.reset(seed=1)
heights = []
for action in [{turn}] * 3 + [{jump}] + [{turn}] * 16:
  lab.step(env_lib.lab_action(action, {action_set!r}), num_steps=4)
  heights.append(float(lab.observations()['DEBUG.POS.TRANS'][2]))
print(heights)
"""
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  heights = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
  ground = heights[2]
  assert np.all(heights[:3] == ground)
  assert heights[3:].max() > ground + 20  # Up in the air after JUMP ...
  assert abs(heights[-1] - ground) < 1  # ... and back on the ground.


def test_reproduce_dmlab_smoke_preset_draws_the_mazes_panel(tmp_path):
  """``reproduce --preset=dmlab_smoke``: the mazes plan's pipeline, real runs,
  in two pieces (``--max_runs``), drawn into its own part of the results doc."""
  doc = tmp_path / 'reproduction.md'
  doc.write_text('# R\n<!-- results:dmlab_smoke:begin -->\nTBD\n'
                 '<!-- results:dmlab_smoke:end -->\n')
  # pi_0's last evaluation plays a whole episode per task (--eval_share=100):
  # the distilled panel has rows.
  launch = (f'--launch_command={sys.executable} -m distral_tf.launch --hidden_size=32 '
            f'--eval_share=100 --dmlab_level_cache_dir={tmp_path / "cache"}')
  args = [sys.executable, '-m', 'distral_tf.experiments.reproduce', '--preset=dmlab_smoke',
          f'--sweep_dir={tmp_path / "runs"}', f'--out={tmp_path / "out"}',
          f'--results_doc={doc}', launch]
  for piece in (['--max_runs=1'], []):
    out = subprocess.run(args + piece, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  for algorithm in ('a3c', 'kl_ent_2col'):
    run = tmp_path / 'runs' / 'mazes' / algorithm / 'ent0.01_lr0.0005' / 'seed0'
    summary = json.loads((run / results.SUMMARY_FILE).read_text())
    assert summary['finished'] and summary['total_env_steps'] >= 2 * 4000
    assert json.loads((run / 'config.json').read_text())['lr_anneal_frames'] == 12_000_000
  part = tmp_path / 'out' / 'dmlab_smoke'
  assert (part / 'figure4_mazes.png').exists()
  text = doc.read_text()
  assert '2 of 2 runs finished' in text and '| mazes | pi_0 | kl_ent_2col |' in text
  assert 'random policy' in text  # Good runs: twice the random policy's return.
