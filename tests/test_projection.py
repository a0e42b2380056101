"""The cluster projection: its formulas, CPU accounting from /proc, the bench's grouping."""

import dataclasses
import math
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from distral_tf.distributed import cluster_costs
from distral_tf.distributed import projection
from distral_tf.distributed import topology

COSTS = projection.Costs(
    env_seconds_per_frame=1e-3, host_seconds_per_frame=500e-6,
    chief_fixed_cores=0.1, chief_seconds_per_report=0.004, chief_seconds_per_call=0.064,
    steps_per_call=1.5, unrolls_per_call=4, ps_seconds_per_update=0.01,
    chief_bytes_per_update=2e6, ps_bytes_per_update=1e6, frames_per_update=1280)


def test_projection_follows_its_formulas():
  res = projection.Resources(host_cores=16, chief_cores=1, ps_cores=4, num_ps=4,
                             link_gbit=10.0)
  p = projection.project(COSTS, res, 'mazes', 5000.0)
  # 16 cores / (200 us of DeepMind Lab + 500 us of acting) per frame.
  assert p.host_fps == pytest.approx(16 / 700e-6)
  # chief CPU: 1 core less 0.1 at a fixed rate, at 0.004 s per report plus
  # 0.064 s per call of 4 steps = 0.02 s per step: 45 steps/s; ps 16 / 0.01 =
  # 1600; chief link 1.25e9 / 2e6 = 625; ps links 4 * 1.25e9 / 1e6 = 5000.
  assert COSTS.chief_seconds_per_update == pytest.approx(0.02)
  assert p.limit == 'chief CPU'
  assert p.updates_per_second == pytest.approx(45.0)
  assert p.frames_per_second == pytest.approx(45.0 * 1280)
  assert p.hosts == math.ceil(45.0 * 1280 / (16 / 700e-6))


def test_a_chief_busy_with_fixed_work_takes_no_steps():
  res = projection.Resources(chief_cores=1)
  costs = dataclasses.replace(COSTS, chief_fixed_cores=1.0)
  p = projection.project(costs, res, 'mazes', 5000.0)
  assert p.limit == 'chief CPU' and p.updates_per_second == 0.0 and p.hosts == 1


def test_projection_names_the_link_when_the_network_binds():
  res = projection.Resources(chief_cores=100, link_gbit=0.1)  # 12.5 MB/s links.
  p = projection.project(COSTS, res, 'lasertag', 2000.0)
  assert p.limit == 'chief link'
  assert p.updates_per_second == pytest.approx(12.5e6 / 2e6)
  assert p.hosts == 1  # Fewer frames than one host acts: one host.


def test_a_cost_measured_as_nothing_sets_no_limit():
  costs = dataclasses.replace(COSTS, chief_seconds_per_report=0.0, chief_seconds_per_call=0.0)
  p = projection.project(costs, projection.Resources(), 'mazes', 5000.0)
  assert p.limit == 'chief link' and p.updates_per_second == pytest.approx(625.0)


def test_descendants_walk_the_whole_tree_and_nothing_else():
  table = {1: (0, 0.0), 2: (1, 0.0), 3: (2, 0.0), 4: (2, 0.0), 5: (1, 0.0), 6: (0, 0.0)}
  assert projection.descendants(table, 2) == {3, 4}
  assert projection.descendants(table, 1) == {2, 3, 4, 5}
  assert projection.descendants(table, 6) == set()


def test_cpu_of_a_busy_child_is_read_from_proc():
  if projection.read_process_cpu() is None:
    pytest.skip('no /proc')
  before = projection.read_process_cpu()
  child = subprocess.Popen([sys.executable, '-c',
                            'import time\nt = time.process_time()\n'
                            'while time.process_time() - t < 0.6: pass\n'
                            'time.sleep(30)'])
  try:
    deadline = time.time() + 60
    while True:
      after = projection.read_process_cpu()
      if after.get(child.pid, (0, 0.0))[1] >= 0.6 or time.time() > deadline:
        break
      time.sleep(0.1)
    assert child.pid in projection.descendants(after, os.getpid())
    used = projection.cpu_used(before, after, {child.pid})
    # The busy loop's 0.6 s plus the interpreter's start.
    assert 0.6 <= used < 5.0
    # A process missing from the second reading (ended) counts nothing.
    assert projection.cpu_used(before, {}, {child.pid}) == 0.0
  finally:
    child.kill()
    child.wait()


def _sample(frames, steps, calls, cpu, port_bytes, servers, chief_pid, when=0.0,
            threads=None, unrolls=0):
  sample = object.__new__(cluster_costs.Sample)  # pylint: disable=protected-access
  sample.data = dict(servers=servers, chief_pid=chief_pid, thread_cpu=threads or {})
  sample.time, sample.frames, sample.steps, sample.calls = when, frames, steps, calls
  sample.unrolls = unrolls
  sample.cpu, sample.bytes = cpu, port_bytes
  return sample


def test_bench_costs_group_processes_and_ports_by_role():
  cluster = topology.ClusterDef('localhost:100', ('localhost:102',),
                                ('localhost:103', 'localhost:104'))
  servers = [dict(job='ps', index=0, pid=20), dict(job='worker', index=0, pid=30),
             dict(job='worker', index=1, pid=40)]
  # chief 10 (its servers and its evaluator's environment 11 below it);
  # workers 30 and 40 with environment processes 31, 41 and 42 (started
  # during the window: counted from zero).
  start_cpu = {10: (1, 5.0), 11: (10, 1.0), 20: (10, 2.0), 30: (10, 3.0), 31: (30, 1.0),
               40: (10, 3.0), 41: (40, 1.0)}
  end_cpu = {10: (1, 7.0), 11: (10, 9.0), 20: (10, 3.0), 30: (10, 5.0), 31: (30, 3.0),
             40: (10, 6.0), 41: (40, 2.0), 42: (40, 1.0)}
  # Bytes by the roles at the two ends of the connections (cluster_costs.socket_bytes).
  ports = {('chief', 'worker'): 100, ('ps', 'worker'): 0, ('chief', 'ps'): 0,
           cluster_costs.WITHIN_A_HOST: 0}
  moved = {('chief', 'worker'): 3100, ('ps', 'worker'): 5000, ('chief', 'ps'): 1000,
           cluster_costs.WITHIN_A_HOST: 9000}
  start = _sample(0, 0, 0, start_cpu, ports, servers, 10, when=100.0,
                  threads={'MainThread': 1.0, 'ActorRpc_0': 0.5, 'Evaluator-3': 0.0,
                           'ActorService-1': 0.0, 'LearnerThread-0': 1.0,
                           'Thread-1 (_serve)': 0.1})
  end = _sample(1000, 10, 5, end_cpu, moved, servers, 10, when=104.0, unrolls=8,
                threads={'MainThread': 1.2, 'ActorRpc_0': 0.8, 'Evaluator-3': 0.2,
                         'ActorService-1': 0.2, 'LearnerThread-0': 1.5,
                         'Thread-1 (_serve)': 0.2})
  costs = cluster_costs.measured_costs(start, end, cluster)
  assert costs.env_seconds_per_frame == pytest.approx((2.0 + 1.0 + 1.0) / 1000)
  assert costs.host_seconds_per_frame == pytest.approx((2.0 + 3.0) / 1000)
  # The chief's 2 s (not its environment 11's): 0.6 s at a fixed rate (main
  # thread, evaluator and the actor service's own thread, over 4 s), 0.4 s in
  # the gRPC threads taking 8 reports (its handlers and grpcio's thread that
  # takes the calls in), 1.0 s in 5 calls of 10 steps; at
  # saturation a call takes UNROLLS_PER_CALL steps.
  assert costs.chief_fixed_cores == pytest.approx(0.6 / 4)
  assert costs.chief_seconds_per_report == pytest.approx(0.4 / 8)
  assert costs.chief_seconds_per_call == pytest.approx(1.0 / 5)
  # Of the chief's 2 s, its Python threads used 1.5 s; the other 0.5 s, per call.
  assert costs.chief_native_seconds_per_call == pytest.approx(0.5 / 5)
  assert costs.steps_per_call == pytest.approx(2.0)
  assert costs.chief_seconds_per_update == pytest.approx(
      0.4 / 8 + 1.0 / 5 / cluster_costs.steps_lib.UNROLLS_PER_CALL)
  assert costs.ps_seconds_per_update == pytest.approx(1.0 / 10)
  # Every connection with the chief at one end (reports, steps, its policy
  # copies from the ps); with a ps at one end; nothing within a host.
  assert costs.chief_bytes_per_update == pytest.approx((3000 + 1000) / 10)
  assert costs.ps_bytes_per_update == pytest.approx((5000 + 1000) / 10)
  # Frames per unroll taken (8 in the window), not per step finished (10).
  assert costs.frames_per_update == pytest.approx(1000 / 8)


def test_split_per_call_solves_the_two_windows_exactly():
  a, b = 0.0067, 0.0063  # CPU seconds per call, per second.
  busy = (a * 20 + b * 6.0, 20, 6.0)
  assert projection.split_per_call(busy, (b * 10.0, 0, 10.0)) == pytest.approx((a, b))
  # A second window with fewer calls, not none: the same two costs.
  assert projection.split_per_call(busy, (a * 2 + b * 10.0, 2, 10.0)) == pytest.approx(
      (a, b))
  # Noise that would make the per-second part negative holds it at 0.
  assert projection.split_per_call((1.0, 10, 5.0), (-0.1, 0, 5.0)) == (0.1, 0.0)
  for idle in ((1.0, 20, 6.0), (1.0, 40, 6.0)):  # The same rate, a higher one.
    with pytest.raises(ValueError):
      projection.split_per_call(busy, idle)


def test_the_chief_per_second_cost_leaves_fewer_cores_for_steps():
  res = projection.Resources(chief_cores=1)
  costs = dataclasses.replace(COSTS, chief_recurring_cores=0.4)
  p = projection.project(costs, res, 'mazes', 5000.0)
  # (1 - 0.1 fixed - 0.4 per second) / 0.02 s per step.
  assert p.limit == 'chief CPU' and p.updates_per_second == pytest.approx(25.0)
  assert '| 0.400 cores |' in projection.format_costs(costs)


def test_bench_costs_split_the_chief_per_call_and_per_second_with_an_idle_window():
  cluster = topology.ClusterDef('localhost:100', ('localhost:102',), ('localhost:103',))
  servers = [dict(job='ps', index=0, pid=20), dict(job='worker', index=0, pid=30)]
  moved = {('chief', 'worker'): 0}
  cpu = lambda chief: {10: (1, chief), 20: (10, 1.0), 30: (10, 1.0), 31: (30, 1.0)}
  threads = lambda main, learner: {'MainThread': main, 'StepThread-2': learner}
  # Busy: 4 s, 5 calls; the chief used 1.2 s: 0.2 s in its main thread (fixed
  # rate), 0.5 s in its learner thread, so 1.0 s of the rest, 0.5 s native.
  start = _sample(0, 0, 0, cpu(5.0), moved, servers, 10, when=100.0,
                  threads=threads(1.0, 1.0))
  end = _sample(1000, 10, 5, cpu(6.2), moved, servers, 10, when=104.0, unrolls=10,
                threads=threads(1.2, 1.5))
  # Idle: 10 s, no call; 0.3 s: 0.2 s fixed, 0.05 s learner thread, so 0.1 s
  # of the rest (0.01 cores), 0.05 s native (0.005 cores).
  quiet = (_sample(1000, 10, 5, cpu(8.0), moved, servers, 10, when=110.0,
                   threads=threads(2.0, 2.0)),
           _sample(1000, 10, 5, cpu(8.3), moved, servers, 10, when=120.0,
                   threads=threads(2.2, 2.05)))
  costs = cluster_costs.measured_costs(start, end, cluster, quiet)
  assert costs.chief_recurring_cores == pytest.approx(0.01)
  assert costs.chief_seconds_per_call == pytest.approx((1.0 - 0.01 * 4) / 5)
  assert costs.chief_native_seconds_per_call == pytest.approx((0.5 - 0.005 * 4) / 5)
  assert costs.chief_fixed_cores == pytest.approx(0.2 / 4)
  # Without the idle window the calls take it all.
  alone = cluster_costs.measured_costs(start, end, cluster)
  assert alone.chief_seconds_per_call == pytest.approx(1.0 / 5)
  assert alone.chief_recurring_cores == 0.0


def test_the_idle_window_stops_the_worker_hosts_environments_and_only_them():
  if projection.read_process_cpu() is None:
    pytest.skip('no /proc')
  spin = 'while True: pass'
  host = subprocess.Popen([sys.executable, '-c',
                           'import subprocess, sys, time\n'
                           f'subprocess.Popen([sys.executable, "-c", "{spin}"])\n'
                           'time.sleep(60)'])
  try:
    deadline = time.time() + 30
    while not projection.descendants(projection.read_process_cpu(), host.pid):
      assert time.time() < deadline
      time.sleep(0.05)
    (env,) = projection.descendants(projection.read_process_cpu(), host.pid)
    cluster = topology.ClusterDef('localhost:100', ('localhost:102',), ('localhost:103',))
    sample = _sample(0, 0, 0, None, None, [dict(job='worker', index=0, pid=host.pid)], 10)
    used = lambda: projection.read_process_cpu()[env][1]
    with cluster_costs.environments_stopped(sample, cluster):  # pylint: disable=protected-access
      time.sleep(0.3)
      frozen = used()
      time.sleep(1.0)
      assert used() == pytest.approx(frozen, abs=0.02)
      assert host.poll() is None
    time.sleep(1.0)
    assert used() > frozen + 0.05  # Running again.
  finally:
    for pid in projection.descendants(projection.read_process_cpu() or {}, host.pid):
      os.kill(pid, 9)
    host.kill()
    host.wait()


def test_bench_costs_need_environment_processes():
  cluster = topology.ClusterDef('localhost:100', ('localhost:102',), ('localhost:103',))
  servers = [dict(job='ps', index=0, pid=20), dict(job='worker', index=0, pid=30)]
  cpu = {10: (1, 1.0), 20: (10, 1.0), 30: (10, 1.0)}
  moved = {('chief', 'worker'): 0}
  start = _sample(0, 0, 0, cpu, moved, servers, 10)
  end = _sample(100, 1, 0, cpu, moved, servers, 10)
  assert cluster_costs.measured_costs(start, end, cluster) is None


def test_thread_cpu_names_this_process_threads_and_counts_their_work():
  if projection.read_process_cpu() is None:
    pytest.skip('no /proc')
  done = []

  def spin():
    t = time.thread_time()
    while time.thread_time() - t < 0.3:
      pass
    done.append(projection.thread_cpu())

  import threading  # pylint: disable=g-import-not-at-top
  th = threading.Thread(target=spin, name='Spinner')
  th.start()
  th.join()
  assert 0.25 <= done[0]['Spinner'] < 2.0
  assert 'MainThread' in done[0]


def test_socket_bytes_tell_roles_and_a_process_talking_to_itself():
  if shutil.which('ss') is None:
    pytest.skip('needs ss')
  server = socket.create_server(('127.0.0.1', 0))
  port = server.getsockname()[1]
  own = socket.create_connection(('127.0.0.1', port))
  own_peer, _ = server.accept()
  child = subprocess.Popen(
      [sys.executable, '-c', 'import socket, sys, time\n'
       f's = socket.create_connection(("127.0.0.1", {port})); s.sendall(b"x" * 3000)\n'
       'sys.stdout.write("sent\\n"); sys.stdout.flush(); time.sleep(30)'],
      stdout=subprocess.PIPE, text=True)
  try:
    other_peer, _ = server.accept()
    assert child.stdout.readline() == 'sent\n'
    own.sendall(b'y' * 1000)
    assert len(own_peer.recv(4096)) > 0
    received = 0
    while received < 3000:
      received += len(other_peer.recv(4096))
    moved = cluster_costs.socket_bytes({port}, {os.getpid(): 'chief', child.pid: 'worker'})
    assert moved[cluster_costs.WITHIN_A_HOST] >= 1000
    assert moved[('chief', 'worker')] >= 3000
    assert cluster_costs.moved_bytes({}, moved) == moved[('chief', 'worker')]
    assert cluster_costs.moved_bytes({}, moved, 'ps') == 0
  finally:
    child.kill()
    child.wait()
    for s in (server, own, own_peer):
      s.close()
