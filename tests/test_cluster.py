"""Cluster mode with real servers on loopback: placement, faults, resume.

Every test starts its own servers (as a launcher or as a cluster scheduler
would) and stops every process it started, whatever happens.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from distral_tf import results
from distral_tf.agents import checkpointing
from distral_tf.distributed import cluster as cluster_lib
from distral_tf.distributed import steps
from distral_tf.distributed import topology
from distral_tf.distributed import trainer as trainer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNROLL, ENVS = 10, 2  # 10-step unrolls; 2 environments per task in the cluster.
# Each gradient step takes one host's unroll of its environments of every task:
# with 2 worker hosts, 1 environment per task each (two tasks); with 1, both.
TWO_HOST_STEP_FRAMES = 2 * UNROLL * (ENVS // 2)
TIMEOUT = 420


def _env(**extra) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **extra)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _train_args(logdir, cluster: str, algorithm: str, budget: int,
                num_tasks: int = 2) -> list[str]:
  return [sys.executable, '-m', 'distral_tf.launch', f'--cluster={cluster}',
          '--level_set=two_rooms', f'--num_tasks={num_tasks}',
          f'--algorithm={algorithm}', f'--env_steps_per_task={budget}',
          f'--workers_per_task={ENVS}', f'--unroll_length={UNROLL}',
          '--env_processes=false', '--checkpoint_secs=1', '--log_interval_secs=1',
          f'--logdir={logdir}']


class Processes:
  """Every process a test starts; ``stop_all`` kills those still running."""

  def __init__(self):
    self.procs = []

  def start(self, args, env, log_path) -> subprocess.Popen:
    log = open(log_path, 'ab')
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO, start_new_session=True)
    log.close()
    self.procs.append(proc)
    return proc

  def stop_all(self):
    for proc in self.procs:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def processes():
  p = Processes()
  try:
    yield p
  finally:
    p.stop_all()


def _wait_for(condition, what: str, timeout: float = TIMEOUT, poll: float = 0.25,
              alive=None):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = condition()
    if value:
      return value
    if alive is not None and alive.poll() is not None:
      raise AssertionError(f'process exited ({alive.returncode}) before {what}')
    time.sleep(poll)
  raise AssertionError(f'timed out waiting for {what}')


def _json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _steps_done(logdir) -> int:
  data = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE))
  return sum(data['stats']['steps']) if data else 0


def _checkpointed(logdir) -> bool:
  """A checkpoint holding trained frames (not only the one taken at step 0)."""
  rows = _json(os.path.join(logdir, checkpointing.CHECKPOINT_DIR, checkpointing.ROWS_FILE))
  return any(r.get('env_steps', 0) > 0 for r in (rows or {}).values())


def _pid_gone(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  # A zombie is gone for our purposes.
  with open(f'/proc/{pid}/stat') as f:
    return f.read().split(') ')[1].startswith('Z')


def _resumed_steps(text: str) -> int:
  match = re.search(r'Resuming from \S+: (\d+) agent steps', text)
  assert match, text[-3000:]
  return int(match.group(1))


def _assert_consistent_episodes(logdir, budget: int):
  """Episodes within the budget; after a resume, none from beyond the checkpoint."""
  rows = results.read_episodes(logdir)
  assert rows
  assert all(0 <= r['env_steps'] <= budget for r in rows)
  assert all(r['env_steps'] > 0 for r in rows if r['policy'] == 'task')
  for task in {r['task'] for r in rows}:
    steps = [r['env_steps'] for r in rows if r['task'] == task and r['policy'] == 'task']
    assert steps == sorted(steps), steps


def _stats(logdir) -> dict:
  data = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE)) or {}
  return data.get('stats', {})


def _assert_frames_per_host_in_tensorboard(logdir, num_hosts: int,
                                           restarted: tuple[int, ...] = ()) -> None:
  """TensorBoard has every host's frames, up to what ``summary.json`` says.

  They rise, except a ``restarted`` host's: the frames of the unrolls it lost
  are taken back (they are acted again), so its count may fall once.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in glob.glob(os.path.join(logdir, 'tensorboard', 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith('frames_per_host/'):
          values.setdefault(value.tag, []).append(
              float(tf.make_ndarray(value.tensor)))
  assert sorted(values) == [f'frames_per_host/worker_{h}' for h in range(num_hosts)]
  summary = _json(os.path.join(logdir, results.SUMMARY_FILE))
  for h in range(num_hosts):
    v = values[f'frames_per_host/worker_{h}']
    assert 0 < v[-1] <= summary['cluster']['frames_per_host'][h], (h, v)
    falls = sum(b < a for a, b in zip(v, v[1:]))
    assert falls <= (1 if h in restarted else 0), (h, v)


def _log(logdir, name) -> str:
  with open(os.path.join(os.path.dirname(logdir), name)) as f:
    return f.read()


def test_tf_config_cluster_trains_on_ps_and_resumes_after_chief_kill(tmp_path,
                                                                     processes):
  """1 ps + 2 workers from TF_CONFIG; the chief is killed and started again."""
  cluster = topology.local_cluster_def(topology.LocalRequest(1, 2))
  for role in cluster.server_roles():
    processes.start(
        [sys.executable, '-m', 'distral_tf.distributed.server', '--exit_with_parent'],
        _env(TF_CONFIG=topology.tf_config_json(cluster, role)),
        tmp_path / f'{role.job}{role.index}.log')
  logdir, budget = str(tmp_path / 'run'), 600
  args = _train_args(logdir, 'tf_config', 'kl_ent_2col', budget)
  chief_env = _env(TF_CONFIG=topology.tf_config_json(cluster,
                                                     topology.Role('chief', 0)))
  first = processes.start(args, chief_env, tmp_path / 'chief1.log')
  _wait_for(lambda: _checkpointed(logdir) and _steps_done(logdir) >= 4,
            'a checkpoint after 4 steps', alive=first)
  first.kill()
  first.wait(timeout=30)
  servers = processes.procs[:3]
  assert all(s.poll() is None for s in servers), 'servers outlive a chief'

  second = subprocess.run(args, env=chief_env, capture_output=True, text=True,
                          cwd=REPO, timeout=TIMEOUT)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  resumed = _resumed_steps(second.stdout)
  assert 0 < resumed < 2 * budget
  summary = _json(os.path.join(logdir, results.SUMMARY_FILE))
  assert summary['finished']
  # Steps continue from the checkpoint: nothing trained twice, nothing lost.
  assert summary['agent_steps'] == summary['total_env_steps'] == 2 * budget
  assert summary['updates'] == (2 * budget - resumed) // TWO_HOST_STEP_FRAMES
  assert all(s > 0 for s in summary['cluster']['steps'])
  assert sum(summary['cluster']['steps']) == summary['updates']
  # The worker hosts outlived the first chief and acted for the second.
  frames = summary['cluster']['frames_per_host']
  assert all(f > 0 for f in frames) and sum(frames) == 2 * budget - resumed

  info = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE))
  placement = info['placement']
  devices = [d for part in ('network', 'optimizer') for ds in placement[part].values()
             for d in ds] + placement['learning_rate'] + placement['steps_done']
  assert len(placement['network']) >= 3 * 10  # Two task columns and pi_0.
  # The optimiser's slots, built with the learner, are in the layout (one per variable).
  assert len(placement['optimizer']) >= len(placement['network'])
  assert all(d.startswith('/job:ps/replica:0/task:0/') for d in devices), devices
  # One RMSProp for everything: its counter saw every step of both runs.
  assert info['optimizer_iterations'] * TWO_HOST_STEP_FRAMES == 2 * budget

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(os.path.join(logdir, 'checkpoints'))
  shapes = reader.get_variable_to_shape_map()
  network = sorted(tuple(s) for k, s in shapes.items() if k.startswith('network/'))
  slots = sorted(tuple(s) for k, s in shapes.items()
                 if k.startswith('optimizer/_variables/'))
  assert network and slots == network  # One RMSProp slot per variable.
  _assert_consistent_episodes(logdir, budget)


def test_local_cluster_survives_a_killed_worker(tmp_path):
  """local:ps=1,workers=2; worker 1 is killed, restarted and used again."""
  # Enough frames for the run to outlast the restart (a new server process,
  # its environments and network) on a loaded 2-core machine.
  logdir, budget = str(tmp_path / 'run'), 10000
  args = _train_args(logdir, 'local:ps=1,workers=2', 'a3c', budget)
  procs = Processes()
  try:
    chief = procs.start(args, _env(), tmp_path / 'chief.log')
    _wait_for(lambda: _steps_done(logdir) >= 4, '4 steps', alive=chief)
    info = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE))
    victim = [s for s in info['servers'] if s['job'] == 'worker' and s['index'] == 1][0]
    os.kill(victim['pid'], signal.SIGKILL)
    _wait_for(lambda: _stats(logdir).get('worker_restarts') == [0, 1] and
              _stats(logdir)['steps_since_restart'][1] > 0 and
              _stats(logdir)['frames_since_restart'][1] > 0,
              'the restarted worker to take steps and act', alive=chief)
    assert chief.wait(timeout=TIMEOUT) == 0, _log(logdir, 'chief.log')[-3000:]
  finally:
    procs.stop_all()
  summary = _json(os.path.join(logdir, results.SUMMARY_FILE))
  assert summary['finished']
  assert summary['total_env_steps'] == 2 * budget
  assert summary['updates'] == 2 * budget // TWO_HOST_STEP_FRAMES
  # A call cut short by the kill may have applied its steps (up to
  # UNROLLS_PER_CALL) before it was rerun on other unrolls, and the frames of
  # the unrolls it took from the killed host are acted again.
  most = 2 * steps.UNROLLS_PER_CALL * TWO_HOST_STEP_FRAMES
  assert 2 * budget <= summary['agent_steps'] <= 2 * budget + most
  assert summary['cluster']['worker_restarts'] == [0, 1]
  assert summary['cluster']['steps_since_restart'][1] > 0
  assert sum(summary['cluster']['steps']) == summary['updates']
  # Every frame was acted on a worker host; the restarted host acted again.
  stats = summary['cluster']
  assert sum(stats['frames_per_host']) == 2 * budget
  assert stats['frames_per_host'][0] > 0
  assert 0 < stats['frames_since_restart'][1] < stats['frames_per_host'][1]
  _assert_frames_per_host_in_tensorboard(logdir, num_hosts=2, restarted=(1,))
  servers = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE))['servers']
  assert all(_pid_gone(s['pid']) for s in servers)  # The launcher stopped them all.


def test_local_cluster_resumes_after_a_killed_parameter_server(tmp_path):
  """local:ps=2,workers=1: variables split over both ps; one dies; rerun resumes."""
  logdir, budget = str(tmp_path / 'run'), 1000
  # The paper's column width: its LSTM weights are large enough to be split.
  args = _train_args(logdir, 'local:ps=2,workers=1', 'a3c', budget, num_tasks=1) + [
      '--hidden_size=256']
  procs = Processes()
  try:
    chief = procs.start(args, _env(), tmp_path / 'chief1.log')
    _wait_for(lambda: _checkpointed(logdir) and _steps_done(logdir) >= 3,
              'a checkpoint after 3 steps', alive=chief)
    info = _json(os.path.join(logdir, trainer_lib.CLUSTER_FILE))
    lstm = [ds for name, ds in info['placement']['network'].items()
            if name.endswith('_w_h')]
    assert lstm and all(sorted(ds) == ['/job:ps/replica:0/task:0/device:CPU:0',
                                       '/job:ps/replica:0/task:1/device:CPU:0']
                        for ds in lstm)
    ps1 = [s for s in info['servers'] if s['job'] == 'ps' and s['index'] == 1][0]
    os.kill(ps1['pid'], signal.SIGKILL)
    assert chief.wait(timeout=120) == cluster_lib.CLUSTER_FAILURE_EXIT_CODE
  finally:
    procs.stop_all()
  messages = [l for l in _log(logdir, 'chief1.log').splitlines()
              if l.startswith('error:')]
  assert len(messages) == 1, messages
  assert messages[0].startswith('error: ps 1 (127.0.0.1:')
  assert 'resumes from the last checkpoint' in messages[0]
  assert all(_pid_gone(s['pid']) for s in info['servers'])

  second = subprocess.run(args, env=_env(), capture_output=True, text=True, cwd=REPO,
                          timeout=TIMEOUT)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert _resumed_steps(second.stdout) > 0
  summary = _json(os.path.join(logdir, results.SUMMARY_FILE))
  assert summary['finished']
  assert summary['agent_steps'] == summary['total_env_steps'] == budget
  _assert_consistent_episodes(logdir, budget)


def test_chief_exits_soon_after_its_table_when_a_worker_host_is_gone(tmp_path,
                                                                    processes):
  """A worker server killed for good (TF_CONFIG: nobody restarts it): the run
  finishes on the other worker and the chief exits within seconds of its table."""
  cluster = topology.local_cluster_def(topology.LocalRequest(1, 2))
  servers = {}
  for role in cluster.server_roles():
    servers[role] = processes.start(
        [sys.executable, '-m', 'distral_tf.distributed.server', '--exit_with_parent'],
        _env(TF_CONFIG=topology.tf_config_json(cluster, role)),
        tmp_path / f'{role.job}{role.index}.log')
  logdir, budget = str(tmp_path / 'run'), 1500
  chief = processes.start(
      _train_args(logdir, 'tf_config', 'a3c', budget),
      _env(TF_CONFIG=topology.tf_config_json(cluster, topology.Role('chief', 0))),
      tmp_path / 'chief.log')
  _wait_for(lambda: _steps_done(logdir) >= 4, '4 steps', alive=chief)
  servers[topology.Role('worker', 1)].kill()
  _wait_for(lambda: 'pi_i final' in _log(logdir, 'chief.log'), 'the table',
            alive=chief)
  try:
    status = chief.wait(timeout=30)
  except subprocess.TimeoutExpired:
    status = None
  log = _log(logdir, 'chief.log')
  assert status == 0, f'the chief did not exit 30 s after its table: {log[-3000:]}'
  summary = _json(os.path.join(logdir, results.SUMMARY_FILE))
  assert summary['finished']
  assert summary['total_env_steps'] == 2 * budget
  # Steps of the lost worker were rescheduled on the other one.
  assert summary['cluster']['steps'][0] > summary['cluster']['steps'][1]
