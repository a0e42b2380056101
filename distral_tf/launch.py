r"""Entry point: ``python -m distral_tf.launch [--flags]``.

Trains one algorithm on one level set and writes ``episodes.csv``,
``config.json``, ``summary.json`` and a learning-curve PNG into ``--logdir``.
With no flags it trains KL+ent_2col on the two-room grid world.

  python -m distral_tf.launch --level_set=two_rooms --algorithm=distral_soft_q \
      --seed=0 --env_steps_per_task=20000 --logdir=/tmp/run

Bad flags print one line naming the valid choices and exit with status 2.
TensorFlow's own start-up and INFO lines are hidden unless ``--verbosity=0``
(or ``TF_CPP_MIN_LOG_LEVEL``) asks for them.
"""

import os
import sys

from absl import app
from absl import logging

from distral_tf import cli


def main(argv):
  if not any(a.startswith(('--verbosity', '--v=', '-v')) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
  return cli.main(argv)


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  app.run(main, flags_parser=cli.parse_flags)
