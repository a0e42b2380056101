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
"""

import os
import sys


def _stopped_during_start_up() -> None:
  """Ctrl-C before the trainer's own handler is in place: one line, status 130."""
  print('Stopped during start-up, before training began. Run the same command to '
        'start again.', file=sys.stderr, flush=True)
  sys.exit(130)


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
