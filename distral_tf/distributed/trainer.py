"""The chief's side of a cluster run: learner threads, books, checkpoints.

``ClusterTrainer`` is the local trainer (``agents/train.py``) with the
learner on the cluster and the actors on the worker hosts: built by the same
``agents/builders.py``. The worker hosts' actors (``actor_host.py``) keep
their unrolls on their own servers and report them to
``actor_service.ActorService`` here; the chief's learner threads
(``steps.StepThread``) schedule a gradient step for each on the workers
(``steps.StepScheduler``), which take the unroll where it is. The evaluator
of pi_0 acts here with ``remote.PolicyMirror``'s local copy of the network,
copied from the ps tasks as each evaluation starts. The same
``agents/run_loop.py`` writes the log directory as in a local run; this
module adds ``cluster.json``, takes consistent checkpoints (no step runs while
one is written) and raises ``ClusterFailure`` when a parameter server is lost.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from distral_tf import results
from distral_tf.agents import builders
from distral_tf.agents import config as config_lib
from distral_tf.agents import evaluator as evaluator_lib
from distral_tf.agents import run_loop
from distral_tf.distributed import actor_rpc
from distral_tf.distributed import actor_service
from distral_tf.distributed import local_cluster
from distral_tf.distributed import projection
from distral_tf.distributed import remote
from distral_tf.distributed import steps as steps_lib
from distral_tf.distributed import tickets as tickets_lib
from distral_tf.distributed import topology

CLUSTER_FILE = 'cluster.json'
JOIN_TIMEOUT_SECS = 60.0
# How often a wait of the shutdown (or of a checkpoint) looks for a lost ps.
CHECK_SECS = 0.25
# Gradient steps in flight per worker: one running, one on its way.
LEARNER_THREADS_PER_WORKER = 2


class ClusterFailure(RuntimeError):
  """A ps task (or the connection to it) is gone; the run resumes when rerun."""


def wait_checking(blocking: Callable[[], None], check: Callable[[], None],
                  poll: float = CHECK_SECS) -> None:
  """Runs ``blocking`` and returns when it does, running ``check`` every ``poll``
  seconds meanwhile; an error of ``check`` is raised at once (``blocking`` is
  left to its daemon thread), one of ``blocking`` when it returns.

  The coordinator's waits (its ``join``) can last forever once a ps is gone:
  its failure handling keeps waiting for the cluster to answer.
  """
  outcome: list[BaseException | None] = []

  def run() -> None:
    try:
      blocking()
      outcome.append(None)
    except BaseException as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=run, daemon=True, name='WaitChecking')
  thread.start()
  while True:
    thread.join(poll)
    if not thread.is_alive():
      break
    check()
  if outcome[0] is not None:
    raise outcome[0]


class ClusterTrainer:
  """The chief's actor service, learner threads, evaluator, policy copy, monitor."""

  def __init__(self, config: config_lib.DeepConfig, setup: builders.Setup, cluster,
               strategy, coordinator, launcher=None):
    self.config, self.run_setup = config, setup
    self.level_set = setup.level_set
    self.cluster, self.strategy, self.coordinator = cluster, strategy, coordinator
    self.launcher = launcher
    self.eval_envs = []
    self.actors: actor_service.ActorService | None = None
    self.workers, self.threads = [], []
    self.stop_event = threading.Event()
    self._variable_layout: dict[str, Any] | None = None  # See ``variable_layout``.
    self.interrupted = False  # Set by ``train`` when stopped by Ctrl-C.

  # -- building -----------------------------------------------------------------

  def setup(self) -> None:
    """The learner on the ps tasks, its local copy, the actor service, the workers."""
    config, level_set = self.config, self.level_set
    num_tasks = len(level_set.tasks)
    spec = builders.observation_spec(config, level_set)
    with self.strategy.scope():
      self.learner = builders.build_agent(config, self.run_setup, spec)
    network = self.learner.network
    local = builders.build_network(config, self.run_setup, spec)
    self.mirror = remote.PolicyMirror(network, local, self.learner.optimizer.iterations)
    self.state = builders.restore(config, level_set, self.learner)
    self.mirror.refresh()
    self._frames_at_start = self.state.frames.numpy().copy()
    self.loop = run_loop.RunLoop(config, level_set.name, level_set.task_names,
                                 self.state.frames.numpy(),
                                 float(self.state.wall_time.numpy()))
    self.progress, self.recorder = self.loop.progress, self.loop.recorder
    num_workers = len(self.cluster.workers)
    self.tickets = tickets_lib.Tickets(num_workers)
    self.actors = actor_service.ActorService(
        topology.actor_address(self.cluster), config, level_set.frames_per_step,
        self.mirror, self.progress, self.recorder, num_workers, self.tickets,
        host_alive=lambda host: topology.is_reachable(self.cluster.workers[host]))
    self.mirror.on_refresh = self.actors.publish
    self.scheduler = steps_lib.StepScheduler(
        self.learner, self.strategy, self.coordinator, num_workers, num_tasks,
        self.actors.run_id, actor_rpc.unroll_structure(local), config.unroll_length,
        config.max_policy_lag)
    if self.launcher is not None:
      self.launcher.on_restart = self._on_restart
    self._make_workers()
    self.write_cluster_file()

  def _on_restart(self, role: topology.Role) -> None:
    self.scheduler.mark_restart(role.index)
    self.actors.mark_restart(role.index)

  def _make_workers(self) -> None:
    """The actor service, the evaluator and the learner threads feeding the cluster."""
    self.workers, self.eval_envs = builders.make_workers(
        self.config, self.run_setup, [], self.mirror.network, None,
        self.progress, self.recorder, int(self.state.next_eval.numpy()), 0,
        remote_actors=[self.actors], before_evaluation=self.mirror.refresh)
    self.workers += [
        steps_lib.StepThread(self.scheduler, self.tickets, self.progress,
                             lambda: self.actors.done)
        for _ in range(self.num_learner_threads)]
    self.actors.start()

  @property
  def num_learner_threads(self) -> int:
    """Steps kept in flight: ``LEARNER_THREADS_PER_WORKER`` per worker at least."""
    return max(self.config.learner_threads,
               LEARNER_THREADS_PER_WORKER * len(self.cluster.workers))

  # -- running ------------------------------------------------------------------

  def start(self) -> None:
    """Starts the actor-service, learner and evaluator threads."""
    self.threads = [threading.Thread(target=w.run, args=(self.stop_event,), daemon=True,
                                     name=f'{type(w).__name__}-{i}')
                    for i, w in enumerate(self.workers)]
    for th in self.threads:
      th.start()

  def train(self) -> dict:
    """Trains to the budget (or ``--max_seconds``, or Ctrl-C); returns the summary.

    After Ctrl-C a checkpoint is saved and ``interrupted`` is True.
    """
    workers = len(self.cluster.workers)
    self.loop.announce(
        self.config.workers_per_task,
        f' with {len(self.cluster.ps)} ps and {workers} worker tasks (environments on '
        f'the worker hosts, served on {self.actors.address})')
    self.loop.start_clock()
    self.start()
    try:
      # Throughput from the first progress line on.
      interrupted = self.loop.train(
          self.workers, self.threads, self.stop_event, self.learner, self.save,
          steady=lambda: True, before_tick=self._check_servers,
          after_log=self.write_cluster_file, scalars=self.actors.scalars)
    except Exception as e:  # pylint: disable=broad-except
      if remote.is_cluster_failure(e):
        self.stop_event.set()
        raise ClusterFailure(self._failure_message(e)) from None
      raise
    failure = self.shutdown()
    self.save(self.loop.wall_time())
    if failure is not None:
      raise failure
    return self._finish(interrupted)

  def _check_servers(self) -> None:
    if self.launcher is not None and self.launcher.lost_ps:
      self.stop_event.set()
      raise ClusterFailure(self._failure_message())

  def _check_ps(self) -> None:
    """Raises ``ClusterFailure`` once a ps is gone: the check of the chief's
    waits on steps (a checkpoint's, the shutdown's).

    The coordinator may take a lost ps for a failure of the step's worker and
    hold the step while it waits up to an hour for that worker to recover, so
    these waits ask the launcher's supervisor or, without one (``tf_config``),
    each ps's port.
    """
    self._check_servers()
    if self.launcher is None:
      ps = [topology.Role('ps', i) for i in range(len(self.cluster.ps))]
      gone = [r for r in ps if not topology.is_reachable(self.cluster.address(r))]
      if gone:
        self.stop_event.set()
        raise ClusterFailure(self._failure_message(lost=gone))

  def _failure_message(self, error: BaseException | None = None,
                       lost: list[topology.Role] | None = None) -> str:
    """What was lost (``lost``, or named in ``error``) and how to resume."""
    if self.launcher is not None:  # Its supervisor names the dead server soon.
      deadline = time.time() + 4 * local_cluster.SUPERVISE_SECS
      while not self.launcher.lost_ps and time.time() < deadline:
        time.sleep(0.1)
    if self.launcher is not None and self.launcher.lost_ps:
      what = f'{topology.describe(self.cluster, self.launcher.lost_ps)} exited'
    elif lost:
      what = f'{topology.describe(self.cluster, lost)} stopped answering'
    else:
      text = str(error)
      named = [r for r in self.cluster.server_roles()
               if f':{topology.split_address(self.cluster.address(r))[1]}' in text]
      what = (f'lost {topology.describe(self.cluster, named)}' if named else
              f'lost a task of the cluster ({remote.first_line(error)})')
    latest = self.state.manager.latest_checkpoint if self.state.manager else None
    if latest:
      then = (f'running the same command again resumes from the last checkpoint, '
              f'{latest}')
    else:
      then = 'no checkpoint was saved yet: running the same command again starts over'
    return f'{what}; the variables on the parameter servers are lost; {then}'

  def shutdown(self) -> BaseException | None:
    """Stops the threads and waits for every scheduled gradient step.

    Every wait looks for a lost ps (``_check_ps``, and the threads' errors) as
    it goes, so that a lost ps ends the run within seconds.

    Returns:
      The first error of an actor or of a step, if any (to raise once saved).

    Raises:
      ClusterFailure: a ps task was lost (nothing can be saved then).
    """
    self.stop_event.set()
    deadline = time.monotonic() + JOIN_TIMEOUT_SECS
    for th in self.threads:
      while th.is_alive() and time.monotonic() < deadline:
        th.join(CHECK_SECS)
        self._check_lost()
    self._check_lost()
    failures = [w.error for w in self.workers if w.error is not None]
    try:
      wait_checking(self.scheduler.join, self._check_ps)
    except ClusterFailure:
      raise
    except Exception as e:  # pylint: disable=broad-except
      failures.append(e)
    lost = [e for e in failures if remote.is_cluster_failure(e)]
    if lost or (self.launcher is not None and self.launcher.lost_ps):
      raise ClusterFailure(self._failure_message(lost[0] if lost else None))
    return failures[0] if failures else None

  def _check_lost(self) -> None:
    """``_check_ps``, and a thread's error that says a task of the cluster is
    gone (which ``shutdown`` raises as ``ClusterFailure`` in any case)."""
    self._check_ps()
    lost = [w.error for w in self.workers
            if w.error is not None and remote.is_cluster_failure(w.error)]
    if lost:
      raise ClusterFailure(self._failure_message(lost[0]))

  def save(self, wall_time: float) -> str:
    """A consistent checkpoint: the frames of exactly the steps applied so far.

    Steps are held back while it is written. Frames acted but not yet trained
    on are not counted; a resumed run collects them again. A ps lost while the
    steps in flight are awaited raises ``ClusterFailure``.
    """
    evaluators = [w for w in self.workers if isinstance(w, evaluator_lib.Evaluator)]
    with self.scheduler.paused(check=self._check_ps):
      frames = (self._frames_at_start +
                self.scheduler.trained_steps * self.level_set.frames_per_step)
      path = self.state.save(frames, evaluators[0].next_eval if evaluators else 0,
                             wall_time)
    self.recorder.flush()
    return path

  def _finish(self, interrupted: bool) -> dict:
    self.loop.writer.close()
    self.write_cluster_file()
    summary = self.loop.finish(
        interrupted, counts=dict(agent_steps=int(self.learner.steps_done.numpy())),
        extra=dict(cluster=self.cluster_stats(),
                   **self.learner.cost_summary(self.level_set.task_names)))
    self.interrupted = interrupted
    return summary

  # -- reporting ----------------------------------------------------------------

  def cluster_stats(self) -> dict:
    stats = dict(num_ps=len(self.cluster.ps), num_workers=len(self.cluster.workers),
                 policy_refreshes=self.mirror.refreshes,
                 policy_bytes=self.mirror.num_bytes,
                 **self.scheduler.worker_stats(), **self.actors.stats())
    if self.launcher is not None:
      stats['worker_restarts'] = self.launcher.worker_restarts()
    return stats

  def variable_layout(self) -> dict[str, Any]:
    """Where the variables are and their bytes: fixed once the learner is built
    (``Learner.__init__`` builds the optimiser's slots), so computed once."""
    if self._variable_layout is not None:
      return self._variable_layout
    network = self.learner.network
    num_tasks = len(self.level_set.tasks)
    self._variable_layout = dict(
        placement=remote.placement(self.learner),
        task_variable_bytes=[sum(remote.variable_bytes(v) for v in network.task_variables(t))
                             for t in range(num_tasks)],
        # What a step of an unroll of every task reads (each actor's is).
        step_variable_bytes=sum(remote.variable_bytes(v) for v in {
            v.ref(): v for t in range(num_tasks)
            for v in network.task_variables(t)}.values()))
    return self._variable_layout

  def write_cluster_file(self) -> None:
    """``cluster.json``: where everything is and what it did, at ``time``."""
    data = dict(cluster=self.cluster.as_dict(), chief_pid=os.getpid(),
                **self.variable_layout(),
                optimizer_iterations=int(self.learner.optimizer.iterations.numpy()),
                frames=int(self.progress.frames.sum()), time=time.time(),
                stats=self.cluster_stats(),
                # CPU seconds of each of the chief's threads (distributed.bench).
                thread_cpu=projection.thread_cpu())
    if self.launcher is not None:
      data['servers'] = self.launcher.describe()
    results.write_json(os.path.join(self.config.logdir, CLUSTER_FILE), data)

  def close(self) -> None:
    """Closes the evaluator's environments (the servers are the launcher's)."""
    self.stop_event.set()
    if self.launcher is not None:
      self.launcher.on_restart = None
    if self.actors is not None:
      self.actors.stop()
    for env in self.eval_envs:
      env.close()
