"""Cluster roles, TF_CONFIG and ports: bad input is one clear UsageError (exit 2)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from distral_tf import errors
from distral_tf.distributed import topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The chief serves its actor hosts on 2221.
GOOD = {'cluster': {'chief': ['127.0.0.1:2220'], 'ps': ['127.0.0.1:2222'],
                    'worker': ['127.0.0.1:2223', 'h2:2224']},
        'task': {'type': 'worker', 'index': 1}}


def _with(**changes) -> str:
  config = json.loads(json.dumps(GOOD))
  for path, value in changes.items():
    where = config
    keys = path.split('__')
    for key in keys[:-1]:
      where = where[key]
    if value is None:
      del where[keys[-1]]
    else:
      where[keys[-1]] = value
  return json.dumps(config)


@pytest.fixture
def listening_port():
  """A port some other process listens on (here: a plain socket)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    yield s.getsockname()[1]


def _run(module, *args, env=None, timeout=120):
  env = dict(os.environ, **(env or {}))
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  return subprocess.run([sys.executable, '-m', module, *args], capture_output=True,
                        text=True, env=env, timeout=timeout, cwd=REPO)


def _one_error_line(proc) -> str:
  assert proc.returncode == errors.USAGE_EXIT_CODE, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, proc.stderr[-2000:]
  return lines[0]


def test_parse_cluster_flag():
  assert topology.parse_cluster_flag('tf_config') == 'tf_config'
  assert topology.parse_cluster_flag('local') == topology.LocalRequest(1, 2, None)
  assert topology.parse_cluster_flag('local:ps=2,workers=4') == topology.LocalRequest(
      2, 4, None)
  assert topology.parse_cluster_flag('local:workers=1,port=20000') == (
      topology.LocalRequest(1, 1, 20000))


@pytest.mark.parametrize('value, words', [
    ('yarn', ['local:ps=N', 'tf_config']),
    ('local:ps=0,workers=2', ['ps >= 1']),
    ('local:ps=1,workers=x', ['workers=x']),
    ('local:gpus=2', ['gpus=2']),
    ('local:ps=1,ps=2', ['given twice']),
    ('local:port=80', ['1024..65535']),
])
def test_bad_cluster_flag(value, words):
  with pytest.raises(errors.UsageError) as e:
    topology.parse_cluster_flag(value)
  for word in words:
    assert word in str(e.value)


def test_parse_tf_config():
  cluster, role = topology.parse_tf_config(json.dumps(GOOD))
  assert role == topology.Role('worker', 1)
  assert cluster.chief == '127.0.0.1:2220'
  assert cluster.ps == ('127.0.0.1:2222',)
  assert cluster.address(role) == 'h2:2224'
  assert topology.actor_address(cluster) == '127.0.0.1:2221'
  assert [str(r) for r in cluster.server_roles()] == ['ps 0', 'worker 0', 'worker 1']
  again = topology.parse_tf_config(topology.tf_config_json(cluster, role))
  assert again == (cluster, role)


@pytest.mark.parametrize('text, words', [
    (None, ['TF_CONFIG is not set']),
    ('', ['TF_CONFIG is not set']),
    ('{"cluster": ', ['not valid JSON']),
    ('[1, 2]', ['JSON object']),
    (_with(task=None), ['"task" object']),
    (_with(cluster__chief=None), ['"chief"']),
    (_with(cluster__chief=['a:1', 'b:2']), ['exactly one chief']),
    (_with(cluster__ps=[]), ['"ps"']),
    (_with(cluster__worker=['nohostport']), ['worker address', 'host:port']),
    (_with(cluster__worker=['h:99999']), ['host:port']),
    (_with(cluster__evaluator=['h:1']), ['unsupported job', 'evaluator']),
    (_with(cluster__ps=['127.0.0.1:2220']), ['used twice', '127.0.0.1:2220']),
    (_with(cluster__ps=['127.0.0.1:2221']),
     ['127.0.0.1:2221', 'serves its actor hosts', 'port + 1']),
    (_with(task__type='master'), ['"type"', 'master']),
    (_with(task__index=2), ['out of range', 'worker']),
    (_with(task__index='0'), ['out of range']),
])
def test_bad_tf_config(text, words):
  with pytest.raises(errors.UsageError) as e:
    topology.parse_tf_config(text)
  for word in words:
    assert word in str(e.value)


def test_port_in_use_is_detected(listening_port):
  assert not topology.port_is_free(listening_port)
  with pytest.raises(errors.UsageError, match=f'port {listening_port}.*in use'):
    topology.check_port_free(f'127.0.0.1:{listening_port}', 'ps 0')
  with pytest.raises(errors.UsageError, match=f'port {listening_port} is in use'):
    topology.local_cluster_def(topology.LocalRequest(1, 1, listening_port - 1))


def test_free_ports_are_distinct_and_free():
  ports = topology.pick_free_ports(5)
  assert len(set(ports)) == 5
  assert all(topology.port_is_free(p) for p in ports)
  cluster = topology.local_cluster_def(topology.LocalRequest(2, 3))
  assert len(cluster.ps) == 2 and len(cluster.workers) == 3
  addresses = cluster.all_addresses() + [topology.actor_address(cluster)]
  assert len(set(addresses)) == 7
  assert all(topology.port_is_free(topology.split_address(a)[1]) for a in addresses)
  fixed = topology.local_cluster_def(topology.LocalRequest(1, 2, 30000))
  assert fixed.chief.endswith(':30000') and topology.actor_address(fixed).endswith(':30001')
  assert [topology.split_address(a)[1] for a in fixed.ps + fixed.workers] == [
      30002, 30003, 30004]


def test_unreachable_server_is_named_after_timeout():
  port = topology.pick_free_ports(1)[0]  # Nothing listens there.
  cluster = topology.ClusterDef('127.0.0.1:1', (f'127.0.0.1:{port}',), ())
  with pytest.raises(errors.UsageError) as e:
    topology.wait_reachable(cluster, cluster.server_roles(), timeout=0.5)
  assert f'cannot reach ps 0 (127.0.0.1:{port})' in str(e.value)


def test_server_command_rejects_bad_tf_config(listening_port):
  proc = _run('distral_tf.distributed.server', env={'TF_CONFIG': ''})
  assert 'TF_CONFIG is not set' in _one_error_line(proc)
  # The chief's role is the trainer's, not a server's.
  proc = _run('distral_tf.distributed.server',
              env={'TF_CONFIG': _with(task__type='chief', task__index=0)})
  assert 'the chief trains' in _one_error_line(proc)
  # Its own port is taken.
  config = _with(cluster__ps=[f'127.0.0.1:{listening_port}'], task__type='ps',
                 task__index=0)
  proc = _run('distral_tf.distributed.server', env={'TF_CONFIG': config})
  line = _one_error_line(proc)
  assert f'port {listening_port}' in line and 'in use' in line


def test_trainer_reports_cluster_errors_in_one_line(tmp_path, listening_port):
  common = ['--level_set=two_rooms', '--num_tasks=1', '--algorithm=a3c',
            f'--logdir={tmp_path / "run"}']
  env = {'TF_CONFIG': '{"cluster": {}}'}
  proc = _run('distral_tf.launch', '--cluster=tf_config', *common, env=env)
  assert 'TF_CONFIG' in _one_error_line(proc)
  proc = _run('distral_tf.launch',
              f'--cluster=local:ps=1,workers=1,port={listening_port}', *common)
  assert f'port {listening_port} is in use' in _one_error_line(proc)
  ports = topology.pick_free_ports(4)  # Nothing listens on them.
  cluster = topology.ClusterDef(f'127.0.0.1:{ports[0]}', (f'127.0.0.1:{ports[1]}',),
                                (f'127.0.0.1:{ports[2]}', f'127.0.0.1:{ports[3]}'))
  env = {'TF_CONFIG': topology.tf_config_json(cluster, topology.Role('chief', 0)),
         'DISTRAL_CONNECT_TIMEOUT_SECS': '1'}
  proc = _run('distral_tf.launch', '--cluster=tf_config', *common, env=env)
  line = _one_error_line(proc)
  assert f'cannot reach ps 0 (127.0.0.1:{ports[1]}), worker 0' in line
  # While it waits, the chief says what for (here once: it gives up after 1 s).
  assert (f'waiting for ps 0 (127.0.0.1:{ports[1]}), worker 0 (127.0.0.1:{ports[2]}), '
          f'worker 1 (127.0.0.1:{ports[3]}) to accept connections: 0 s of at most 1 s'
          ) in proc.stdout
  proc = _run('distral_tf.launch', '--cluster=mesos', *common)
  assert 'tf_config' in _one_error_line(proc)
  assert not (tmp_path / 'run' / 'summary.json').exists()


def test_waiting_for_servers_is_reported_until_they_answer():
  """A line naming what is waited for, then again every report_secs, then none."""
  ports = topology.pick_free_ports(3)
  cluster = topology.ClusterDef(f'127.0.0.1:{ports[0]}', (f'127.0.0.1:{ports[1]}',),
                                (f'127.0.0.1:{ports[2]}',))
  lines = []
  with pytest.raises(errors.UsageError, match='cannot reach ps 0'):
    topology.wait_reachable(cluster, cluster.server_roles()[:1], timeout=1.0,
                            poll_secs=0.05, report=lines.append, report_secs=0.3)
  assert 3 <= len(lines) <= 5, lines
  assert all(l.startswith(f'waiting for ps 0 (127.0.0.1:{ports[1]}) to accept '
                          'connections: ') and l.endswith(' s of at most 1 s')
             for l in lines)
  # The server comes up while the chief waits: the lines stop, the wait ends.
  server = socket.socket()
  lines.clear()
  try:
    server.bind(('127.0.0.1', ports[1]))
    server.listen()
    topology.wait_reachable(cluster, cluster.server_roles()[:1], timeout=5.0,
                            report=lines.append)
  finally:
    server.close()
  assert lines == []
