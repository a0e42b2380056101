"""Command-line flags shared by every trainer, their validation, and dispatch.

``python -m distral_tf.launch`` parses these flags (and those each trainer and
level-set module defines) and calls ``run``. A bad flag or value is one line on
stderr and exit status 2 (``errors.UsageError``), never a traceback.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Iterator, Sequence, Union

from absl import flags

from distral_tf import errors
from distral_tf import run_dir
from distral_tf.agents import config as agents_config  # Defines the deep trainers' flags.
from distral_tf.envs import level_sets
from distral_tf.tabular import config as tabular_config  # Defines the tabular flags.

TABULAR_ALGORITHMS = ('soft_q', 'distral_soft_q')
DEEP_ALGORITHMS = ('a3c', 'a3c_multitask', 'a3c_2col', 'kl_1col', 'kl_ent_1col',
                   'kl_2col', 'kl_ent_2col')
ALGORITHMS = TABULAR_ALGORITHMS + DEEP_ALGORITHMS
# Largest budget accepted: 10^13 frames per task is 20,000 times the paper's 5e8
# (and far from where int64 counters overflow).
MAX_ENV_STEPS_PER_TASK = 10**13

FLAGS = flags.FLAGS

flags.DEFINE_enum('level_set', 'two_rooms', level_sets.LEVEL_SET_NAMES,
                  'Which set of tasks to train on.')
flags.DEFINE_enum('algorithm', 'kl_ent_2col', ALGORITHMS,
                  'Tabular (soft_q, distral_soft_q; two_rooms only) or one of the '
                  "paper's seven deep algorithms.")
flags.DEFINE_integer('seed', 0, 'Random seed of the run (tasks, networks, environments).')
flags.DEFINE_integer('num_tasks', None, 'Number of tasks; default: the level set\'s own.')
flags.DEFINE_integer('env_steps_per_task', None,
                     'Budget in environment frames per task (action repeat included); '
                     'default depends on the algorithm family and level set.')
flags.DEFINE_string('logdir', None,
                    'Log directory; default runs/<level_set>/<algorithm>/seed<seed>.')
flags.DEFINE_float('learning_rate', None, 'Initial learning rate; default per family.')
flags.DEFINE_float('discount', None, 'Discount gamma; default per family.')
flags.DEFINE_float('alpha', None,
                   'alpha = c_KL / (c_KL + c_Ent); default: the algorithm\'s own '
                   '(1 for KL and distral_soft_q, 0.5 for KL+ent, 0 for A3C).')
flags.DEFINE_float('entropy_cost', None,
                   'Total regularisation cost 1/beta = c_KL + c_Ent (the entropy '
                   'cost of the A3C baselines); default per family.')

level_sets.import_level_set_modules()

# What a trainer takes: the flags read once.
RunConfig = Union[agents_config.DeepConfig, tabular_config.TabularConfig]


def default_logdir(level_set: str, algorithm: str, seed: int) -> str:
  return os.path.join('runs', level_set, algorithm, f'seed{seed}')


def validate_common(fv: flags.FlagValues) -> None:
  """Checks flags shared by every trainer; raises ``errors.UsageError``.

  Every float flag of this package must be finite: none takes infinity or NaN
  as a meaning (``--learning_rate=inf`` would train on NaN, ``--entropy_cost=inf``
  divide by it).
  """
  for module, module_flags in fv.flags_by_module_dict().items():
    if not module.startswith(run_dir.PROJECT_PACKAGE):
      continue
    for flag in module_flags:
      if isinstance(flag.value, float) and not math.isfinite(flag.value):
        raise errors.UsageError(f'--{flag.name} must be a finite number, got '
                                f'{flag.value}')
  if fv.algorithm in TABULAR_ALGORITHMS and fv.level_set != 'two_rooms':
    raise errors.UsageError(
        f'--algorithm={fv.algorithm} is tabular and runs on --level_set=two_rooms '
        f'only; for {fv.level_set} choose one of: {", ".join(DEEP_ALGORITHMS)}')
  positive = dict(num_tasks=fv.num_tasks, env_steps_per_task=fv.env_steps_per_task,
                  learning_rate=fv.learning_rate, entropy_cost=fv.entropy_cost)
  for name, value in positive.items():
    if value is not None and not value > 0:
      raise errors.UsageError(f'--{name} must be > 0, got {value}')
  if fv.env_steps_per_task is not None and fv.env_steps_per_task > MAX_ENV_STEPS_PER_TASK:
    raise errors.UsageError(f'--env_steps_per_task must be at most '
                            f'{MAX_ENV_STEPS_PER_TASK:.0e}, got {fv.env_steps_per_task}')
  if fv.discount is not None and not 0.0 <= fv.discount <= 1.0:
    raise errors.UsageError(f'--discount must be in [0, 1], got {fv.discount}')
  if fv.alpha is not None and not 0.0 <= fv.alpha <= 1.0:
    raise errors.UsageError(f'--alpha must be in [0, 1], got {fv.alpha}')
  if fv.seed < 0:
    raise errors.UsageError(f'--seed must be >= 0, got {fv.seed}')


def check_before_training(fv: flags.FlagValues) -> tuple[RunConfig, list[str]]:
  """Every check that needs no TensorFlow: flags, then the log directory.

  Sets ``--logdir`` when not given, then reads the flags once into the
  trainer's configuration: for a deep algorithm with its level set's
  defaults merged (``fv`` otherwise left as it is), so that it compares with
  a saved run's ``config.json``. Creates the log directory and holds it for
  this process (``run_dir.hold``; ``run`` gives it up when the run ends), then
  checks that it holds no other run. Returns the configuration and notes for
  the first lines of the run (the defaults chosen for this machine). Raises
  ``errors.UsageError``.
  """
  validate_common(fv)
  if fv.logdir is None:
    fv.logdir = default_logdir(fv.level_set, fv.algorithm, fv.seed)
  if fv.algorithm in TABULAR_ALGORITHMS:
    config, notes = tabular_config.from_flags(fv), []
    may_differ = run_dir.EXECUTION_FLAGS
  else:
    config, notes = agents_config.from_flags(fv)
    may_differ = run_dir.RESUMABLE_FLAGS
  run_dir.prepare(config.logdir)
  if _writes_logdir(config):
    run_dir.hold(config.logdir)  # Until ``run`` ends (or this process does).
  try:
    run_dir.check_same_run(config.logdir, config.run_flags, may_differ)
  except BaseException:
    run_dir.release(config.logdir)
    raise
  return config, notes


def _writes_logdir(config: RunConfig) -> bool:
  """Whether this process writes the log directory: all but a cluster's servers.

  ``--cluster=tf_config`` on a ps or worker host serves and writes nothing;
  several of them may share a machine and a ``--logdir`` with the chief.
  """
  if getattr(config, 'cluster', '') != 'tf_config':
    return True
  from distral_tf.distributed import topology  # pylint: disable=g-import-not-at-top
  return topology.read_tf_config()[1].job == 'chief'


def run(fv: flags.FlagValues = FLAGS) -> dict:
  """Runs the trainer the flags select and returns its summary.

  The tabular trainer (``tabular/train.py``); for a deep algorithm the local
  trainer (``agents/train.py``) or, with ``--cluster``, the cluster trainer
  (``distributed/cluster.py``). Each takes the configuration, not the flags.
  The log directory is this process's from the checks to the end of the run
  (``run_dir.hold``): a second process given it is refused.
  """
  config, notes = check_before_training(fv)
  try:
    if isinstance(config, tabular_config.TabularConfig):
      from distral_tf.tabular import train  # pylint: disable=g-import-not-at-top
      return train.run(config)
    # pylint: disable=g-import-not-at-top
    with native_stderr_hidden():
      if config.cluster:
        from distral_tf.distributed import cluster as trainer
      else:
        from distral_tf.agents import train as trainer
    # pylint: enable=g-import-not-at-top
    for note in notes:
      print(note, flush=True)
    return trainer.run(config)
  finally:
    run_dir.release(config.logdir)


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
  """Hides what native code writes to stderr (TensorFlow's start-up lines: no GPU
  driver found) while importing it, when ``TF_CPP_MIN_LOG_LEVEL`` is 3.

  Python's own errors are raised after the context, so they still show.
  """
  if os.environ.get('TF_CPP_MIN_LOG_LEVEL') != '3':
    yield
    return
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def run_from_args(argv: Sequence[str]) -> dict:
  """Parses ``argv`` (flags only, no program name) into FLAGS and runs (for tests)."""
  FLAGS.unparse_flags()
  FLAGS(['distral_tf'] + list(argv))
  return run(FLAGS)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is one line on stderr and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)


@errors.exit_on_usage_error
def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {" ".join(argv[1:])}; flags look '
                            'like --name=value (see --helpfull)')
  run(FLAGS)
