"""Runs many trainer commands as parallel subprocesses: sweeps and transfer runs.

A run is one ``python -m distral_tf.launch ... --logdir=DIR`` command (a
``RunSpec``). ``run_all`` starts them, at most ``parallel`` at a time, and

* skips runs that are already finished (``summary.json`` with ``"finished":
  true``); an interrupted run is started again with the same command, and the
  trainer resumes it from its checkpoints;
* starts a run only once the runs it ``requires`` have finished (transfer runs
  need the run whose pi_0 they start from);
* keeps going when a run fails: the command's output goes to
  ``launch_stdout.log`` / ``launch_stderr.log`` in the run's log directory
  (appended to, so resumed attempts keep their history) and a failure writes
  ``failure.txt`` there with the exit status and the tail of stderr;
* prints a progress line whenever the counts change;
* takes its runs with it when it dies, however it dies (``_child_setup``):
  each gets SIGTERM, saves a checkpoint and stops, so that the next attempt
  does not meet them still running (each run also holds its log directory,
  ``run_dir.hold``, and refuses to share it).

The grid of a hyperparameter sweep (``sweep_specs``) lives here too, so that the
sweep, transfer and reproduction commands share one way of laying out runs. A
sweep's algorithms are the entries of ``analysis`` (the paper's seven and their
variants, e.g. ``kl_ent_2col_adaptive``): each has its own directories and is
launched with its algorithm and switches.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable, Sequence

from absl import app
from absl import flags

from distral_tf import errors
from distral_tf import results
from distral_tf.experiments import analysis

LAUNCH_MODULE = 'distral_tf.launch'
STDOUT_LOG = 'launch_stdout.log'
STDERR_LOG = 'launch_stderr.log'
FAILURE_FILE = 'failure.txt'
TAIL_LINES = 30
# Seconds that interrupted runs get to save a checkpoint before they are killed.
STOP_GRACE_SECONDS = 180

# Default sweep grid: 3 entropy costs x 3 initial learning rates x 4 seeds (paper,
# appendix B.2: 36 runs per algorithm). The paper's values were lost from our copy
# of its text; these bracket the usual A3C settings on DeepMind Lab (entropy cost
# about 1e-3 to 1e-2, RMSProp learning rate about 1e-4 to 1e-3).
DEFAULT_ENTROPY_COSTS = (1e-3, 3e-3, 1e-2)
DEFAULT_LEARNING_RATES = (1e-4, 3e-4, 1e-3)
DEFAULT_NUM_SEEDS = 4

# Flags of the trainer that a sweep sets itself for every run.
SWEEP_FLAGS = ('level_set', 'algorithm', 'seed', 'logdir', 'learning_rate',
               'entropy_cost', 'env_steps_per_task')


# Linux's prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
# Sent to a run whose scheduler died: the trainer saves a checkpoint on SIGTERM
# and exits, as it does when a batch system stops it.
PARENT_DEATH_SIGNAL = signal.SIGTERM


def _libc_prctl() -> Callable[..., int] | None:
  """libc's ``prctl``, loaded before any child is forked (None off Linux)."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    return ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None


_PRCTL = _libc_prctl()


def _child_setup(parent_pid: int) -> Callable[[], None]:
  """What a run's child does between fork and exec (``Popen(preexec_fn=...)``).

  SIGINT goes back to its default disposition: a scheduler started in the
  background by a shell ignores it, and the run would inherit that.

  The run dies with its scheduler. Runs are started in sessions of their own
  (so that a Ctrl-C reaches the scheduler alone, which interrupts each run
  once), so nothing else would stop them when the scheduler is killed
  (``kill -9``, the out-of-memory killer): they would go on training beside
  the runs of the next attempt. The kernel's parent-death signal
  (``prctl(PR_SET_PDEATHSIG)``) is chosen over a process group with a
  watchdog because it needs no process or thread of ours to survive the
  scheduler: the kernel sends ``PARENT_DEATH_SIGNAL`` when the parent exits,
  however it exits. The signal fires when the *thread* that started the child
  ends, so ``run_all`` starts every run from the thread that calls it and
  waits in. A parent that died between fork and this call is caught by
  comparing the parent's pid.
  """

  def setup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _PRCTL is not None:
      _PRCTL(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
      if os.getppid() != parent_pid:  # The scheduler died before the call.
        os.kill(os.getpid(), PARENT_DEATH_SIGNAL)

  return setup


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One trainer command: its flags (``--logdir`` among them) and prerequisites."""
  logdir: str
  args: tuple[str, ...]
  # Log directories of runs that must be finished before this one starts.
  requires: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Failure:
  logdir: str
  reason: str
  stderr_tail: str = ''


@dataclasses.dataclass
class Outcome:
  """What ``run_all`` did."""
  total: int = 0
  skipped: int = 0           # already finished before this call
  completed: int = 0         # finished during this call
  failures: list[Failure] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.failures


def default_launch_command() -> list[str]:
  return [sys.executable, '-m', LAUNCH_MODULE]


def is_finished(logdir: str) -> bool:
  """Whether the run in ``logdir`` wrote ``summary.json`` with ``"finished": true``."""
  try:
    with open(os.path.join(logdir, results.SUMMARY_FILE)) as f:
      return json.load(f).get('finished') is True
  except (OSError, ValueError, AttributeError):
    return False


def format_value(x: float) -> str:
  """A float as it appears in flags and directory names (``0.0003``, ``1e-05``)."""
  return f'{x:g}'


def setting_name(entropy_cost: float, learning_rate: float) -> str:
  return f'ent{format_value(entropy_cost)}_lr{format_value(learning_rate)}'


def sweep_logdir(sweep_dir: str, level_set: str, algorithm: str,
                 entropy_cost: float, learning_rate: float, seed: int) -> str:
  """``<sweep_dir>/<level_set>/<algorithm>/ent<E>_lr<LR>/seed<S>`` (an entry's name)."""
  return os.path.join(sweep_dir, level_set, algorithm,
                      setting_name(entropy_cost, learning_rate), f'seed{seed}')


def check_extra_args(extra_args: Sequence[str],
                     reserved: Iterable[str] = SWEEP_FLAGS) -> None:
  """Extra trainer flags must look like ``--name[=value]`` and not be set by us.

  Nor may they be a switch that makes an entry (``analysis.SWITCHES``): those
  runs are that entry's, named as the algorithm, in its own directories.
  """
  reserved = set(reserved)
  for arg in extra_args:
    if not arg.startswith('--'):
      raise errors.UsageError(
          f'extra trainer flags go after "--" and look like --name=value, got {arg!r}')
    name = arg[2:].split('=', 1)[0]
    if name in reserved or (name.startswith('no') and name[2:] in reserved):
      raise errors.UsageError(
          f'--{name} is set by this command for every run; use its own flag instead')
    switch = name[2:] if name.startswith('no') and name[2:] in analysis.SWITCHES else name
    if switch in analysis.SWITCHES:
      entries = [e.name for e in analysis.VARIANTS if switch in e.switches]
      raise errors.UsageError(
          f'--{name}: runs with --{switch} are those of {", ".join(entries)}; name that '
          'as the algorithm instead')


def sweep_specs(sweep_dir: str, level_set: str, algorithms: Sequence[str],
                entropy_costs: Sequence[float], learning_rates: Sequence[float],
                seeds: Sequence[int], env_steps_per_task: int | None = None,
                extra_args: Sequence[str] = ()) -> list[RunSpec]:
  """Every run of the grid algorithms x entropy costs x learning rates x seeds.

  ``algorithms`` are entries (``analysis.ENTRIES``): a run goes to the entry's
  directory and gets its algorithm and switches (``analysis.launch_args``).
  Ordered by seed first: a sweep stopped part way (they are resumable, and
  long) has every algorithm and setting at its first seeds.
  """
  check_extra_args(extra_args)
  specs = []
  for seed in seeds:
    for algorithm in algorithms:
      for entropy_cost in entropy_costs:
        for learning_rate in learning_rates:
          logdir = sweep_logdir(sweep_dir, level_set, algorithm, entropy_cost,
                                learning_rate, seed)
          args = [f'--level_set={level_set}', *analysis.launch_args(algorithm),
                  f'--seed={seed}', f'--entropy_cost={format_value(entropy_cost)}',
                  f'--learning_rate={format_value(learning_rate)}']
          if env_steps_per_task is not None:
            args.append(f'--env_steps_per_task={env_steps_per_task}')
          args += list(extra_args) + [f'--logdir={logdir}']
          specs.append(RunSpec(logdir=logdir, args=tuple(args)))
  return specs


def _tail(path: str, offset: int, lines: int = TAIL_LINES) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      text = f.read().decode('utf-8', errors='replace')
  except OSError:
    return ''
  return '\n'.join(text.rstrip('\n').splitlines()[-lines:])


class _Process:
  """A started run: its process and where its stderr of this attempt begins."""

  def __init__(self, spec: RunSpec, command: Sequence[str]):
    self.spec = spec
    self.start_time = time.time()
    self.command = list(command) + list(spec.args)
    os.makedirs(spec.logdir, exist_ok=True)
    self.stderr_path = os.path.join(spec.logdir, STDERR_LOG)
    self._out = open(os.path.join(spec.logdir, STDOUT_LOG), 'ab')
    self._err = open(self.stderr_path, 'ab')
    self.stderr_offset = self._err.tell()
    # A session of its own: Ctrl-C reaches the scheduler only, which then
    # interrupts each run exactly once (the trainer checkpoints on SIGINT).
    # The run dies with the scheduler (``_child_setup``).
    self.popen = subprocess.Popen(self.command, stdout=self._out, stderr=self._err,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=_child_setup(os.getpid()))

  def close(self) -> None:
    self._out.close()
    self._err.close()

  def interrupt(self) -> None:
    if self.popen.poll() is None:
      self.popen.send_signal(signal.SIGINT)

  def wait_or_kill(self, deadline: float) -> None:
    try:
      self.popen.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      self.popen.kill()
      self.popen.wait()
    self.close()


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def _record_failure(proc: _Process, reason: str) -> Failure:
  tail = _tail(proc.stderr_path, proc.stderr_offset)
  text = (f'command: {" ".join(proc.command)}\n{reason}\n'
          f'--- last lines of {STDERR_LOG} ---\n{tail}\n')
  with open(os.path.join(proc.spec.logdir, FAILURE_FILE), 'w') as f:
    f.write(text)
  return Failure(logdir=proc.spec.logdir, reason=reason, stderr_tail=tail)


def run_all(specs: Sequence[RunSpec], launch_command: Sequence[str] | None = None,
            parallel: int = 1, poll_seconds: float = 0.2, name: str = 'runs',
            log: Callable[[str], None] = print,
            on_finished: Callable[[RunSpec], None] | None = None) -> Outcome:
  """Runs every unfinished spec, at most ``parallel`` at a time; see module doc.

  Returns the outcome; a failed run does not stop the others. Ctrl-C (or
  SIGTERM) sends SIGINT to the running commands, gives them
  ``STOP_GRACE_SECONDS`` to checkpoint and exit (they resume when started
  again), and raises ``KeyboardInterrupt``. ``on_finished(spec)`` is called
  as each run finishes.
  """
  if parallel < 1:
    raise errors.UsageError(f'--parallel must be >= 1, got {parallel}')
  logdirs = [s.logdir for s in specs]
  if len(set(logdirs)) != len(logdirs):
    raise ValueError('two runs share a log directory')
  command = list(launch_command or default_launch_command())
  outcome = Outcome(total=len(specs))
  finished = {s.logdir for s in specs if is_finished(s.logdir)}
  outcome.skipped = len(finished)
  pending = [s for s in specs if s.logdir not in finished]
  failed: set[str] = set()
  running: list[_Process] = []
  last_line = ''
  durations: list[float] = []  # Of the runs finished by this call.

  def progress() -> None:
    nonlocal last_line
    line = (f'[{name}] {len(finished)}/{outcome.total} done, {len(running)} running, '
            f'{len(outcome.failures)} failed')
    if line != last_line:
      left = len(pending) + len(running)
      eta = (f' (about {sum(durations) / len(durations) * left / parallel / 60:.0f} '
             'min left)' if durations and left else '')
      log(line + eta)
      last_line = line

  def fail(logdir: str, failure: Failure) -> None:
    failed.add(logdir)
    outcome.failures.append(failure)
    log(f'[{name}] FAILED {logdir}: {failure.reason}')

  previous_handler = None
  if threading.current_thread() is threading.main_thread():
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    progress()
    while pending or running:
      # Runs whose prerequisites failed (or will never run) cannot start.
      for spec in list(pending):
        blocked = [r for r in spec.requires if r in failed or
                   (r not in logdirs and not is_finished(r))]
        if blocked:
          pending.remove(spec)
          fail(spec.logdir, Failure(spec.logdir, f'requires {blocked[0]}, which '
                                    'did not finish'))
      for spec in list(pending):
        if len(running) >= parallel:
          break
        if all(r in finished or is_finished(r) for r in spec.requires):
          pending.remove(spec)
          running.append(_Process(spec, command))
      if pending and not running:  # Only a cycle of prerequisites is left.
        for spec in pending:
          fail(spec.logdir, Failure(spec.logdir, 'prerequisites form a cycle'))
        pending.clear()
      progress()
      time.sleep(poll_seconds if running else 0)
      for proc in list(running):
        rc = proc.popen.poll()
        if rc is None:
          continue
        running.remove(proc)
        proc.close()
        logdir = proc.spec.logdir
        if rc == 0 and is_finished(logdir):
          finished.add(logdir)
          outcome.completed += 1
          durations.append(time.time() - proc.start_time)
          if os.path.exists(os.path.join(logdir, FAILURE_FILE)):
            os.remove(os.path.join(logdir, FAILURE_FILE))
          if on_finished is not None:
            on_finished(proc.spec)
        elif rc == 0:
          fail(logdir, _record_failure(
              proc, f'exited 0 without writing a finished {results.SUMMARY_FILE}'))
        else:
          fail(logdir, _record_failure(proc, f'exit status {rc}'))
      progress()
  except KeyboardInterrupt:
    log(f'[{name}] interrupted: stopping {len(running)} running command(s); '
        'run the same command again to resume')
    deadline = time.time() + STOP_GRACE_SECONDS
    for proc in running:
      proc.interrupt()
    for proc in running:
      proc.wait_or_kill(deadline)
    raise
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  return outcome


def report_failures(outcome: Outcome, log: Callable[[str], None] = print) -> None:
  """Prints each failed run with the tail of its stderr."""
  for failure in outcome.failures:
    log(f'--- {failure.logdir}: {failure.reason}')
    if failure.stderr_tail:
      log(failure.stderr_tail)
  log(f'{outcome.total} runs: {outcome.skipped} already finished, '
      f'{outcome.completed} finished now, {len(outcome.failures)} failed')


def parse_positive_floats(name: str, values: Sequence[str]) -> list[float]:
  """A list flag's values as floats > 0; raises ``errors.UsageError``."""
  try:
    floats = [float(v) for v in values]
  except ValueError:
    raise errors.UsageError(
        f'--{name} takes comma-separated numbers, got {",".join(values)}') from None
  if not floats or any(not v > 0 for v in floats):
    raise errors.UsageError(f'--{name} must list numbers > 0, got {",".join(values)}')
  return floats


def launch_command_from_flag(value: str) -> list[str]:
  """``--launch_command``: a command line (split like a shell), default the trainer."""
  return shlex.split(value) if value else default_launch_command()


def run_command(main: Callable[[Sequence[str]], int | None]) -> None:
  """``app.run(main)``, where bad flags and ``errors.UsageError`` are one line, exit 2."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(errors.USAGE_EXIT_CODE)

  def wrapped(argv: Sequence[str]) -> None:
    try:
      sys.exit(main(argv) or 0)
    except errors.UsageError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(errors.USAGE_EXIT_CODE)
    except KeyboardInterrupt:
      sys.exit(130)

  app.run(wrapped, flags_parser=parse)
