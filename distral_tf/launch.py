r"""Entry point: ``python -m distral_tf.launch [--flags]``.

Trains one algorithm on one level set and writes ``episodes.csv``,
``config.json``, ``summary.json`` and a learning-curve PNG into ``--logdir``.
With no flags it trains KL+ent_2col on the two-room grid world.

  python -m distral_tf.launch --level_set=two_rooms --algorithm=distral_soft_q \
      --seed=0 --env_steps_per_task=20000 --logdir=/tmp/run

Bad flags print one line naming the valid choices and exit with status 2;
Ctrl-C at any moment prints one line and exits with status 130 (during
training, after saving a checkpoint).
TensorFlow's own start-up and INFO lines are hidden unless ``--verbosity=0``
(or ``TF_CPP_MIN_LOG_LEVEL``) asks for them.

Once the command has said how it ended, a Ctrl-C (or SIGTERM) that comes while
the interpreter exits ends the process at once and quietly: raised as
``KeyboardInterrupt`` inside an exit handler (logging's, multiprocessing's,
matplotlib's, ``concurrent.futures``'), it would print that handler's
traceback after the line. A stop during start-up leaves the same way, without
the exit handlers: nothing of the run is open yet, and Python may otherwise end
with SIGINT's own status instead of 130 (seen with the interrupt raised while
TensorFlow loads).
"""

import os
import signal
import sys

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _leave_at_once(signum, frame) -> None:
  """A signal while the process exits: exit now, with 128 + its number."""
  del frame
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, RuntimeError, ValueError):  # Closed, or cut in a write.
      pass
  os._exit(128 + signum)  # pylint: disable=protected-access


def _exit_quietly_on_signals() -> None:
  for s in _STOP_SIGNALS:
    signal.signal(s, _leave_at_once)


def _stopped_during_start_up() -> None:
  """Ctrl-C before the trainer's own handler is in place: one line, status 130."""
  _exit_quietly_on_signals()
  print('Stopped during start-up, before training began. Run the same command to '
        'start again.', file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(130)  # pylint: disable=protected-access


try:  # Ctrl-C may come while these load.
  from absl import app
  from absl import logging

  from distral_tf import cli
except KeyboardInterrupt:
  _stopped_during_start_up()


def main(argv):
  if not any(a.startswith(('--verbosity', '--v=', '-v')) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
  return cli.main(argv)


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  try:
    app.run(main, flags_parser=cli.parse_flags)
  except KeyboardInterrupt:  # While TensorFlow loads, before the trainer's handler.
    _stopped_during_start_up()
  finally:  # The command has ended (and said so): the interpreter exits next.
    _exit_quietly_on_signals()
