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
  cluster's servers (the chief's actor service included), read from the
  kernel's socket counters (``ss -tinp``) whenever ``cluster.json`` changes,
  each connection named by the processes at its two ends (``socket_bytes``);
  a process connected to itself (a worker host's session to its own server)
  counts as within a host;
* the bytes a step moves by construction: the variables of the unroll's tasks
  (every task: each actor steps environments of all of them) read by the
  worker and their gradients sent back, the chief's policy copies (from the
  ps tasks; those served to hosts as their first policy) and the reports.
  The unrolls stay on their hosts (``host_queue``).

A last row is the local trainer (``agents/train.py``) on the same flags.

From the first run's window it also measures, per frame and per gradient step,
the CPU of every process of the cluster and the bytes of the chief and of the
ps tasks (``projection.Costs``), and projects, for each DeepMind Lab level set,
the worker hosts and frames/s at which the learner side (chief and ps tasks)
saturates on the cluster of the ``--projection_*`` flags
(``projection.project``). Measure it on a level set with DeepMind Lab's
observations and network (``miniworld``: 72x96 RGB) and environments in their
own processes:

  python -m distral_tf.distributed.bench --level_set=miniworld --num_tasks=4 \
      --algorithm=kl_ent_2col --workers_per_task=4 --cluster_bench_workers=1,2
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
from distral_tf.distributed import actor_service
from distral_tf.distributed import projection
from distral_tf.distributed import steps as steps_lib
from distral_tf.distributed import topology
from distral_tf.distributed import trainer as trainer_lib
from distral_tf.dmlab import games

flags.DEFINE_list('cluster_bench_workers', ['1', '2', '4'],
                  'Numbers of worker tasks to measure.')
flags.DEFINE_integer('cluster_bench_ps', 1, 'Parameter-server tasks.')
# The cluster the projection is for (defaults: launch/k8s/distral-cluster.yaml).
flags.DEFINE_integer('projection_host_cores', 16, 'Cores of each worker host projected.')
flags.DEFINE_integer('projection_chief_cores', 1,
                     'Cores the chief\'s work can use: 1, since most of it is Python '
                     '(gRPC handlers, learner threads, the coordinator) under one '
                     'interpreter lock.')
flags.DEFINE_integer('projection_ps', 4, 'Parameter-server tasks projected.')
flags.DEFINE_integer('projection_ps_cores', 4, 'Cores of each parameter server projected.')
flags.DEFINE_float('projection_link_gbit', 10.0,
                   'Network link of the chief and of each ps, Gbit/s each way.')
FLAGS = flags.FLAGS

_BYTES = re.compile(r'bytes_(acked|received):(\d+)')
_PID = re.compile(r'pid=(\d+)')
# Flags passed on to the trainer.
_TRAINER_FLAGS = ('level_set', 'algorithm', 'seed', 'num_tasks', 'workers_per_task',
                  'actor_threads', 'learner_threads', 'unroll_length',
                  'env_processes', 'learning_rate', 'entropy_cost')
START_TIMEOUT_SECS = 600.0
# The chief's threads whose work recurs at a rate of their own, not per step
# (``ActorService-`` is its run-loop thread, which looks for silent hosts).
FIXED_RATE_THREADS = ('MainThread', 'Evaluator', 'LocalClusterSupervisor',
                      'WorkerPreemptionHandler', 'ActorService-')
# The actor service's gRPC threads: one report per unroll (grpcio's own thread
# that takes each call in and hands it to them is named '... (_serve)').
REPORT_THREADS = (actor_service.HANDLER_THREADS, '(_serve)')


WITHIN_A_HOST = ('host', 'within')


def socket_bytes(ports: set[int], roles: dict[int, str]) -> dict[tuple[str, str], int] | None:
  """Bytes acknowledged plus received on the server side of the cluster's
  connections (a server port in ``ports``), by the roles of their two ends.

  Every connection of the cluster has one end on a server port, so each byte
  is counted once. ``roles``: process id -> role ('chief', 'ps', 'worker');
  the key is the two ends' roles, sorted ('other' for a process not named).
  A connection whose two ends are the same process (a worker host's own
  client of its own server) counts under ``WITHIN_A_HOST``. None if ``ss`` is
  unavailable.
  """
  try:
    out = subprocess.run(['ss', '-tinpH', 'state', 'established'], check=True,
                         capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  records, current = [], None  # [local port, peer port, pid, bytes]
  for line in out.splitlines():
    if not line.startswith((' ', '\t')):  # "Recv-Q Send-Q local:port peer:port users:..".
      fields = line.split()
      current = None
      if len(fields) >= 4:
        local, peer = (f.rpartition(':')[2] for f in fields[2:4])
        pid = _PID.search(line)
        if local.isdigit() and peer.isdigit():
          current = [int(local), int(peer), int(pid.group(1)) if pid else None, 0]
          records.append(current)
    elif current is not None:
      current[3] += sum(int(n) for _, n in _BYTES.findall(line))
  pid_of_port = {r[0]: r[2] for r in records}
  totals: dict[tuple[str, str], int] = {}
  for local, peer, pid, moved in records:
    if local in ports:
      client = pid_of_port.get(peer)
      if pid is not None and client == pid:
        key = WITHIN_A_HOST
      else:
        key = tuple(sorted((roles.get(pid, 'other'), roles.get(client, 'other'))))
      totals[key] = totals.get(key, 0) + moved
  return totals


def moved_bytes(start: dict, end: dict, involving: str | None = None) -> int:
  """Bytes moved between two ``socket_bytes`` readings: between processes, or
  (``involving``) on the connections with that role at one end, or within a
  host (``involving=WITHIN_A_HOST``)."""
  def take(key) -> bool:
    if involving == WITHIN_A_HOST:
      return key == WITHIN_A_HOST
    return key != WITHIN_A_HOST and (involving is None or involving in key)
  return sum(n - start.get(k, 0) for k, n in end.items() if take(k))


def _trainer_argv() -> list[str]:
  return [f'--{name}={FLAGS[name].value}' for name in _TRAINER_FLAGS
          if FLAGS[name].value is not None]


class _Sample:
  """One reading: ``cluster.json`` as just written, socket and CPU counters."""

  def __init__(self, data: dict, ports: set[int], roles: dict[int, str]):
    self.data = data
    self.time = data['time']
    self.frames = data['frames']
    self.steps = sum(data['stats']['steps'])
    self.refreshes = data['stats']['policy_refreshes']
    self.calls = data['stats'].get('calls', 0)
    self.frames_per_host = data['stats'].get('frames_per_host', [])
    self.unrolls = sum(data['stats'].get('unrolls_per_host', []))
    self.params_served = data['stats'].get('params_served', 0)
    self.report_bytes = data['stats'].get('report_bytes', 0)
    self.bytes = socket_bytes(ports, roles)
    self.cpu = projection.read_process_cpu()


def _next_sample(path: str, after: float, ports: set[int], roles: dict[int, str],
                 proc) -> _Sample:
  """Waits for ``cluster.json`` newer than ``after``; samples at once."""
  deadline = time.time() + START_TIMEOUT_SECS
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f'the trainer exited with status {proc.returncode}')
    try:
      if os.path.getmtime(path) > after:
        with open(path) as f:
          return _Sample(json.load(f), ports, roles)
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
      first = _next_sample(path, 0.0, set(), {}, proc)
      with open(path) as f:
        info = json.load(f)
      cluster = topology.ClusterDef(info['cluster']['chief'][0],
                                    tuple(info['cluster']['ps']),
                                    tuple(info['cluster']['worker']))
      ports = {topology.split_address(a)[1]
               for a in cluster.all_addresses() + [topology.actor_address(cluster)]}
      roles = {s['pid']: s['job'] for s in info.get('servers', ())}
      roles[info['chief_pid']] = 'chief'
      while first.steps < 2 * num_workers:
        first = _next_sample(path, os.path.getmtime(path), ports, roles, proc)
      warm_until = time.time() + FLAGS.bench_warmup_seconds
      start = first
      while start.time < warm_until:
        start = _next_sample(path, os.path.getmtime(path), ports, roles, proc)
      end = start
      while end.time < start.time + FLAGS.bench_seconds:
        end = _next_sample(path, os.path.getmtime(path), ports, roles, proc)
    finally:
      if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Stops the servers on its way out.
        try:
          proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
  dt, ds = end.time - start.time, max(end.steps - start.steps, 1)
  measured = within_hosts = None
  if start.bytes is not None and end.bytes is not None:
    measured = moved_bytes(start.bytes, end.bytes) / ds
    within_hosts = moved_bytes(start.bytes, end.bytes, WITHIN_A_HOST) / ds
  return dict(workers=num_workers, ps=FLAGS.cluster_bench_ps,
              costs=measured_costs(start, end, cluster),
              frames_per_second=(end.frames - start.frames) / dt,
              frames_per_host=[(b - a) / dt for a, b in zip(start.frames_per_host,
                                                           end.frames_per_host)],
              steps_per_second=(end.steps - start.steps) / dt,
              bytes_per_step=measured, bytes_within_hosts_per_step=within_hosts,
              unroll_bytes=end.data['stats'].get('unroll_bytes', 0),
              bytes_by_construction=(
                  2 * info['step_variable_bytes'] +
                  (end.refreshes - start.refreshes + end.params_served -
                   start.params_served) * info['stats']['policy_bytes'] / ds +
                  (end.report_bytes - start.report_bytes) / ds))


def measured_costs(start: _Sample, end: _Sample,
                   cluster: topology.ClusterDef) -> projection.Costs | None:
  """The projection's inputs over the window from ``start`` to ``end``.

  None without ``/proc`` or ``ss``, or when the worker hosts ran no
  environment processes (their CPU could not be told from acting's).
  """
  if None in (start.cpu, end.cpu, start.bytes, end.bytes):
    return None
  table = end.cpu
  servers = {(s['job'], s['index']): s['pid'] for s in end.data.get('servers', ())}
  workers = [servers.get(('worker', i)) for i in range(len(cluster.workers))]
  ps = [servers.get(('ps', i)) for i in range(len(cluster.ps))]
  if None in workers or None in ps:
    return None
  envs = set().union(*(projection.descendants(table, w) for w in workers))
  if not envs:
    return None
  ps_tree = set(ps).union(*(projection.descendants(table, p) for p in ps))
  frames = max(end.frames - start.frames, 1)
  steps = max(end.steps - start.steps, 1)
  # The chief's process; not its servers (loopback) nor pi_0's evaluator environments.
  chief_cpu = projection.cpu_used(start.cpu, end.cpu, {end.data['chief_pid']})
  threads = lambda sample, names: sum(
      v for k, v in sample.data.get('thread_cpu', {}).items()
      if any(k.startswith(n) or k.endswith(n) for n in names))
  used = lambda names: threads(end, names) - threads(start, names)
  fixed, reports = used(FIXED_RATE_THREADS), used(REPORT_THREADS)
  python = sum(end.data.get('thread_cpu', {}).values()) - sum(
      start.data.get('thread_cpu', {}).values())
  unrolls = max(end.unrolls - start.unrolls, 1)
  calls = max(end.calls - start.calls, 1)
  return projection.Costs(
      env_seconds_per_frame=projection.cpu_used(start.cpu, end.cpu, envs) / frames,
      host_seconds_per_frame=projection.cpu_used(start.cpu, end.cpu, set(workers)) / frames,
      chief_fixed_cores=fixed / max(end.time - start.time, 1e-9),
      chief_seconds_per_report=reports / unrolls,
      chief_seconds_per_call=(chief_cpu - fixed - reports) / calls,
      steps_per_call=steps / calls, unrolls_per_call=steps_lib.UNROLLS_PER_CALL,
      ps_seconds_per_update=projection.cpu_used(start.cpu, end.cpu, ps_tree) / steps,
      # Every connection with the chief (or a ps) at one end, whichever started it.
      chief_bytes_per_update=moved_bytes(start.bytes, end.bytes, 'chief') / steps,
      ps_bytes_per_update=moved_bytes(start.bytes, end.bytes, 'ps') / steps,
      # Both counted as unrolls are reported: a step lags its unroll, and a
      # window of a few steps would otherwise count a few more or fewer of them.
      frames_per_update=frames / unrolls,
      chief_native_seconds_per_call=max(chief_cpu - python, 0.0) / calls)


def _mb(n) -> str:
  return 'n/a' if n is None else f'{n / 1e6:.2f}'


def format_table(rows: list[dict], local: dict | None) -> str:
  lines = ['| setup | frames/s | frames/s of each worker host | gradient steps/s '
           '| MB moved per step between processes (measured) | MB per step by '
           'construction | MB per step within a host (measured) |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    hosts = ' / '.join(f'{f:,.0f}' for f in r['frames_per_host'])
    lines.append(f'| {r["ps"]} ps + {r["workers"]} worker(s) | '
                 f'{r["frames_per_second"]:,.0f} | {hosts} | '
                 f'{r["steps_per_second"]:.1f} | '
                 f'{_mb(r["bytes_per_step"])} | {_mb(r["bytes_by_construction"])} | '
                 f'{_mb(r["bytes_within_hosts_per_step"])} |')
  if local is not None:
    lines.append(f'| local trainer (no cluster) | {local["frames_per_second"]:,.0f} | - | '
                 f'{local["steps_per_second"]:.1f} | - | - | - |')
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
  if not counts or min(counts) < 1:
    raise errors.UsageError('--cluster_bench_workers takes numbers >= 1')
  for name in ('projection_host_cores', 'projection_chief_cores', 'projection_ps',
               'projection_ps_cores', 'projection_link_gbit'):
    if fv[name].value <= 0:
      raise errors.UsageError(f'--{name} must be > 0, got {fv[name].value}')
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
  print_projection(rows[0])


def print_projection(row: dict) -> None:
  """The costs measured on ``row``'s run and, from them, the projection."""
  fv = FLAGS
  costs = row['costs']
  if costs is None:
    print('\nno projection: it needs /proc, `ss` and the environments in their own '
          'processes (--env_processes=true)', flush=True)
    return
  res = projection.Resources(
      host_cores=fv.projection_host_cores, chief_cores=fv.projection_chief_cores,
      ps_cores=fv.projection_ps_cores, num_ps=fv.projection_ps,
      link_gbit=fv.projection_link_gbit)
  print(f'\nCosts measured on {row["ps"]} ps + {row["workers"]} worker(s), '
        f'--level_set={fv.level_set}:\n' + projection.format_costs(costs), flush=True)
  if row['unroll_bytes']:
    print(f'chief traffic per gradient step: {costs.chief_bytes_per_update / 1e3:,.1f} kB, '
          f'{100 * costs.chief_bytes_per_update / row["unroll_bytes"]:.2f} % of an '
          f'unroll ({row["unroll_bytes"] / 1e6:.2f} MB, which stays on its host)',
          flush=True)
  print(f'\nProjected with DeepMind Lab in place of {fv.level_set}\'s environments '
        f'({res.num_ps} ps x {res.ps_cores} cores, chief on {res.chief_cores} core(s), '
        f'{res.link_gbit:g} Gbit/s links):\n' + projection.format_projections(
            [projection.project(costs, res, name, fps)
             for name, fps in games.FRAMES_PER_CORE.items()], res), flush=True)


if __name__ == '__main__':
  app.run(errors.exit_on_usage_error(main), flags_parser=cli.parse_flags)
