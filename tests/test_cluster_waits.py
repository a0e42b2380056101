"""The chief's waits that a lost ps must end: the checkpoint's pause, the shutdown.

Once a ps is gone, TensorFlow's coordinator can hold a step in flight (and its
``join``) while it waits up to an hour for the cluster to recover; every such
wait of the chief runs a check of the ps that ends it.
"""

import threading
import time

import pytest

from distral_tf.distributed import steps
from distral_tf.distributed import trainer as trainer_lib


class Lost(RuntimeError):
  pass


def _check_lost_after(calls: int):
  """A check that raises ``Lost`` on its ``calls``-th call; counts its calls."""
  count = [0]

  def check():
    count[0] += 1
    if count[0] >= calls:
      raise Lost('ps 1 is gone')
  return check, count


def _hold_step(gate: steps.StepGate, release: threading.Event) -> threading.Thread:
  """A step that stays in flight until ``release`` is set."""
  entered = threading.Event()

  def run():
    with gate.step():
      entered.set()
      release.wait()
  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  assert entered.wait(5.0)
  return thread


def test_pause_waits_for_the_steps_in_flight_and_holds_new_ones():
  gate = steps.StepGate()
  release = threading.Event()
  held = _hold_step(gate, release)
  check, count = _check_lost_after(10**6)
  start = time.monotonic()
  threading.Timer(0.6, release.set).start()
  with gate.paused(check):
    waited = time.monotonic() - start
    held.join(5.0)
    assert not held.is_alive()  # Its step had left the gate.
    later = threading.Event()

    def enter_late():
      with gate.step():
        later.set()
    threading.Thread(target=enter_late, daemon=True).start()
    assert not later.wait(0.5), 'a step ran during the pause'
  assert later.wait(5.0), 'the held-back step did not run after the pause'
  assert 0.5 <= waited < 10.0
  assert count[0] >= 1  # The check ran while it waited.


def test_a_lost_ps_ends_the_pause_on_a_step_that_never_ends():
  gate = steps.StepGate()
  release = threading.Event()
  _hold_step(gate, release)  # Stuck, as in the coordinator's recovery wait.
  check, count = _check_lost_after(3)
  start = time.monotonic()
  with pytest.raises(Lost):
    with gate.paused(check):
      pytest.fail('the pause began with a step in flight')
  assert count[0] == 3
  assert time.monotonic() - start < 3 * steps.PAUSE_CHECK_SECS + 5.0
  # The gate is open again: a new step is not held back by a pause that failed.
  entered = threading.Event()

  def run():
    with gate.step():
      entered.set()
  threading.Thread(target=run, daemon=True).start()
  assert entered.wait(5.0)
  release.set()


def test_wait_checking_returns_raises_or_gives_up_on_a_lost_ps():
  # Returns with the blocking call, raising its error if it had one.
  trainer_lib.wait_checking(lambda: time.sleep(0.3), lambda: None, poll=0.05)

  def fails():
    time.sleep(0.2)
    raise ValueError('a step failed')
  with pytest.raises(ValueError, match='a step failed'):
    trainer_lib.wait_checking(fails, lambda: None, poll=0.05)
  # A wait that would last forever ends with the check's error.
  forever = threading.Event()
  check, count = _check_lost_after(4)
  start = time.monotonic()
  with pytest.raises(Lost):
    trainer_lib.wait_checking(forever.wait, check, poll=0.05)
  assert count[0] == 4 and time.monotonic() - start < 5.0
  forever.set()
