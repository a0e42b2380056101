"""End to end tests of the deep trainer (distral_tf/agents/train.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distral_tf import cli
from distral_tf import errors
from distral_tf import results
from distral_tf.agents import checkpointing
from distral_tf.agents import learner as learner_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small and fast: 2 tasks, 2 workers each, short unrolls.
PIXEL_FLAGS = ['--level_set=minigrid', '--num_tasks=2', '--workers_per_task=2',
               '--unroll_length=5', '--env_processes=false', '--log_interval_secs=1']


def _run(tmp_path, *flags):
  return cli.run_from_args([f'--logdir={tmp_path}', *flags])


@pytest.mark.parametrize('algorithm', cli.DEEP_ALGORITHMS)
def test_every_algorithm_trains_on_the_pixel_set(tmp_path, algorithm):
  # Evaluations may step as many frames as training (--eval_share=1): in so short
  # a run the default share (5%) would not finish the first one.
  summary = _run(tmp_path, f'--algorithm={algorithm}', '--env_steps_per_task=300',
                 '--eval_share=1', *PIXEL_FLAGS)
  assert summary['finished']
  assert summary['total_env_steps'] >= 2 * 300
  # One update per unroll of every environment: 2 tasks x 2 workers x 5 steps.
  assert summary['updates'] >= 2 * 300 // (2 * 2 * 5)
  config = json.loads((tmp_path / results.CONFIG_FILE).read_text())
  assert config['algorithm'] == algorithm and config['level_set'] == 'minigrid'
  with open(tmp_path / results.EPISODES_FILE) as f:
    assert f.readline().strip() == ','.join(results.EPISODE_FIELDS)
  rows = results.read_episodes(str(tmp_path))
  distilled = results.select(rows, policy='distilled')
  if algorithm.startswith('kl'):
    # pi_0 is evaluated on every task, from the start of training on.
    assert {r['task'] for r in distilled} == {'empty_6x6', 'random_goal_7x7'}
    assert min(r['env_steps'] for r in distilled) == 0
  else:
    assert not distilled
  assert (tmp_path / 'learning_curves.png').stat().st_size > 0
  assert os.listdir(tmp_path / 'tensorboard')
  assert os.path.exists(tmp_path / checkpointing.CHECKPOINT_DIR / 'checkpoint')


def test_environments_in_their_own_processes(tmp_path):
  flags = [f for f in PIXEL_FLAGS if not f.startswith('--env_processes')]
  summary = _run(tmp_path, '--algorithm=kl_ent_2col', '--env_steps_per_task=200',
                 '--env_processes=true', *flags)
  assert summary['finished'] and summary['total_env_steps'] >= 400


def test_trains_on_the_3d_level_set_in_env_processes(tmp_path):
  summary = _run(tmp_path, '--algorithm=kl_ent_2col', '--level_set=miniworld',
                 '--num_tasks=2', '--workers_per_task=2', '--unroll_length=5',
                 '--env_steps_per_task=400', '--log_interval_secs=1')
  assert summary['finished']
  assert summary['total_env_steps'] >= 2 * 400
  # Action repeat 4, one actor thread stepping both workers of both tasks: frames
  # come in steps of 2 tasks x 2 workers x 4 frames.
  assert summary['total_env_steps'] % (2 * 4) == 0
  assert summary['total_env_steps'] % (2 * 2 * 4) == 0
  assert summary['updates'] >= 2 * 400 // (2 * 2 * 5 * 4)


def test_resume_continues_counters_schedule_and_results(tmp_path):
  flags = ['--algorithm=kl_ent_1col', '--level_set=two_rooms', '--num_tasks=2',
           '--workers_per_task=2', '--env_processes=false', '--unroll_length=10',
           '--env_steps_per_task=30000', '--log_interval_secs=1', '--lr_schedule=linear',
           '--learning_rate=1e-3']
  first = _run(tmp_path, *flags, '--max_seconds=4')
  assert not first['finished']
  stopped_at = first['total_env_steps']
  assert 0 < stopped_at < 2 * 30000
  rows_before = results.read_episodes(str(tmp_path))

  second = _run(tmp_path, *flags)
  assert second['finished']
  assert second['resumed_from_env_steps'] == stopped_at
  # The counter went on from the checkpoint instead of starting again at 0:
  # the second run did only the frames that were left.
  assert second['total_env_steps'] < 2 * 30000 + 2 * 2 * 10
  rows = results.read_episodes(str(tmp_path))
  assert rows[:len(rows_before)] == rows_before
  for task in ('goal_r1_c10', 'goal_r5_c9'):
    steps = [r['env_steps'] for r in results.select(rows, task=task, policy='task')]
    assert steps == sorted(steps)
  # The learning-rate schedule continued: annealed to 0 at the end of the budget.
  state = _restore_learning_rate(tmp_path)
  assert state < 0.05 * 1e-3


def test_lr_anneal_frames_gives_a_short_run_a_long_runs_schedule(tmp_path):
  # Annealed linearly to 0 over 4x the budget: the run ends at 1 - 1/4 of the
  # starting rate (a step or two past the budget at most).
  summary = _run(tmp_path, '--algorithm=a3c', '--level_set=two_rooms', '--num_tasks=2',
                 '--workers_per_task=2', '--env_processes=false', '--unroll_length=10',
                 '--env_steps_per_task=4000', '--lr_anneal_frames=16000',
                 '--lr_schedule=linear', '--learning_rate=1e-3')
  assert summary['finished']
  fraction = summary['total_env_steps'] / (2 * 16000)
  assert _restore_learning_rate(tmp_path) == pytest.approx(1e-3 * (1 - fraction), rel=1e-3)
  assert 0.7e-3 < _restore_learning_rate(tmp_path) < 0.76e-3


def _restore_learning_rate(logdir) -> float:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = tf.train.latest_checkpoint(str(logdir / checkpointing.CHECKPOINT_DIR))
  reader = tf.train.load_checkpoint(path)
  key = [k for k in reader.get_variable_to_shape_map()
         if k.startswith('learning_rate/')][0]
  return float(reader.get_tensor(key))


def test_resume_refuses_another_configuration(tmp_path):
  flags = ['--level_set=two_rooms', '--num_tasks=2', '--workers_per_task=1',
           '--env_processes=false', '--env_steps_per_task=200']
  _run(tmp_path, '--algorithm=kl_2col', *flags)
  with pytest.raises(errors.UsageError, match='--algorithm=kl_2col'):
    _run(tmp_path, '--algorithm=a3c', *flags)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  flags = ['--algorithm=a3c', '--level_set=two_rooms', '--num_tasks=1',
           '--workers_per_task=1', '--env_processes=false', '--env_steps_per_task=200']
  _run(tmp_path, *flags)
  ckpt_dir = tmp_path / checkpointing.CHECKPOINT_DIR
  for name in os.listdir(ckpt_dir):
    if name.endswith('.index'):
      (ckpt_dir / name).write_bytes(b'not a checkpoint')
  with pytest.raises(errors.UsageError, match='corrupt or from an incompatible'):
    _run(tmp_path, *flags, '--env_steps_per_task=400')


def test_bad_deep_flags_are_usage_errors(tmp_path):
  base = ['--level_set=two_rooms', '--algorithm=a3c', '--env_processes=false']
  with pytest.raises(errors.UsageError, match='--workers_per_task must be > 0'):
    _run(tmp_path, *base, '--workers_per_task=0')
  with pytest.raises(errors.UsageError, match='--tasks'):
    _run(tmp_path, *base, '--tasks=0,9')
  with pytest.raises(errors.UsageError, match='--prior_logdir'):
    _run(tmp_path, *base, f'--prior_logdir={tmp_path}')


@pytest.mark.parametrize('end', ['termination', 'truncation'])
def test_unroll_layout_matches_the_environment(tmp_path, end):
  """The actor's unrolls line rewards and resets up as the learner expects."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import actor as actor_lib  # pylint: disable=g-import-not-at-top
  from distral_tf.envs import batch as batch_lib  # pylint: disable=g-import-not-at-top
  import queue  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import dm_env  # pylint: disable=g-import-not-at-top
  end = getattr(dm_env, end)

  class Counter(dm_env.Environment):
    """Observation = step index; reward = action; episodes of 3 steps."""

    def __init__(self):
      self._t = 0

    def reset(self):
      self._t = 0
      return dm_env.restart(np.array([0.0], np.float32))

    def step(self, action):
      self._t += 1
      obs = np.array([float(self._t)], np.float32)
      if self._t == 3:
        return end(float(action), obs)
      return dm_env.transition(float(action), obs)

    def observation_spec(self):
      return dm_env.specs.Array((1,), np.float32)

    def action_spec(self):
      return dm_env.specs.DiscreteArray(2)

  class FixedNetwork:
    def initial_state(self, batch):
      return tf.zeros([batch, 1])

  def act(observations, first, state):
    del first
    n = tf.shape(observations)[:1]
    logits = tf.zeros(tf.concat([n, [2]], 0))
    # Value 10 x the observation (the step index), to see which one was valued.
    return tf.ones(n, tf.int32), logits, 10.0 * observations[:, 0], state + 1

  progress = actor_lib.Progress(['t'], budget=7)
  writer = results.EpisodeWriter(str(tmp_path), 'test', 0)
  recorder = actor_lib.EpisodeRecorder(writer, progress)
  q = queue.Queue()
  envs = batch_lib.ProcessEnvBatch([batch_lib.LocalEnv(lambda s: Counter(), 0)])
  actor = actor_lib.Actor(envs, [0], 1, FixedNetwork(), act, progress, recorder, 7, 1, q)
  actor.run(threading.Event())
  assert actor.error is None
  task_sizes, batch, _ = q.get_nowait()
  assert task_sizes == (1,) and isinstance(batch, learner_lib.Unroll)
  np.testing.assert_array_equal(batch.observations.numpy()[:, 0, 0],
                                [0, 1, 2, 0, 1, 2, 0, 1])
  np.testing.assert_array_equal(batch.first.numpy()[:, 0],
                                [1, 0, 0, 1, 0, 0, 1, 0])
  np.testing.assert_array_equal(batch.rewards.numpy()[:, 0], [1] * 7)
  np.testing.assert_array_equal(batch.behaviour_logits.numpy().shape, (7, 1, 2))
  if end is dm_env.termination:
    np.testing.assert_array_equal(batch.discounts.numpy()[:, 0], [1, 1, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(batch.final_values.numpy()[:, 0], [0] * 7)
  else:
    # Cut episodes keep discount 1 and bootstrap from their final observation
    # (3, valued 30), not from the next episode's first (0).
    np.testing.assert_array_equal(batch.discounts.numpy()[:, 0], [1] * 7)
    np.testing.assert_array_equal(batch.final_values.numpy()[:, 0],
                                  [0, 0, 30, 0, 0, 30, 0])
  writer.close()
  rows = results.read_episodes(str(tmp_path))
  assert [(r['episode_return'], r['episode_length'], r['env_steps']) for r in rows] == [
      (3.0, 3, 3), (3.0, 3, 6)]


# SIGTERM during training of an algorithm with pi_0, whose evaluator is then in
# the middle of an evaluation of 10^6 episodes per task.
@pytest.mark.parametrize('signal_name,status,algorithm', [
    ('SIGINT', 130, ['--algorithm=a3c']),
    ('SIGTERM', 143, ['--algorithm=kl_ent_2col', '--eval_episodes=1000000'])])
def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path, signal_name, status, algorithm):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(
      [sys.executable, '-m', 'distral_tf.launch', *algorithm, '--num_tasks=1',
       '--workers_per_task=1', '--env_processes=false', '--env_steps_per_task=10000000',
       '--log_interval_secs=0.5', '--checkpoint_secs=100000', f'--logdir={tmp_path}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      # As from a terminal, even when the tests run in a background job (which
      # ignores SIGINT, and its children would inherit that).
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    deadline = time.time() + 240
    # Wait for training to be under way (the first progress line).
    while time.time() < deadline:
      line = proc.stdout.readline()
      if line.startswith('frames '):
        break
    proc.send_signal(getattr(signal, signal_name))
    out, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == status, err[-2000:]
  assert 'Run the same command to resume' in err
  summary = json.loads((tmp_path / results.SUMMARY_FILE).read_text())
  assert not summary['finished'] and summary['total_env_steps'] > 0
  assert os.path.exists(tmp_path / checkpointing.CHECKPOINT_DIR / 'checkpoint')


@pytest.mark.parametrize('moment', ['loading', 'environments'])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path, moment):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(
      [sys.executable, '-m', 'distral_tf.launch', *PIXEL_FLAGS, '--algorithm=a3c',
       '--env_processes=true', f'--logdir={tmp_path}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    if moment == 'loading':  # TensorFlow's libraries are being loaded.
      deadline = time.time() + 120
      while time.time() < deadline:
        with open(f'/proc/{proc.pid}/maps') as maps:
          if 'tensorflow' in maps.read():
            break
        time.sleep(0.01)
    else:  # The environment processes are starting.
      deadline = time.time() + 120
      while time.time() < deadline:
        if proc.stdout.readline().startswith('Starting '):
          break
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert time.time() - sent < 30
  assert proc.returncode == 130, err[-2000:]
  assert 'Traceback' not in err and 'Traceback' not in out, err[-2000:]
  assert len([line for line in err.splitlines() if line.strip()]) == 1, err
  assert 'Run the same command' in err


def test_tf_threads_sets_the_ops_threads_and_at_least_two_inter_op_threads():
  code = ('import tensorflow as tf; from distral_tf.agents import builders; '
          'builders.set_tf_threads(1); c = tf.config.threading; '
          'print(c.get_intra_op_parallelism_threads(), c.get_inter_op_parallelism_threads())')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['1', '2']


def test_divergence_stops_with_one_line_and_no_checkpoint(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'distral_tf.launch', '--algorithm=a3c', '--num_tasks=1',
       '--workers_per_task=2', '--learning_rate=1e30', '--env_steps_per_task=20000',
       '--log_interval_secs=0.5', f'--logdir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: training diverged'), lines[-5:]
  assert 'learning_rate' in lines[0]
  assert not os.path.exists(tmp_path / checkpointing.CHECKPOINT_DIR / 'checkpoint')


def test_progress_line_never_passes_the_budget():
  from distral_tf.agents import actor as actor_lib  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import run_loop  # pylint: disable=g-import-not-at-top
  progress = actor_lib.Progress(['a', 'b'], budget=4000, frames=[5120, 4100])
  line = run_loop.progress_line(progress, fps=100.0)
  assert line.startswith('frames 8,000/8,000 (100.0%)'), line
  assert 'ETA 0m00s' in line and 'return pi_i none finished yet' in line
  progress.add_return('a', 'task', -0.5)
  assert 'return pi_i -0.500' in run_loop.progress_line(progress, fps=100.0)


def test_the_time_left_comes_from_the_steady_rate_not_the_last_interval():
  from distral_tf.agents import actor as actor_lib  # pylint: disable=g-import-not-at-top
  from distral_tf.agents import run_loop  # pylint: disable=g-import-not-at-top
  progress = actor_lib.Progress(['a', 'b'], budget=60_000, frames=[1_000, 1_000])
  # 118,000 frames left: 20 s at the steady 5,900 frames/s, whatever the interval's.
  line = run_loop.progress_line(progress, fps=100.0, eta_fps=5_900.0)
  assert 'fps 100 ' in line and 'ETA 0m20s' in line, line
  assert 'ETA ?' in run_loop.progress_line(progress, fps=100.0, eta_fps=0.0)


def test_a_prior_run_keeps_pi0_of_the_pretrained_run_and_no_value_l2(tmp_path):
  """Transfer: pi_0 comes from the pretrain run, stays fixed, and V_0 pulls on nothing."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  common = ['--level_set=two_rooms', '--algorithm=kl_ent_2col', '--num_tasks=2',
            '--env_steps_per_task=2000', '--workers_per_task=2', '--log_interval_secs=1']
  pre, prior = tmp_path / 'pre', tmp_path / 'prior'
  cli.run_from_args([f'--logdir={pre}', '--tasks=0', *common])
  summary = cli.run_from_args([f'--logdir={prior}', '--tasks=1', f'--prior_logdir={pre}',
                               *common])
  assert summary['finished']

  def pi0_weights(logdir):
    path = tf.train.latest_checkpoint(str(logdir / checkpointing.CHECKPOINT_DIR))
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if name.startswith('network/pi0/') and 'OPTIMIZER' not in name}

  before, after = pi0_weights(pre), pi0_weights(prior)
  assert before and before.keys() == after.keys()
  for name in before:
    np.testing.assert_array_equal(before[name], after[name], err_msg=name)
  values = []
  for path in (prior / 'tensorboard').iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      values += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value
                 if v.tag.startswith('value_l2/')]
  assert values and all(v == 0.0 for v in values)
