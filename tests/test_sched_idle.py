"""launch/sched_idle.py: idle cores, and the work that waited meanwhile, from scheduler events."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest

_PATH = os.path.join(os.path.dirname(__file__), '..', 'launch', 'sched_idle.py')
_spec = importlib.util.spec_from_file_location('sched_idle', _PATH)
sched_idle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sched_idle)


def _switch(cpu, t, prev, prev_pid, state, nxt, next_pid):
  return (f'{prev} {prev_pid} [{cpu:03d}] {t:.6f}: sched:sched_switch: prev_comm={prev} '
          f'prev_pid={prev_pid} prev_prio=120 prev_state={state} ==> next_comm={nxt} '
          f'next_pid={next_pid} next_prio=120')


def _waking(cpu, t, comm, pid, woken, woken_pid, target):
  return (f'{comm} {pid} [{cpu:03d}] {t:.6f}: sched:sched_waking: comm={woken} '
          f'pid={woken_pid} prio=120 target_cpu={target:03d}')


def test_idle_time_and_the_work_waiting_on_the_other_core():
  trace = [
      _switch(0, 0.000, 'swapper/0', 0, 'R', 'env', 10),
      _switch(1, 0.000, 'swapper/1', 0, 'R', 'actor', 20),
      _switch(1, 0.001, 'actor', 20, 'S', 'swapper/1', 0),      # core 1 idle from 1 ms
      _waking(0, 0.002, 'env', 10, 'tf_Compute', 30, 0),        # queued on busy core 0
      _switch(0, 0.004, 'env', 10, 'S', 'tf_Compute', 30),      # runs 2 ms later
      _waking(1, 0.005, 'swapper/1', 0, 'actor', 20, 1),
      _switch(1, 0.005, 'swapper/1', 0, 'R', 'actor', 20),      # core 1 busy at 5 ms
      _switch(0, 0.006, 'tf_Compute', 30, 'R', 'env', 10),      # preempted: waits
      _switch(0, 0.009, 'env', 10, 'S', 'swapper/0', 0),        # core 0 idle from 9 ms
      _switch(0, 0.010, 'swapper/0', 0, 'R', 'tf_Compute', 30),
      'not an event line',
  ]
  result = sched_idle.analyse(trace, kinds={30: 'TensorFlow\'s threads'})
  assert result['seconds'] == pytest.approx(0.010)
  assert result['idle'] == pytest.approx({0: 0.001, 1: 0.004})
  # Core 1 idle 1-5 ms while tf_Compute waited on core 0 from 2 to 4 ms; core 0
  # idle 9-10 ms with tf_Compute waiting on core 0 itself: not elsewhere.
  assert result['idle_while_waiting'] == pytest.approx({'TensorFlow\'s threads': 0.002})
  assert sorted(result['idle_periods']) == pytest.approx([0.001, 0.004])
  text = sched_idle.report(result)
  assert '25.0% of the cores' in text and '(40% of the idle time)' in text


def _perf_works() -> bool:
  if shutil.which('perf') is None:
    return False
  probe = subprocess.run(['perf', 'sched', 'record', '-o', '/dev/null', '--', 'true'],
                         capture_output=True)
  return probe.returncode == 0


def _cores_idle_jiffies() -> int:
  with open('/proc/stat') as f:
    return int(f.readline().split()[4])


@pytest.mark.skipif(not _perf_works(), reason='needs perf allowed to trace the scheduler')
def test_a_real_trace_agrees_with_the_kernels_idle_counter_and_sees_busy_cores():
  cores = os.cpu_count()
  ticks = os.sysconf('SC_CLK_TCK')
  # Whatever else runs on the machine: the trace's idle share is the kernel's.
  before, start = _cores_idle_jiffies(), time.time()
  traced = sched_idle.analyse(sched_idle.record(1.0), cores=cores)
  counted = (_cores_idle_jiffies() - before) / ticks / ((time.time() - start) * cores)
  assert traced['seconds'] > 0.8
  assert sorted(traced['idle']) == list(range(cores))
  share = sum(traced['idle'].values()) / (traced['seconds'] * cores)
  assert share == pytest.approx(counted, abs=0.15)
  # More busy processes than cores: no core idles.
  burners = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
             for _ in range(cores + 1)]
  try:
    time.sleep(0.3)
    busy = sched_idle.analyse(sched_idle.record(0.5), cores=cores)
  finally:
    for p in burners:
      p.kill()
      p.wait()
  assert sum(busy['idle'].values()) / (busy['seconds'] * cores) < 0.1


def test_without_perf_it_is_a_one_line_error(tmp_path):
  proc = subprocess.run([sys.executable, _PATH, '--seconds=1'], capture_output=True,
                        text=True, env=dict(os.environ, PATH=str(tmp_path)), timeout=60)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'error: perf is not installed (Debian/Ubuntu: apt-get install linux-perf, or '
      'linux-tools for the running kernel)']


def test_bad_arguments_are_usage_errors():
  for args in (['--seconds=0'], ['--pid=999999999']):
    proc = subprocess.run([sys.executable, _PATH, *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith('sched_idle.py: error: ')


def test_the_trainer_its_environments_and_a_launcher_are_told_apart():
  # A shell (the launcher) runs a process with a thread named as TensorFlow's
  # (the trainer), which starts a child (its environment).
  code = ('import ctypes, subprocess, sys, threading, time\n'
          'def named():\n'
          '  ctypes.CDLL(None).prctl(15, b"tf_Compute", 0, 0, 0)\n'
          '  time.sleep(60)\n'
          'threading.Thread(target=named, daemon=True).start()\n'
          'child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])\n'
          'print(child.pid, flush=True)\n'
          'time.sleep(60)\n')
  shell = subprocess.Popen(['sh', '-c', f'"{sys.executable}" -c \'{code}\'; true'],
                           stdout=subprocess.PIPE, text=True)
  env_pid = None
  try:
    env_pid = int(shell.stdout.readline())
    time.sleep(0.2)
    kinds = sched_idle.trainer_kinds(shell.pid)
  finally:
    if env_pid:
      os.kill(env_pid, 9)
    subprocess.run(['pkill', '-P', str(shell.pid)])
    shell.kill()
    shell.wait()
  assert kinds[shell.pid] == 'the launcher'
  assert kinds[env_pid] == 'environment processes'
  values = sorted(kinds.values())
  assert values.count("TensorFlow's threads") == 1
  assert values.count("the trainer's other threads") == 1  # Its main thread.
