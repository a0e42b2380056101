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
  each connection named by the processes at its two ends
  (``cluster_costs.socket_bytes``);
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
ps tasks (``cluster_costs.measured_costs``); a second window of
``--bench_idle_seconds`` with the worker hosts' environment processes stopped
(no unroll, so no call of gradient steps) tells the chief's CPU that recurs per
second from its CPU per call (``projection.split_per_call``). From those costs
it projects, for each DeepMind Lab level set,
the worker hosts and frames/s at which the learner side (chief and ps tasks)
saturates on the cluster of the ``--projection_*`` flags
(``projection.project``). Measure it on a level set with DeepMind Lab's
observations and network (``miniworld``: 72x96 RGB) and environments in their
own processes:

  python -m distral_tf.distributed.bench --level_set=miniworld --num_tasks=1 \
      --algorithm=kl_ent_2col --workers_per_task=16 --cluster_bench_workers=1
"""

from __future__ import annotations

import json
import os
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
from distral_tf.distributed import projection
from distral_tf.distributed import topology
from distral_tf.dmlab import games

if __name__ == '__main__':  # Before TensorFlow loads: its start-up lines are hidden.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
with cli.native_stderr_hidden():
  # pylint: disable=g-import-not-at-top
  from distral_tf.distributed import cluster_costs
  from distral_tf.distributed import trainer as trainer_lib

flags.DEFINE_list('cluster_bench_workers', ['1', '2', '4'],
                  'Numbers of worker tasks to measure.')
flags.DEFINE_integer('cluster_bench_ps', 1, 'Parameter-server tasks.')
flags.DEFINE_float('bench_idle_seconds', 10.0,
                   'After the window, a second one this long with the worker hosts\' '
                   'environment processes stopped (no unroll, so no call): the chief\'s '
                   'CPU that recurs per second is told from its CPU per call by the two '
                   'windows (projection.split_per_call). 0: no second window (the per-call '
                   'cost then takes it all).', lower_bound=0.0)
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

# Flags passed on to the trainer.
_TRAINER_FLAGS = ('level_set', 'algorithm', 'seed', 'num_tasks', 'workers_per_task',
                  'actor_threads', 'learner_threads', 'unroll_length',
                  'env_processes', 'learning_rate', 'entropy_cost')


def _trainer_argv() -> list[str]:
  return [f'--{name}={FLAGS[name].value}' for name in _TRAINER_FLAGS
          if FLAGS[name].value is not None]


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
      first = cluster_costs.next_sample(path, 0.0, set(), {}, proc)
      with open(path) as f:
        info = json.load(f)
      cluster = topology.ClusterDef(info['cluster']['chief'][0],
                                    tuple(info['cluster']['ps']),
                                    tuple(info['cluster']['worker']))
      ports = {topology.split_address(a)[1]
               for a in cluster.all_addresses() + [topology.actor_address(cluster)]}
      roles = {s['pid']: s['job'] for s in info.get('servers', ())}
      roles[info['chief_pid']] = 'chief'
      following = lambda: cluster_costs.next_sample(path, os.path.getmtime(path), ports,
                                                    roles, proc)
      while first.steps < 2 * num_workers:
        first = following()
      warm_until = time.time() + FLAGS.bench_warmup_seconds
      start = first
      while start.time < warm_until:
        start = following()
      end = start
      while end.time < start.time + FLAGS.bench_seconds:
        end = following()
      idle = None
      if FLAGS.bench_idle_seconds > 0:
        with cluster_costs.environments_stopped(end, cluster):
          idle = cluster_costs.idle_window(path, ports, roles, proc,
                                           FLAGS.bench_idle_seconds)
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
    moved = lambda involving=None: cluster_costs.moved_bytes(start.bytes, end.bytes,
                                                             involving) / ds
    measured, within_hosts = moved(), moved(cluster_costs.WITHIN_A_HOST)
  return dict(workers=num_workers, ps=FLAGS.cluster_bench_ps,
              costs=cluster_costs.measured_costs(start, end, cluster, idle),
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
