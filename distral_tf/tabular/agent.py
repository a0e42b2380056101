"""The tabular agents on the two-room world: soft Q-learning and Distral (eqs. 2-5).

``soft_q``: one soft Q table per task against a fixed uniform prior, i.e.
entropy-regularised soft Q-learning of separate policies.

``distral_soft_q``: alternating optimisation of objective (1). Each iteration
every task acts for ``rollout_length`` steps with its Boltzmann policy (eq. 4)
against the prior pi_0^alpha and learns by sample-based soft Q-learning (eqs.
2-3); then pi_0 is re-fitted as the maximum-likelihood mixture of the tasks'
discounted state-action frequencies plus a pseudocount per action (eq. 5).

Every task is a copy of ``envs.two_rooms.BatchTwoRooms``; all tasks step
together, so one numpy call serves the n tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from distral_tf.envs import two_rooms
from distral_tf.tabular import soft_q

AGENTS = ('soft_q', 'distral_soft_q')

# (task index, env steps of that task, return, length, policy) -> None.
EpisodeCallback = Callable[[int, int, float, int, str], None]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Hyper-parameters of a tabular run; the defaults of every tabular flag."""
  agent: str = 'distral_soft_q'
  alpha: float = 1.0              # c_KL / (c_KL + c_Ent).
  entropy_cost: float = 0.01      # 1 / beta = c_KL + c_Ent.
  discount: float = 0.95
  learning_rate: float = 0.5
  rollout_length: int = 10        # Steps per task per soft Q-learning iteration.
  pseudocount: float = 1.0        # Per action and state, in the distillation.
  env_steps_per_task: int = 20_000
  eval_interval: int = 1_000      # Env steps per task between evaluations of pi_0.
  eval_episodes: int = 4          # Sampled episodes of pi_0 per task per evaluation.
  seed: int = 0

  @property
  def beta(self) -> float:
    return 1.0 / self.entropy_cost

  @property
  def distral(self) -> bool:
    return self.agent == 'distral_soft_q'


@dataclasses.dataclass
class AgentState:
  """What a run learns: Q tables, pi_0 and the visit frequencies it is fitted to."""
  q: np.ndarray        # [n, S, A]
  pi0: np.ndarray      # [S, A]
  visits: np.ndarray   # [n, S] discounted state-visit frequencies d_i(s).
  env_steps: int = 0   # Per task.


def _sample(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
  """One action per row of ``probs`` ([n, A])."""
  u = rng.random((probs.shape[0], 1))
  return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)


def evaluate_pi0(pi0: np.ndarray, env_config: two_rooms.TwoRoomsConfig,
                 goal_cells, episodes: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Plays ``episodes`` episodes of pi_0 (actions sampled) on every goal.

  Returns ``(returns, lengths)``, each ``[n, episodes]``.
  """
  goals = np.repeat(np.asarray(goal_cells), episodes)
  env = two_rooms.BatchTwoRooms(env_config, goals, seed=int(rng.integers(2**31)))
  returns = np.zeros(len(goals))
  lengths = np.zeros(len(goals), dtype=np.int64)
  running = np.ones(len(goals), dtype=bool)
  while running.any():
    actions = _sample(rng, pi0[env.states])
    rewards, _, terminal, truncated = env.step(actions)
    returns += np.where(running, rewards, 0.0)
    lengths += running
    running &= ~(terminal | truncated)
  return returns.reshape(-1, episodes), lengths.reshape(-1, episodes)


def train(config: AgentConfig, env_config: two_rooms.TwoRoomsConfig, goal_cells,
          on_episode: EpisodeCallback | None = None,
          on_iteration: Callable[[AgentState], None] | None = None) -> AgentState:
  """Trains ``config.agent`` on one task per goal; returns the learned tables.

  Each finished training episode of task i's acting policy pi_i is reported as
  ``on_episode(i, env_steps, return, length, 'task')``; every
  ``eval_interval`` steps the distral agent's pi_0 plays ``eval_episodes``
  sampled episodes per task, reported with policy ``'distilled'``.
  """
  on_episode = on_episode or (lambda *args: None)
  layout = two_rooms.layout_of(env_config)
  n = len(goal_cells)
  num_states, num_actions = layout.num_states, two_rooms.NUM_ACTIONS
  rng = np.random.default_rng(config.seed)
  eval_rng = np.random.default_rng([config.seed, 1])  # Evaluations leave training as is.
  env = two_rooms.BatchTwoRooms(env_config, goal_cells, seed=int(rng.integers(2**31)))
  state = AgentState(q=np.zeros((n, num_states, num_actions)),
                     pi0=np.full((num_states, num_actions), 1.0 / num_actions),
                     visits=np.zeros((n, num_states)))
  log_pi0 = np.log(state.pi0)
  alpha, beta, gamma = config.alpha, config.beta, config.discount
  tasks = np.arange(n)
  ep_return = np.zeros(n)
  ep_length = np.zeros(n, dtype=np.int64)
  evaluate = config.distral and config.eval_episodes > 0
  next_eval = config.eval_interval
  while state.env_steps < config.env_steps_per_task:
    steps = min(config.rollout_length, config.env_steps_per_task - state.env_steps)
    for _ in range(steps):  # One soft Q-learning iteration: a rollout per task.
      s = env.states
      probs = soft_q.boltzmann_policy(state.q[tasks, s], log_pi0[s], alpha, beta)
      a = _sample(rng, probs)
      state.visits[tasks, s] += gamma ** ep_length
      r, s_next, terminal, truncated = env.step(a)
      soft_q.soft_q_update(state.q, s, a, r, s_next, terminal, log_pi0, alpha,
                           beta, gamma, config.learning_rate)
      state.env_steps += 1
      ep_return += r
      ep_length += 1
      for i in np.flatnonzero(terminal | truncated):
        on_episode(int(i), state.env_steps, float(ep_return[i]), int(ep_length[i]),
                   'task')
        ep_return[i], ep_length[i] = 0.0, 0
    if config.distral:  # Distillation: eq. (5) with the task policies fixed.
      policies = soft_q.boltzmann_policy(state.q, log_pi0[None], alpha, beta)
      state.pi0 = soft_q.distill(state.visits, policies, config.pseudocount)
      log_pi0 = np.log(state.pi0)
      done = state.env_steps >= config.env_steps_per_task
      if evaluate and (state.env_steps >= next_eval or done):
        returns, lengths = evaluate_pi0(state.pi0, env_config, goal_cells,
                                        config.eval_episodes, eval_rng)
        for i in range(n):
          for ret, length in zip(returns[i], lengths[i]):
            on_episode(i, state.env_steps, float(ret), int(length), 'distilled')
        next_eval += config.eval_interval
    if on_iteration is not None:
      on_iteration(state)
  return state
