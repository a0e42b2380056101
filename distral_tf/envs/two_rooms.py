"""The two-room grid world of the paper's section 4.1 (Figure 3), as a ``dm_env``.

Two square rooms joined by a one-cell-wide corridor in their middle row::

    ###############
    #.....###.....#
    #.....###.....#
    #S..........G.#      S: starts are drawn in the left room,
    #.....###.....#      G: each task's goal lies in the right room.
    #.....###.....#
    ###############

Actions are 0 stay, 1 up, 2 down, 3 left, 4 right. A step costs
``step_penalty``; a move into a wall leaves the agent in place and costs
``wall_penalty`` instead; entering the goal pays ``goal_reward`` and ends the
episode (``dm_env.termination``). After ``step_limit`` steps the episode is cut
(``dm_env.truncation``, discount 1).

The state is (location, previous action, previous reward), as in the paper. The
deep agents see it as one float32 vector: one-hot(free cell) ++ one-hot(previous
action, zeros at the start of an episode) ++ [previous reward]. The tabular
agents index it as ``cell * NUM_CODES + code`` where ``code`` is 0 at the start
of an episode and ``1 + 2 * previous_action + bumped`` afterwards (the previous
reward is a function of whether the agent bumped, the goal being terminal).

The paper's constants were lost from our copy of its text; ours are in
``TwoRoomsConfig`` (the one place defaults live) and every one is a flag
``--two_rooms_*`` (``envs.two_rooms_tasks``, the level set). ``Layout`` and ``step_dynamics`` are the dynamics; the
``dm_env`` class ``TwoRooms``, the vectorised ``BatchTwoRooms`` (used by the
tabular agents) and ``TwoRoomsEnvBatch`` (its deep-agent observations, an
``envs.batch.EnvBatch`` stepped in the trainer's own process) step through them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import dm_env
import numpy as np
from dm_env import specs

from distral_tf.envs import batch as batch_lib

NUM_ACTIONS = 5
ACTION_NAMES = ('stay', 'up', 'down', 'left', 'right')
# (row, column) displacement of each action.
ACTION_DELTAS = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], dtype=np.int64)
# Tabular codes of (previous action, previous reward): start, then (action, bumped).
NUM_CODES = 1 + 2 * NUM_ACTIONS


@dataclasses.dataclass(frozen=True)
class TwoRoomsConfig:
  """Constants of the world. The paper's values were lost; these are ours."""
  room_size: int = 5            # Each room is room_size x room_size cells (odd).
  corridor_length: int = 3      # Cells of corridor between the rooms.
  step_penalty: float = -0.01   # Reward of an ordinary step (stay included).
  wall_penalty: float = -0.1    # Reward of a step into a wall (agent stays put).
  goal_reward: float = 1.0      # Reward of the step entering the goal (terminal).
  step_limit: int = 50          # Steps before the episode is truncated.
  num_tasks: int = 8            # Tasks (goals) when --num_tasks is not given.


DEFAULTS = TwoRoomsConfig()

@dataclasses.dataclass(frozen=True)
class Layout:
  """The map and its deterministic transition tables (shared by every class here)."""
  walls: np.ndarray         # [H, W] bool, True for walls.
  cells: np.ndarray         # [C, 2] (row, column) of each free cell.
  next_cell: np.ndarray     # [C, A] free-cell index after each action.
  bumped: np.ndarray        # [C, A] True where the action walks into a wall.
  start_cells: np.ndarray   # Free-cell indices of the left room (starts).
  goal_cells: np.ndarray    # Free-cell indices of the right room (goals).
  corridor_cells: np.ndarray

  @property
  def num_cells(self) -> int:
    return len(self.cells)

  @property
  def num_states(self) -> int:
    """Tabular states: (cell, code of previous action and reward)."""
    return self.num_cells * NUM_CODES

  def cell_index(self, row: int, col: int) -> int:
    hits = np.flatnonzero((self.cells[:, 0] == row) & (self.cells[:, 1] == col))
    if not hits.size:
      raise ValueError(f'({row}, {col}) is not a free cell')
    return int(hits[0])


@functools.lru_cache(maxsize=None)
def make_layout(room_size: int = DEFAULTS.room_size,
                corridor_length: int = DEFAULTS.corridor_length) -> Layout:
  """Builds the two-room map: walls all round, the corridor in the middle row."""
  r, k = room_size, corridor_length
  height, width = r + 2, 2 * r + k + 2
  walls = np.ones((height, width), dtype=bool)
  walls[1:r + 1, 1:r + 1] = False                 # Left room.
  walls[1:r + 1, r + k + 1:2 * r + k + 1] = False  # Right room.
  mid = (r + 1) // 2
  walls[mid, r + 1:r + k + 1] = False              # Corridor.
  cells = np.argwhere(~walls)                      # Row-major order.
  index = -np.ones((height, width), dtype=np.int64)
  index[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
  target = cells[:, None, :] + ACTION_DELTAS[None, :, :]
  blocked = walls[target[..., 0], target[..., 1]]
  next_cell = np.where(blocked, np.arange(len(cells))[:, None],
                       index[target[..., 0], target[..., 1]])
  cols = cells[:, 1]
  for array in (walls, cells, next_cell, blocked):
    array.setflags(write=False)
  return Layout(walls=walls, cells=cells, next_cell=next_cell, bumped=blocked,
                start_cells=np.flatnonzero(cols <= r),
                goal_cells=np.flatnonzero(cols >= r + k + 1),
                corridor_cells=np.flatnonzero((cols > r) & (cols <= r + k)))


def layout_of(config: TwoRoomsConfig) -> Layout:
  return make_layout(config.room_size, config.corridor_length)


def step_dynamics(layout: Layout, config: TwoRoomsConfig, cells, actions,
                  goal_cells) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """One step of the world for arrays (or scalars) of cells, actions and goals.

  Returns ``(next_cells, rewards, bumped, reached_goal)``. This is the only
  place where transitions and rewards are defined.
  """
  cells = np.asarray(cells)
  actions = np.asarray(actions)
  next_cells = layout.next_cell[cells, actions]
  bumped = layout.bumped[cells, actions]
  reached = next_cells == np.asarray(goal_cells)
  rewards = np.where(reached, config.goal_reward,
                     np.where(bumped, config.wall_penalty, config.step_penalty))
  return next_cells, rewards, bumped, reached


def tabular_state(cells, prev_actions, bumped, first) -> np.ndarray:
  """Tabular index of (location, previous action, previous reward)."""
  code = np.where(first, 0, 1 + 2 * np.asarray(prev_actions) + np.asarray(bumped))
  return np.asarray(cells) * NUM_CODES + code


def observation_size(layout: Layout) -> int:
  return layout.num_cells + NUM_ACTIONS + 1


def batch_observations(layout: Layout, config: TwoRoomsConfig, cells: np.ndarray,
                       codes: np.ndarray) -> np.ndarray:
  """``make_observation`` of many (cell, tabular code) pairs at once ``[N, D]``.

  Code 0 is an episode's start; code ``1 + 2 a + bumped`` follows action a.
  The previous reward is the wall penalty after a bump, else the step penalty
  (reaching the goal ends the episode, so its reward is never a previous one).
  """
  n = len(cells)
  obs = np.zeros((n, observation_size(layout)), np.float32)
  rows = np.arange(n)
  obs[rows, cells] = 1.0
  moved = codes > 0
  prev_actions = (codes - 1) // 2
  obs[rows[moved], layout.num_cells + prev_actions[moved]] = 1.0
  bumped = (codes - 1) % 2 == 1
  obs[:, -1] = np.where(moved, np.where(bumped, config.wall_penalty,
                                        config.step_penalty), 0.0)
  return obs


def make_observation(layout: Layout, cell: int, prev_action: int | None,
                     prev_reward: float) -> np.ndarray:
  """one-hot(cell) ++ one-hot(previous action; zeros at start) ++ [previous reward]."""
  obs = np.zeros(observation_size(layout), dtype=np.float32)
  obs[cell] = 1.0
  if prev_action is not None:
    obs[layout.num_cells + prev_action] = 1.0
  obs[-1] = prev_reward
  return obs


def optimal_return(config: TwoRoomsConfig, goal_cell: int) -> float:
  """Undiscounted return of a shortest path, averaged over the uniform start cells."""
  layout = layout_of(config)
  dist = np.full(layout.num_cells, -1)
  dist[goal_cell] = 0
  frontier = [goal_cell]
  while frontier:  # Breadth-first search backwards (moves are reversible).
    nxt = []
    for c in frontier:
      for n in layout.next_cell[c]:
        if dist[n] < 0:
          dist[n] = dist[c] + 1
          nxt.append(n)
    frontier = nxt
  d = dist[layout.start_cells].astype(np.float64)
  per_start = np.where(d <= config.step_limit,
                       config.goal_reward + (d - 1) * config.step_penalty,
                       config.step_limit * config.step_penalty)
  return float(per_start.mean())


def random_policy_return(config: TwoRoomsConfig, goal_cell: int) -> float:
  """Exact expected return of the uniform random policy (finite-horizon DP), mean over starts."""
  layout = layout_of(config)
  cells = np.repeat(np.arange(layout.num_cells), NUM_ACTIONS)
  actions = np.tile(np.arange(NUM_ACTIONS), layout.num_cells)
  nxt, rewards, _, reached = step_dynamics(layout, config, cells, actions, goal_cell)
  value = np.zeros(layout.num_cells)  # Value with 0 steps left.
  for _ in range(config.step_limit):
    q = rewards + np.where(reached, 0.0, value[nxt])
    value = q.reshape(layout.num_cells, NUM_ACTIONS).mean(axis=1)
  return float(value[layout.start_cells].mean())


class TwoRooms(dm_env.Environment):
  """One task of the world: a fixed goal; starts drawn uniformly in the left room."""

  def __init__(self, seed: int = 0, *, goal: tuple[int, int],
               config: TwoRoomsConfig = DEFAULTS):
    self._config = config
    self._layout = layout_of(config)
    self._goal = self._layout.cell_index(*goal)
    self._rng = np.random.default_rng(seed)
    self._cell = int(self._layout.start_cells[0])
    self._prev_action: int | None = None
    self._prev_reward = 0.0
    self._bumped = False
    self._t = 0
    self._needs_reset = True

  @property
  def layout(self) -> Layout:
    return self._layout

  @property
  def goal_cell(self) -> int:
    return self._goal

  @property
  def tabular_state(self) -> int:
    return int(tabular_state(self._cell, self._prev_action or 0, self._bumped,
                             self._prev_action is None))

  def _observation(self) -> np.ndarray:
    return make_observation(self._layout, self._cell, self._prev_action,
                            self._prev_reward)

  def reset(self, start_cell: int | None = None) -> dm_env.TimeStep:
    """Starts an episode (at ``start_cell`` if given, else at a random left-room cell)."""
    if start_cell is None:
      start_cell = self._layout.start_cells[
          self._rng.integers(len(self._layout.start_cells))]
    self._cell = int(start_cell)
    self._prev_action, self._prev_reward, self._bumped = None, 0.0, False
    self._t = 0
    self._needs_reset = False
    return dm_env.restart(self._observation())

  def step(self, action) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    action = int(action)
    if not 0 <= action < NUM_ACTIONS:
      raise ValueError(f'action must be in [0, {NUM_ACTIONS}), got {action}')
    cell, reward, bumped, reached = step_dynamics(
        self._layout, self._config, self._cell, action, self._goal)
    self._cell, self._bumped = int(cell), bool(bumped)
    self._prev_action, self._prev_reward = action, float(reward)
    self._t += 1
    obs = self._observation()
    if reached:
      self._needs_reset = True
      return dm_env.termination(float(reward), obs)
    if self._t >= self._config.step_limit:
      self._needs_reset = True
      return dm_env.truncation(float(reward), obs)
    return dm_env.transition(float(reward), obs)

  def observation_spec(self) -> specs.Array:
    return specs.Array((observation_size(self._layout),), np.float32, 'observation')

  def action_spec(self) -> specs.DiscreteArray:
    return specs.DiscreteArray(NUM_ACTIONS, dtype=np.int64, name='action')


class BatchTwoRooms:
  """Vectorised copies of the world, one per goal, stepped together (tabular agents).

  Episodes restart automatically: ``step`` returns the finished episodes' flags
  and the tabular states that follow are already those of the new episodes.
  """

  def __init__(self, config: TwoRoomsConfig, goal_cells, seed: int):
    self.config = config
    self.layout = layout_of(config)
    self.goal_cells = np.asarray(goal_cells, dtype=np.int64)
    self.size = len(self.goal_cells)
    self._rng = np.random.default_rng(seed)
    self.cells = np.zeros(self.size, dtype=np.int64)
    self.codes = np.zeros(self.size, dtype=np.int64)
    self.t = np.zeros(self.size, dtype=np.int64)
    self.reset()

  @property
  def states(self) -> np.ndarray:
    return self.cells * NUM_CODES + self.codes

  def reset(self, mask=None, start_cells=None) -> None:
    """Restarts the episodes where ``mask`` (default all), at ``start_cells`` if given."""
    mask = np.ones(self.size, bool) if mask is None else np.asarray(mask, bool)
    n = int(mask.sum())
    if start_cells is None:
      start_cells = self.layout.start_cells[
          self._rng.integers(len(self.layout.start_cells), size=n)]
    self.cells[mask] = start_cells
    self.codes[mask] = 0
    self.t[mask] = 0

  def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                   np.ndarray]:
    """Steps every copy; returns ``(rewards, next_states, terminal, truncated)``.

    ``next_states`` are the states reached (before any restart); the copies that
    terminated or were truncated are then restarted.
    """
    actions = np.asarray(actions, dtype=np.int64)
    cells, rewards, bumped, reached = step_dynamics(
        self.layout, self.config, self.cells, actions, self.goal_cells)
    self.cells = cells
    self.codes = 1 + 2 * actions + bumped
    self.t += 1
    next_states = self.states
    truncated = ~reached & (self.t >= self.config.step_limit)
    done = reached | truncated
    if done.any():
      self.reset(done)
    return rewards, next_states, reached, truncated


class TwoRoomsEnvBatch:
  """Copies of the world for the deep agents, one per goal, stepped in numpy.

  An ``envs.batch.EnvBatch``: the observations of ``make_observation``, the
  rewards and discounts of ``TwoRooms`` (a termination at the goal, a
  truncation with discount 1 after ``step_limit`` steps), all copies at once.
  """

  def __init__(self, config: TwoRoomsConfig, goal_cells: Sequence[int], seed: int):
    self._world = BatchTwoRooms(config, goal_cells, seed)
    self._layout = self._world.layout
    self._config = config

  def observation_spec(self) -> specs.Array:
    return specs.Array((observation_size(self._layout),), np.float32, 'observation')

  def _observations(self) -> np.ndarray:
    return batch_observations(self._layout, self._config, self._world.cells,
                              self._world.codes)

  def reset(self) -> np.ndarray:
    self._world.reset()
    return self._observations()

  def step(self, actions: np.ndarray) -> batch_lib.BatchStep:
    actions = np.asarray(actions, dtype=np.int64)
    if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
      raise ValueError(f'actions must be in [0, {NUM_ACTIONS}), got {actions}')
    rewards, reached_states, terminal, truncated = self._world.step(actions)
    ends = terminal | truncated
    observations = self._observations()
    final_observations = None
    if truncated.any():
      final_observations = observations.copy()
      final_observations[truncated] = batch_observations(
          self._layout, self._config, reached_states[truncated] // NUM_CODES,
          reached_states[truncated] % NUM_CODES)
    return batch_lib.BatchStep(
        rewards=rewards.astype(np.float32),
        discounts=np.where(terminal, 0.0, 1.0).astype(np.float32),
        ends=ends, lost=np.zeros_like(ends), observations=observations,
        final_observations=final_observations)

  def close(self) -> None:
    pass
