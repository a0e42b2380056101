r"""Cluster-mode throughput on loopback: ``python -m distral_tf.distributed.bench``.

For each number of workers in ``--cluster_bench_workers`` (default 1, 2, 4) it
runs the trainer with ``--cluster=local:ps=P,workers=N`` (the same command a
user runs) and, after ``--bench_warmup_seconds``, measures over
``--bench_seconds``:

* frames/s (environment frames acted, action repeat included), in total and
  of each worker host (every worker steps its own environments), and gradient
  steps/s (steps finished on the workers), from the ``cluster.json`` the chief
  rewrites every second;
* bytes moved per gradient step: every byte through the TCP connections of the
  cluster's servers (chief <-> workers, workers <-> ps, chief <-> ps, and the
  worker hosts' unrolls and policy copies through the chief's actor service),
  read from the kernel's socket counters (``ss``) whenever ``cluster.json``
  changes;
* the bytes a step moves by construction: the variables of the unroll's tasks
  (every task: each actor steps environments of all of them) read by the
  worker and their gradients sent back, the policy copies (the chief's from the
  ps tasks, the hosts' from the chief) and the unroll twice (host to chief,
  chief to worker).

A last row is the local trainer (``agents/train.py``) on the same flags.

  python -m distral_tf.distributed.bench --level_set=two_rooms --num_tasks=2 \
      --algorithm=kl_ent_2col --workers_per_task=4 --actor_threads=2
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from distral_tf import bench as local_bench  # --bench_seconds, --bench_warmup_seconds.
from distral_tf import cli
from distral_tf import errors
from distral_tf.distributed import topology
from distral_tf.distributed import trainer as trainer_lib

flags.DEFINE_list('cluster_bench_workers', ['1', '2', '4'],
                  'Numbers of worker tasks to measure.')
flags.DEFINE_integer('cluster_bench_ps', 1, 'Parameter-server tasks.')
FLAGS = flags.FLAGS

_BYTES = re.compile(r'bytes_(acked|received):(\d+)')
# Flags passed on to the trainer.
_TRAINER_FLAGS = ('level_set', 'algorithm', 'seed', 'num_tasks', 'workers_per_task',
                  'actor_threads', 'learner_threads', 'unroll_length',
                  'env_processes', 'learning_rate', 'entropy_cost')
START_TIMEOUT_SECS = 600.0


def socket_bytes(ports: set[int]) -> int | None:
  """Bytes acknowledged plus received on the server side of connections to ``ports``.

  Every connection of the cluster has one end on a server port, so each byte
  is counted once. None if ``ss`` is unavailable.
  """
  try:
    out = subprocess.run(['ss', '-tinH', 'state', 'established'], check=True,
                         capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  total, counting = 0, False
  for line in out.splitlines():
    if not line.startswith((' ', '\t')):  # "Recv-Q Send-Q local:port peer:port".
      fields = line.split()
      port = fields[2].rpartition(':')[2] if len(fields) >= 4 else ''
      counting = port.isdigit() and int(port) in ports
    elif counting:
      total += sum(int(n) for _, n in _BYTES.findall(line))
  return total


def _trainer_argv() -> list[str]:
  return [f'--{name}={FLAGS[name].value}' for name in _TRAINER_FLAGS
          if FLAGS[name].value is not None]


class _Sample:
  """One reading: ``cluster.json`` as just written, and the socket counters."""

  def __init__(self, data: dict, ports: set[int]):
    self.time = data['time']
    self.frames = data['frames']
    self.steps = sum(data['stats']['steps'])
    self.refreshes = data['stats']['policy_refreshes']
    self.frames_per_host = data['stats'].get('frames_per_host', [])
    self.params_served = data['stats'].get('params_served', 0)
    self.unroll_bytes = data['stats'].get('unroll_bytes', 0)
    self.bytes = socket_bytes(ports)


def _next_sample(path: str, after: float, ports: set[int], proc) -> _Sample:
  """Waits for ``cluster.json`` newer than ``after``; samples at once."""
  deadline = time.time() + START_TIMEOUT_SECS
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f'the trainer exited with status {proc.returncode}')
    try:
      if os.path.getmtime(path) > after:
        with open(path) as f:
          return _Sample(json.load(f), ports)
    except (OSError, ValueError, KeyError):
      pass
    time.sleep(0.02)
  raise RuntimeError(f'no update of {path}')


def measure(num_workers: int) -> dict:
  """Runs the trainer on ``num_workers`` workers and measures its steady state."""
  with tempfile.TemporaryDirectory() as logdir:
    path = os.path.join(logdir, trainer_lib.CLUSTER_FILE)
    argv = [sys.executable, '-m', 'distral_tf.launch', *_trainer_argv(),
            f'--cluster=local:ps={FLAGS.cluster_bench_ps},workers={num_workers}',
            f'--logdir={logdir}', '--env_steps_per_task=1000000000000',
            '--log_interval_secs=1', '--checkpoint_secs=1000000000']
    with open(os.path.join(logdir, 'bench.log'), 'wb') as log:
      proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
      first = _next_sample(path, 0.0, set(), proc)
      with open(path) as f:
        info = json.load(f)
      cluster = topology.ClusterDef(info['cluster']['chief'][0],
                                    tuple(info['cluster']['ps']),
                                    tuple(info['cluster']['worker']))
      ports = {topology.split_address(a)[1]
               for a in cluster.all_addresses() + [topology.actor_address(cluster)]}
      while first.steps < 2 * num_workers:
        first = _next_sample(path, os.path.getmtime(path), ports, proc)
      warm_until = time.time() + FLAGS.bench_warmup_seconds
      start = first
      while start.time < warm_until:
        start = _next_sample(path, os.path.getmtime(path), ports, proc)
      end = start
      while end.time < start.time + FLAGS.bench_seconds:
        end = _next_sample(path, os.path.getmtime(path), ports, proc)
    finally:
      if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Stops the servers on its way out.
        try:
          proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
  dt, ds = end.time - start.time, max(end.steps - start.steps, 1)
  measured = None
  if start.bytes is not None and end.bytes is not None:
    measured = (end.bytes - start.bytes) / ds
  return dict(workers=num_workers, ps=FLAGS.cluster_bench_ps,
              frames_per_second=(end.frames - start.frames) / dt,
              frames_per_host=[(b - a) / dt for a, b in zip(start.frames_per_host,
                                                           end.frames_per_host)],
              steps_per_second=(end.steps - start.steps) / dt,
              bytes_per_step=measured,
              bytes_by_construction=(
                  2 * info['step_variable_bytes'] +
                  (end.refreshes - start.refreshes + end.params_served -
                   start.params_served) * info['stats']['policy_bytes'] / ds +
                  2 * (end.unroll_bytes - start.unroll_bytes) / ds))


def _mb(n) -> str:
  return 'n/a' if n is None else f'{n / 1e6:.2f}'


def format_table(rows: list[dict], local: dict | None) -> str:
  lines = ['| setup | frames/s | frames/s of each worker host | gradient steps/s '
           '| MB moved per step (measured) | MB per step by construction |',
           '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    hosts = ' / '.join(f'{f:,.0f}' for f in r['frames_per_host'])
    lines.append(f'| {r["ps"]} ps + {r["workers"]} worker(s) | '
                 f'{r["frames_per_second"]:,.0f} | {hosts} | '
                 f'{r["steps_per_second"]:.1f} | '
                 f'{_mb(r["bytes_per_step"])} | {_mb(r["bytes_by_construction"])} |')
  if local is not None:
    lines.append(f'| local trainer (no cluster) | {local["frames_per_second"]:,.0f} | - | '
                 f'{local["steps_per_second"]:.1f} | - | - |')
  return '\n'.join(lines)


def main(argv) -> None:
  del argv
  fv = FLAGS
  if fv.algorithm in cli.TABULAR_ALGORITHMS:
    raise errors.UsageError('the benchmark measures the deep trainer; choose one of: '
                            + ', '.join(cli.DEEP_ALGORITHMS))
  try:
    counts = [int(w) for w in fv.cluster_bench_workers]
  except ValueError:
    raise errors.UsageError('--cluster_bench_workers takes whole numbers') from None
  rows = []
  for k in counts:
    print(f'measuring {fv.cluster_bench_ps} ps + {k} worker(s)...', flush=True)
    rows.append(measure(k))
  print('measuring the local trainer...', flush=True)
  summary = local_bench.training_fps(_trainer_argv(), fv.bench_seconds,
                                     fv.bench_warmup_seconds)
  steady = summary['steady_frames_per_second']
  local = dict(frames_per_second=steady,
               steps_per_second=steady * summary['updates'] /
               max(summary['total_env_steps'], 1))
  print(format_table(rows, local), flush=True)


if __name__ == '__main__':
  app.run(errors.exit_on_usage_error(main), flags_parser=cli.parse_flags)
