"""The chief's actor service and its client over a real gRPC server on loopback.

A host's unroll is counted (frames per task and per host, its episodes in the
log) and queued; a full queue refuses it without waiting; the budget stops the
hosts; the policy and its number reach the client; the run's plan travels
whole. Environments of a cluster are split over its hosts without overlap.
"""

import queue

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
from distral_tf.distributed import remote
from distral_tf.distributed import topology
from distral_tf.envs import batch as batch_lib
from distral_tf.envs import level_sets

OBS, ACTIONS, TASKS, T = 6, 5, 2, 4
BUDGET = 3 * T * 2  # Three unrolls of 2 environments of each task.


def _config(logdir) -> config_lib.DeepConfig:
  return config_lib.DeepConfig(
      level_set='two_rooms', algorithm='kl_ent_2col', seed=3, num_tasks=TASKS,
      env_steps_per_task=BUDGET, logdir=str(logdir), learning_rate=1e-3, discount=0.99,
      alpha=None, entropy_cost=0.01, workers_per_task=4, tasks=(0, 1),
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
  mirror = remote.PolicyMirror(source, copy)
  progress = actor_lib.Progress(('a', 'b'), BUDGET)
  writer = results.EpisodeWriter(str(tmp_path), config.algorithm, config.seed)
  recorder = actor_lib.EpisodeRecorder(writer, progress)
  chief = 'localhost:%d' % topology.pick_free_ports(1)[0]
  address = topology.actor_address(topology.ClusterDef(chief, (), ()))
  svc = actor_service.ActorService(address, config, 1, mirror, progress, recorder,
                                   num_hosts=2)
  mirror.on_refresh = svc.publish
  unrolls = queue.Queue(maxsize=2)
  svc.start(unrolls)
  client = actor_rpc.Client(address)
  try:
    yield svc, client, mirror, source, progress, writer, unrolls
  finally:
    client.close()
    svc.stop()


def test_unrolls_are_counted_per_host_queued_and_refused_when_full(service):
  svc, client, _, source, progress, writer, unrolls = service
  one_task = _unroll(source, 2)
  episodes = np.array([[1, 0.5, 7]], np.float32)
  assert client.put(1, (0, 2), 5, episodes, one_task) == (True, False)
  assert client.put(0, (0, 2), 6, np.zeros([0, 3], np.float32), one_task) == (True, False)
  # The learner's queue holds 2: the third is refused, and not counted.
  assert client.put(0, (0, 2), 7, np.zeros([0, 3], np.float32), one_task) == (False, False)
  assert progress.frames.tolist() == [0, 2 * 2 * T]
  assert svc.frames_per_host.tolist() == [2 * T, 2 * T]
  sizes, unroll, updates_before = unrolls.get_nowait()
  assert sizes == (0, 2) and updates_before == 5
  np.testing.assert_array_equal(unroll.observations.numpy(),
                                one_task.observations.numpy())
  for got, sent in zip(tf.nest.flatten(unroll.initial_state),
                       tf.nest.flatten(one_task.initial_state)):
    np.testing.assert_array_equal(got.numpy(), sent.numpy())
  writer.flush()
  rows = results.read_episodes(writer.path)
  assert [(r['task'], r['episode_return'], r['episode_length'], r['env_steps'])
          for r in rows] == [
      ('b', 0.5, 7, 2 * T)]
  stats = svc.stats()
  assert stats['unrolls_per_host'] == [1, 1] and stats['hosts_acting'] == 2
  assert stats['unroll_bytes'] > one_task.observations.numpy().nbytes * 2
  assert svc.scalars() == {'frames_per_host/worker_0': 2 * T,
                           'frames_per_host/worker_1': 2 * T}


def test_budget_stops_the_hosts(service):
  svc, client, _, source, progress, _, unrolls = service
  both = _unroll(source, 4)
  none = np.zeros([0, 3], np.float32)
  for expected in ((True, False), (True, False), (True, True)):
    assert client.put(0, (2, 2), 0, none, both) == expected
    unrolls.get_nowait()
  assert progress.all_done() and progress.frames.tolist() == [BUDGET, BUDGET]
  assert client.put(1, (2, 2), 0, none, both) == (False, True)  # Refused, not counted.
  assert svc.stats()['refused_unrolls'] == 1
  assert svc.frames_per_host.tolist() == [2 * BUDGET, 0]


def test_policy_and_its_number_reach_the_client(service):
  svc, client, mirror, source, _, _, _ = service
  version, values = client.params()
  assert version == 0
  assert len(values) == len(remote.variables_in_order(source))
  assert any(not np.allclose(a, b.numpy())  # The copy is not the source yet.
             for a, b in zip(values, remote.variables_in_order(source)))
  mirror.refresh(17)
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
