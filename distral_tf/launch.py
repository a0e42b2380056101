r"""Entry point: ``python -m distral_tf.launch [--flags]``.

Trains one algorithm on one level set and writes ``episodes.csv``,
``config.json``, ``summary.json`` and a learning-curve PNG into ``--logdir``.
With no flags it trains KL+ent_2col on the two-room grid world.

  python -m distral_tf.launch --level_set=two_rooms --algorithm=distral_soft_q \
      --seed=0 --env_steps_per_task=20000 --logdir=/tmp/run

Bad flags print one line naming the valid choices and exit with status 2.
"""

from absl import app

from distral_tf import cli

if __name__ == '__main__':
  app.run(cli.main, flags_parser=cli.parse_flags)
