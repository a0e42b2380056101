"""The run inspector (distral_tf/experiments/inspect_run.py) on a trained run."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from distral_tf.envs import two_rooms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name, *args, timeout=300):
  return subprocess.run([sys.executable, '-m', name, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_inspects_a_trained_run_term_by_term_and_refuses_bad_arguments(tmp_path):
  logdir = str(tmp_path / 'run')
  proc = _module('distral_tf.launch', '--level_set=two_rooms', '--algorithm=kl_ent_2col',
                 '--num_tasks=2', '--workers_per_task=2', '--env_steps_per_task=2000',
                 f'--logdir={logdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  png = str(tmp_path / 'frames.png')
  proc = _module('distral_tf.experiments.inspect_run', f'--logdir={logdir}',
                 '--inspect_task=1', '--inspect_unrolls=4', f'--inspect_png={png}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  # TensorFlow's start-up lines are hidden, as the trainer hides them.
  assert 'rebuild TensorFlow' not in proc.stderr and 'cuda' not in proc.stderr, proc.stderr
  out = proc.stdout
  assert 'kl_ent_2col on two_rooms, checkpoint' in out
  assert re.search(r': 4 unrolls of 20 steps \(80 steps\) of pi_i', out), out
  norms = {m.group(1): float(m.group(2)) for m in re.finditer(
      r'^gradient norm: (\w+)\s+(\S+)', out, re.M)}
  # Each term of the loss (eqs. 9-10) and their sum; the sum's gradient is the sum
  # of the terms' gradients, so its norm is at most the sum of their norms.
  assert {'policy_loss', 'value_loss', 'distill_loss', 'total'} <= set(norms), out
  assert 0 < norms['total'] <= sum(v for k, v in norms.items() if k != 'total') * 1.0001
  entropy = float(re.search(r'^entropy\s+(\S+)', out, re.M).group(1))
  assert 0 < entropy <= np.log(two_rooms.NUM_ACTIONS) + 1e-4
  shares = [float(x) for x in re.findall(r' (\d\.\d\d)(?:,|$)',
                                         re.search(r'^actions taken: (.*)$', out,
                                                   re.M).group(1))]
  assert abs(sum(shares) - 1) < 0.03
  assert os.path.getsize(png) > 0
  for args, message in ((['--inspect_unrolls=0'], '--inspect_unrolls must be >= 1'),
                        (['--inspect_task=nope'], 'nope'),
                        ([], None)):
    flags = [f'--logdir={logdir}'] + args if message else []
    proc = _module('distral_tf.experiments.inspect_run', *flags)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert (message or '--logdir is required') in proc.stderr
