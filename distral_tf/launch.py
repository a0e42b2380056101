r"""Entry point: ``python -m distral_tf.launch [--flags]``.

Trains one algorithm on one level set and writes ``episodes.csv``,
``config.json``, ``summary.json`` and a learning-curve PNG into ``--logdir``.
With no flags it trains KL+ent_2col on the two-room grid world.

  python -m distral_tf.launch --level_set=two_rooms --algorithm=distral_soft_q \
      --seed=0 --env_steps_per_task=20000 --logdir=/tmp/run

Bad flags print one line naming the valid choices and exit with status 2.
"""

import os

# TensorFlow's C++ start-up messages (no GPU found, CPU instruction sets) say
# nothing to a user of this command; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from distral_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  # Warnings and errors only (--verbosity=0 shows TensorFlow's info lines too).
  flags.FLAGS.set_default('verbosity', -1)
  app.run(cli.main, flags_parser=cli.parse_flags)
