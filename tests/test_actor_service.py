"""The chief's actor service and its client over a real gRPC server on loopback.

A host's report of an unroll is counted (frames per task and per host, its
episodes in the log) and filed as a ticket with the unroll's element spec; a
host that restarted loses its tickets and their frames; the budget stops the
hosts; the policy and its number reach the client; the run's plan travels
whole. Tickets are claimed, released and taken per shape. Environments of a
cluster are split over its hosts without overlap.
"""

import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from distral_tf import results
from distral_tf.agents import actor as actor_lib
from distral_tf.agents import algorithms
from distral_tf.agents import config as config_lib
from distral_tf.agents import learner as learner_lib
from distral_tf.agents import networks
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import actor_service
from distral_tf.distributed import host_queue
from distral_tf.distributed import remote
from distral_tf.distributed import tickets as tickets_lib
from distral_tf.distributed import topology
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets

OBS, ACTIONS, TASKS, T = 6, 5, 2, 4
BUDGET = 3 * T * 2  # Three unrolls of 2 environments of each task.


def _config(logdir) -> config_lib.DeepConfig:
  return config_lib.DeepConfig(
      level_set='two_rooms', algorithm='kl_ent_2col', seed=3, num_tasks=TASKS,
      env_steps_per_task=BUDGET, logdir=str(logdir), learning_rate=1e-3, discount=0.99,
      alpha=None, entropy_cost=0.01, workers_per_task=4, tasks=(0, 1), unroll_length=T,
      config_record={'level_set': 'two_rooms', 'num_tasks': TASKS, 'options': [1, 2]})


def _network(seed: int) -> networks.DistralNetwork:
  tf.random.set_seed(seed)
  algorithm = algorithms.ALGORITHMS['kl_ent_2col']
  net = networks.DistralNetwork(algorithm, TASKS, ACTIONS, 'vector', 1.0, hidden_size=8)
  net.build((OBS,), tf.float32)
  return net


def _unroll(network, batch: int) -> learner_lib.Unroll:
  rng = np.random.default_rng(batch)
  return learner_lib.Unroll(
      observations=tf.constant(rng.normal(size=(T + 1, batch, OBS)), tf.float32),
      first=tf.zeros([T + 1, batch], tf.bool),
      actions=tf.constant(rng.integers(ACTIONS, size=(T, batch)), tf.int32),
      rewards=tf.constant(rng.normal(size=(T, batch)), tf.float32),
      discounts=tf.ones([T, batch]), initial_state=network.initial_state(batch),
      behaviour_logits=tf.zeros([T, batch, ACTIONS]), final_values=tf.zeros([T, batch]))


@pytest.fixture
def service(tmp_path):
  config = _config(tmp_path)
  source, copy = _network(0), _network(1)
  counter = tf.Variable(0, dtype=tf.int64)
  mirror = remote.PolicyMirror(source, copy, counter)
  progress = actor_lib.Progress(('a', 'b'), BUDGET)
  writer = results.EpisodeWriter(str(tmp_path), config.algorithm, config.seed)
  recorder = actor_lib.EpisodeRecorder(writer, progress)
  chief = 'localhost:%d' % topology.pick_free_ports(1)[0]
  address = topology.actor_address(topology.ClusterDef(chief, (), ()))
  tickets = tickets_lib.Tickets(2)
  svc = actor_service.ActorService(address, config, 1, mirror, progress, recorder,
                                   2, tickets)
  mirror.on_refresh = svc.publish
  svc.start()
  client = actor_rpc.Client(address)
  try:
    yield svc, client, (mirror, counter), source, progress, writer, tickets
  finally:
    client.close()
    svc.stop()


def _spec(network, batch: int) -> str:
  return host_queue.ElementSpec.of(
      host_queue.unroll_element(1, 1, 0, _unroll(network, batch))).to_json()


def test_reports_are_counted_per_host_and_filed_as_tickets(service):
  svc, client, _, source, progress, writer, tickets = service
  spec = _spec(source, 2)
  episodes = np.array([[1, 0.5, 7]], np.float32)
  assert client.report(1, 11, 1, (0, 2), episodes, spec) == (True, False)
  assert client.report(0, 10, 1, (0, 2), np.zeros([0, 3], np.float32), spec) == (True, False)
  assert progress.frames.tolist() == [0, 2 * 2 * T]
  assert svc.frames_per_host.tolist() == [2 * T, 2 * T]
  assert tickets.pending() == 2
  key, got, n = tickets.claim(timeout=1.0, most=3)
  assert key == (0, 2) and got == host_queue.ElementSpec.from_json(spec) and n == 2
  assert got.shapes[host_queue.HEADER] == (T + 1, 2, OBS) and got.dtypes[0] == 'int64'
  writer.flush()
  rows = results.read_episodes(writer.path)
  assert [(r['task'], r['episode_return'], r['episode_length'], r['env_steps'])
          for r in rows] == [
      ('b', 0.5, 7, 2 * T)]
  stats = svc.stats()
  assert stats['unrolls_per_host'] == [1, 1] and stats['hosts_acting'] == 2
  # A report is small: the unroll stays on its host.
  assert 0 < stats['report_bytes'] < 4096
  assert svc.scalars() == {'frames_per_host/worker_0': 2 * T,
                           'frames_per_host/worker_1': 2 * T}


def test_a_restarted_host_loses_its_tickets_and_their_frames(service):
  svc, client, _, source, progress, _, tickets = service
  spec, none = _spec(source, 2), np.zeros([0, 3], np.float32)
  for host, incarnation, number in ((0, 5, 1), (0, 5, 2), (1, 6, 1)):
    assert client.report(host, incarnation, number, (2, 0), none, spec) == (True, False)
  assert progress.frames.tolist() == [3 * 2 * T, 0]
  # Host 0 comes back as a new process: its two unrolls are gone.
  assert client.report(0, 7, 1, (2, 0), none, spec) == (True, False)
  assert progress.frames.tolist() == [2 * 2 * T, 0]
  assert tickets.pending() == 2 and svc.stats()['lost_unrolls'] == 2
  svc.mark_restart(1)  # As the loopback launcher says.
  assert tickets.pending() == 1 and progress.frames.tolist() == [2 * T, 0]
  assert svc.stats()['frames_since_restart'] == [2 * T, 0]


def test_tickets_are_claimed_released_and_taken():
  tickets = tickets_lib.Tickets(2)
  spec = host_queue.ElementSpec(('int64',), ((),))
  key = (1, 0)
  tickets.set_incarnation(0, 40)
  tickets.set_incarnation(1, 41)
  assert tickets.claim(timeout=0.01) is None
  tickets.add(1, key, spec, 1)
  assert tickets.claim(timeout=0.01, most=4) == (key, spec, 1)
  assert tickets.claim(timeout=0.01) is None  # The only one is claimed.
  tickets.release(key)  # Its call found nothing on its worker.
  assert tickets.claim(timeout=0.01) == (key, spec, 1)
  tickets.taken(key, 1, 41, 1)
  tickets.release(key)
  assert tickets.pending() == 0
  # Host 1 reports its unroll 2; the call claimed for it lands on host 0 and
  # takes host 0's unroll 2, before host 0's reports of 1 and 2 arrive. Counted
  # from the maxima, host 0 then holds nothing and host 1 one unroll.
  tickets.add(1, key, spec, 2)
  assert tickets.claim(timeout=0.01) == (key, spec, 1)
  tickets.taken(key, 0, 40, 2)
  tickets.release(key)
  tickets.add(0, key, spec, 1)
  tickets.add(0, key, spec, 2)
  assert tickets.pending() == 1
  assert tickets.claim(timeout=0.01, most=2) == (key, spec, 1)
  tickets.taken(key, 1, 39, 2)  # A step on a process that is gone: not counted.
  tickets.release(key)
  assert tickets.pending() == 1
  assert tickets.drop_host(1) == {key: 1} and tickets.pending() == 0
  tickets.add(0, key, spec, 5)
  assert tickets.pending() == 3
  assert tickets.claim(timeout=0.01, most=2) == (key, spec, 2)
  assert tickets.claim(timeout=0.01, most=2) == (key, spec, 1)


def test_budget_stops_the_hosts_once_its_unrolls_are_taken(service):
  svc, client, _, source, progress, _, tickets = service
  spec, none = _spec(source, 4), np.zeros([0, 3], np.float32)
  for number in (1, 2, 3):
    assert client.report(0, 1, number, (2, 2), none, spec) == (True, False)
  assert progress.all_done() and progress.frames.tolist() == [BUDGET, BUDGET]
  # Not counted; the hosts go on until the counted unrolls are taken.
  assert client.report(1, 2, 1, (2, 2), none, spec) == (False, False)
  assert svc.stats()['refused_unrolls'] == 1
  assert svc.frames_per_host.tolist() == [2 * BUDGET, 0]
  stop = threading.Event()
  runner = threading.Thread(target=svc.run, args=(stop,))
  runner.start()
  for number in (1, 2, 3):
    key, _, n = tickets.claim(timeout=1.0)
    assert not svc.done
    tickets.taken(key, 0, 1, number)
    tickets.release(key, n)
  runner.join(timeout=10)
  assert svc.done
  assert client.report(1, 2, 2, (2, 2), none, spec) == (False, True)


def test_a_silent_host_with_unrolls_is_dropped_once_its_server_is_gone(service,
                                                                       monkeypatch):
  svc, client, _, source, progress, _, tickets = service
  spec, none = _spec(source, 2), np.zeros([0, 3], np.float32)
  assert client.report(1, 3, 1, (2, 0), none, spec) == (True, False)
  assert tickets.silent_hosts() == []
  monkeypatch.setattr(tickets_lib, "SILENT_HOST_SECS", 0.0)
  assert tickets.silent_hosts(0.0) == [1]
  # Host 1's server is a real socket: listening, then closed.
  listener = socket.socket()
  listener.bind(('127.0.0.1', 0))
  listener.listen()
  address = '127.0.0.1:%d' % listener.getsockname()[1]
  monkeypatch.setattr(svc, '_host_alive', lambda host: topology.is_reachable(address))
  svc.drop_silent_hosts()  # Silent but answering: only slow, its unrolls kept.
  assert tickets.pending() == 1 and progress.frames.tolist() == [2 * T, 0]
  assert svc.stats()['lost_unrolls'] == 0
  listener.close()
  svc.drop_silent_hosts()  # Gone: its unrolls are lost, their frames acted again.
  assert tickets.pending() == 0 and progress.frames.tolist() == [0, 0]
  assert svc.stats()['lost_unrolls'] == 1


def test_policy_and_its_number_reach_the_client(service):
  svc, client, (mirror, counter), source, _, _, _ = service
  version, values = client.params()
  assert version == 0
  assert len(values) == len(remote.variables_in_order(source))
  # The first request copied the source (the copy was older than allowed).
  for got, want in zip(values, remote.variables_in_order(source)):
    np.testing.assert_array_equal(got, want.numpy())
  counter.assign(17)
  source.variables[0].assign_add(tf.ones_like(source.variables[0]))
  assert client.version() == 0  # A young copy is served as it is.
  mirror.refresh()
  assert client.version() == 17
  version, values = client.params()
  assert version == 17
  for got, want in zip(values, remote.variables_in_order(source)):
    assert got.dtype == want.dtype.as_numpy_dtype
    np.testing.assert_array_equal(got, want.numpy())
  assert svc.stats()['params_served'] == 2


def test_plan_carries_the_whole_configuration(service, tmp_path):
  svc, client, _, _, _, _, _ = service
  run_id, num_hosts, config = actor_rpc.read_plan(client.plan())
  assert run_id == svc.run_id and num_hosts == 2
  assert config == _config(tmp_path)
  assert dict(config.config_record) == dict(_config(tmp_path).config_record)


def test_messages_keep_values_dtypes_and_shapes():
  arrays = [np.int32(3), np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
            np.array([[True, False]]), np.zeros([0, 3], np.float32),
            np.array([1.5, -2.25], np.float64), tf.constant([[7]], tf.int64)]
  decoded = actor_rpc.decode(actor_rpc.encode(arrays))
  assert len(decoded) == len(arrays)
  for got, sent in zip(decoded, arrays):
    sent = np.asarray(sent)
    assert got.dtype == sent.dtype and got.shape == sent.shape
    np.testing.assert_array_equal(got, sent)
  assert actor_rpc.decode(actor_rpc.encode([])) == []


def test_reports_round_trip_and_malformed_ones_are_refused():
  spec = host_queue.ElementSpec(('int64', 'float32'), ((), (20, 4, 72, 96, 3))).to_json()
  sent = actor_rpc.Report(3, -(2**62) + 5, 2**40, (0, 16, 2),
                          np.array([[1, 2.5, 900], [2, -1.25, 30]], np.float32),
                          spec.encode())
  data = actor_rpc.encode_report(sent)
  got = actor_rpc.decode_report(data)
  assert (got.host, got.incarnation, got.number, got.task_sizes, got.spec) == (
      sent.host, sent.incarnation, sent.number, sent.task_sizes, sent.spec)
  np.testing.assert_array_equal(got.episodes, sent.episodes)
  assert host_queue.ElementSpec.from_json(got.spec.decode()) == (
      host_queue.ElementSpec.from_json(spec))
  none = actor_rpc.decode_report(actor_rpc.encode_report(sent._replace(episodes=[])))
  assert none.episodes.shape == (0, 3)
  # Header, 3 sizes, 2 rows and the spec: nothing else travels.
  assert len(data) == 32 + 3 * 4 + 2 * 12 + len(spec)
  for bad in (data[:-1], data + b'x', data[:10]):
    with pytest.raises(ValueError, match='report of'):
      actor_rpc.decode_report(bad)
  for counted, stop in ((True, False), (False, True), (False, False)):
    assert actor_rpc.decode_answer(actor_rpc.encode_answer(counted, stop)) == (counted, stop)


def test_hosts_split_the_workers_of_every_task():
  level_set = level_sets.make_level_set('two_rooms', num_tasks=3, seed=0)
  everything = batch_lib.thread_specs(level_set, 7, workers_per_task=5, actor_threads=2)
  hosts = [batch_lib.thread_specs(level_set, 7, 5, 2, host=(h, 3)) for h in range(3)]
  flat = lambda per_thread: sorted(s for thread in per_thread for s in thread)
  assert sorted(s for h in hosts for s in flat(h)) == flat(everything)
  assert len({seed for _, seed, _ in flat(everything)}) == 3 * 5
  assert [len(h) for h in hosts] == [2, 2, 1]  # Host 2 has one worker: one thread.
  for per_thread in hosts:
    for thread in per_thread:
      tasks = [t for t, _, _ in thread]
      assert tasks == sorted(tasks) and set(tasks) == {0, 1, 2}
  assert batch_lib.thread_specs(level_set, 7, 2, 1, host=(2, 3)) == []
