"""Importing ``distral_tf`` first turns on TensorFlow's oneDNN kernels, unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow itself answers: whether this process runs the oneDNN kernels.
PROBE = ('import distral_tf, tensorflow; '
         'from tensorflow.python.util import _pywrap_util_port as port; '
         'print(port.IsMklEnabled())')


def onednn_enabled(value: str | None) -> str:
  env = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
  if value is not None:
    env['TF_ENABLE_ONEDNN_OPTS'] = value
  proc = subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120, check=True)
  return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize('value, expected', [(None, 'True'), ('0', 'False'), ('1', 'True')])
def test_the_package_sets_the_kernels_before_tensorflow_is_imported(value, expected):
  assert onednn_enabled(value) == expected


def test_this_test_process_runs_the_same_kernels():
  from tensorflow.python.util import _pywrap_util_port as port  # pylint: disable=g-import-not-at-top
  assert port.IsMklEnabled() == (os.environ['TF_ENABLE_ONEDNN_OPTS'] != '0')
