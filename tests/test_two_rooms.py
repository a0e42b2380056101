"""Tests of the two-room grid world (distral_tf/envs/two_rooms.py) and its level set
(distral_tf/envs/two_rooms_tasks.py)."""

import pickle

import dm_env
import numpy as np
import pytest
from absl import flags

from distral_tf import errors
from distral_tf.envs import level_sets
from distral_tf.envs import two_rooms
from distral_tf.envs import two_rooms_tasks

STAY, UP, DOWN, LEFT, RIGHT = range(5)
CFG = two_rooms.DEFAULTS


def make_env(goal=(3, 9), seed=0, config=CFG):
  return two_rooms.TwoRooms(seed, goal=goal, config=config)


def cell_of(env, obs):
  return tuple(env.layout.cells[int(np.argmax(obs[:env.layout.num_cells]))])


def test_layout_is_two_rooms_and_a_corridor():
  layout = two_rooms.make_layout(5, 3)
  assert layout.walls.shape == (7, 15)
  assert layout.num_cells == 25 + 3 + 25
  assert [tuple(layout.cells[c]) for c in layout.corridor_cells] == [
      (3, 6), (3, 7), (3, 8)]
  assert all(layout.cells[c][1] <= 5 for c in layout.start_cells)
  assert all(layout.cells[c][1] >= 9 for c in layout.goal_cells)
  assert len(layout.start_cells) == len(layout.goal_cells) == 25
  # The border is wall; the wall between the rooms is open in the middle row only.
  assert layout.walls[0].all() and layout.walls[-1].all()
  assert layout.walls[:, 0].all() and layout.walls[:, -1].all()
  assert list(np.flatnonzero(~layout.walls[:, 7])) == [3]


def test_walls_block_and_cost_the_wall_penalty():
  env = make_env()
  layout = env.layout
  env.reset(start_cell=layout.cell_index(1, 1))
  for action in (UP, LEFT):
    ts = env.step(action)
    assert cell_of(env, ts.observation) == (1, 1)
    assert ts.reward == pytest.approx(CFG.wall_penalty)
    assert ts.observation[-1] == pytest.approx(CFG.wall_penalty)
  # The wall between the rooms: moving right from (2, 5) bumps.
  env.reset(start_cell=layout.cell_index(2, 5))
  ts = env.step(RIGHT)
  assert cell_of(env, ts.observation) == (2, 5)
  assert ts.reward == pytest.approx(CFG.wall_penalty)
  # In the corridor up and down are walls.
  env.reset(start_cell=layout.cell_index(3, 5))
  env.step(RIGHT)
  ts = env.step(UP)
  assert cell_of(env, ts.observation) == (3, 6)
  assert ts.reward == pytest.approx(CFG.wall_penalty)


def test_corridor_leads_to_the_goal_with_step_penalties():
  env = make_env(goal=(3, 10))
  env.reset(start_cell=env.layout.cell_index(3, 4))
  rewards, cells = [], []
  ts = env.step(STAY)
  rewards.append(ts.reward)
  cells.append(cell_of(env, ts.observation))
  while not ts.last():
    ts = env.step(RIGHT)
    rewards.append(ts.reward)
    cells.append(cell_of(env, ts.observation))
  assert cells == [(3, c) for c in (4, 5, 6, 7, 8, 9, 10)]
  assert rewards[:-1] == pytest.approx([CFG.step_penalty] * 6)
  assert rewards[-1] == pytest.approx(CFG.goal_reward)
  assert ts.step_type == dm_env.StepType.LAST and ts.discount == 0.0
  # After the goal the next step starts a new episode in the left room.
  ts = env.step(RIGHT)
  assert ts.first() and cell_of(env, ts.observation)[1] <= 5


def test_step_limit_truncates():
  env = make_env()
  ts = env.reset()
  n = 0
  while not ts.last():
    ts = env.step(STAY)
    n += 1
  assert n == CFG.step_limit
  assert ts.discount == 1.0  # Truncation, not termination.
  assert ts.reward == pytest.approx(CFG.step_penalty)


def test_observation_spec_and_values():
  env = make_env()
  spec = env.observation_spec()
  size = env.layout.num_cells + 5 + 1
  assert spec.shape == (size,) and spec.dtype == np.float32
  assert env.action_spec().num_values == 5
  ts = env.reset(start_cell=env.layout.cell_index(2, 2))
  spec.validate(ts.observation)
  expected = np.zeros(size, np.float32)
  expected[env.layout.cell_index(2, 2)] = 1.0  # No previous action, reward 0.
  np.testing.assert_array_equal(ts.observation, expected)
  ts = env.step(DOWN)
  spec.validate(ts.observation)
  expected = np.zeros(size, np.float32)
  expected[env.layout.cell_index(3, 2)] = 1.0
  expected[env.layout.num_cells + DOWN] = 1.0
  expected[-1] = CFG.step_penalty
  np.testing.assert_allclose(ts.observation, expected)


def test_goals_lie_in_the_other_room_and_depend_on_the_seed():
  ls = two_rooms_tasks.make_level_set('two_rooms', None, seed=3)
  assert len(ls.tasks) == 8
  assert (ls.num_actions, ls.frames_per_step, ls.observation_kind) == (5, 1, 'vector')
  goals = [t.make_env.keywords['goal'] for t in ls.tasks]
  assert len(set(goals)) == 8
  assert all(1 <= r <= 5 and 9 <= c <= 13 for r, c in goals)
  assert [t.name for t in ls.tasks] == [f'goal_r{r}_c{c}' for r, c in goals]
  again = two_rooms_tasks.make_level_set('two_rooms', None, seed=3)
  assert again.task_names == ls.task_names
  other = two_rooms_tasks.make_level_set('two_rooms', None, seed=4)
  assert other.task_names != ls.task_names
  assert len(two_rooms_tasks.make_level_set('two_rooms', 3, seed=0).tasks) == 3
  with pytest.raises(errors.UsageError, match=r'\[1, 25\]'):
    two_rooms_tasks.make_level_set('two_rooms', 26, seed=0)
  # Through the registry too, and the factories pickle.
  ls = level_sets.make_level_set('two_rooms', 2, seed=0)
  env = pickle.loads(pickle.dumps(ls.tasks[0].make_env))(7)
  assert env.reset().first()


def test_flags_change_the_world():
  fv = flags.FLAGS
  fv.unparse_flags()
  try:
    fv(['prog', '--two_rooms_step_limit=7', '--two_rooms_goal_reward=2',
        '--two_rooms_task_seed=5'])
    options = fv.flag_values_dict()  # As the entry points pass them.
    ls = two_rooms_tasks.make_level_set('two_rooms', 4, seed=0, options=options)
    assert ls.task_names == two_rooms_tasks.make_level_set(
        'two_rooms', 4, seed=1, options=options).task_names
    env = ls.tasks[0].make_env(0)
    ts = env.reset()
    steps = 0
    while not ts.last():
      ts = env.step(STAY)
      steps += 1
    assert steps == 7
    fv.unparse_flags()
    fv(['prog', '--two_rooms_room_size=4'])
    with pytest.raises(errors.UsageError, match='odd'):
      two_rooms_tasks.make_level_set('two_rooms', 4, seed=0, options=fv.flag_values_dict())
  finally:
    fv.unparse_flags()


def test_seeded_starts_are_deterministic():
  def starts(seed):
    env = make_env(seed=seed)
    return [cell_of(env, env.reset().observation) for _ in range(20)]
  assert starts(1) == starts(1)
  assert starts(1) != starts(2)
  assert all(c <= 5 for _, c in starts(1))


def test_batch_dynamics_agree_with_the_dm_env_class():
  goals = two_rooms_tasks.draw_goals(CFG, 8, seed=0)
  layout = two_rooms.layout_of(CFG)
  envs = [two_rooms.TwoRooms(i, goal=tuple(layout.cells[g]), config=CFG)
          for i, g in enumerate(goals)]
  batch = two_rooms.BatchTwoRooms(CFG, goals, seed=0)
  rng = np.random.default_rng(0)
  starts = [env.reset() for env in envs]
  batch.reset(start_cells=[int(np.argmax(ts.observation[:layout.num_cells]))
                           for ts in starts])
  # A biased walk (mostly right) so that goals are reached, not just the limit.
  finished = 0
  for _ in range(600):
    assert list(batch.states) == [env.tabular_state for env in envs]
    actions = rng.choice(5, size=len(envs), p=[0.1, 0.15, 0.15, 0.1, 0.5])
    rewards, next_states, terminal, truncated = batch.step(actions)
    for i, env in enumerate(envs):
      ts = env.step(actions[i])
      assert ts.reward == pytest.approx(rewards[i])
      assert env.tabular_state == next_states[i]
      assert ts.last() == (terminal[i] or truncated[i])
      assert (ts.last() and ts.discount == 0.0) == terminal[i]
      if ts.last():
        finished += 1
        ts = env.reset()
        batch.cells[i] = int(np.argmax(ts.observation[:layout.num_cells]))
  assert finished > 20


def test_optimal_and_random_returns():
  goal = two_rooms.make_layout().cell_index(3, 9)
  # From (r, c) in the left room the shortest path to (3, 9) is |r - 3| + 9 - c.
  mean_distance = np.mean([abs(r - 3) + 9 - c for r in range(1, 6) for c in range(1, 6)])
  expected = CFG.goal_reward + (mean_distance - 1) * CFG.step_penalty
  assert two_rooms.optimal_return(CFG, goal) == pytest.approx(expected)
  # The exact random-policy value matches a Monte Carlo estimate.
  batch = two_rooms.BatchTwoRooms(CFG, [goal] * 4000, seed=1)
  rng = np.random.default_rng(1)
  returns = np.zeros(4000)
  running = np.ones(4000, bool)
  while running.any():
    rewards, _, terminal, truncated = batch.step(rng.integers(5, size=4000))
    returns += np.where(running, rewards, 0.0)
    running &= ~(terminal | truncated)
  exact = two_rooms.random_policy_return(CFG, goal)
  assert returns.mean() == pytest.approx(exact, abs=4 * returns.std() / np.sqrt(4000))


def test_env_batch_steps_like_the_single_environment():
  """TwoRoomsEnvBatch (the deep trainer's in-process batch) = TwoRooms copies."""
  config = two_rooms.TwoRoomsConfig(step_limit=30)
  layout = two_rooms.layout_of(config)
  goals = [int(c) for c in layout.goal_cells[:3]]
  batch = two_rooms.TwoRoomsEnvBatch(config, goals, seed=0)
  singles = [two_rooms.TwoRooms(goal=tuple(int(x) for x in layout.cells[g]), config=config)
             for g in goals]
  observations = batch.reset()
  cell_of = lambda obs: int(np.argmax(obs[:layout.num_cells]))
  for env, obs in zip(singles, observations):
    np.testing.assert_array_equal(env.reset(start_cell=cell_of(obs)).observation, obs)
  rng = np.random.default_rng(1)
  seen = {'terminal': 0, 'cut': 0}
  for _ in range(3000):  # Random moves, mostly rightwards: some reach their goal.
    actions = rng.choice(two_rooms.NUM_ACTIONS, size=len(goals),
                         p=[0.1, 0.15, 0.15, 0.1, 0.5])
    step = batch.step(actions)
    for i, (env, action) in enumerate(zip(singles, actions)):
      ts = env.step(action)
      assert step.rewards[i] == pytest.approx(ts.reward)
      assert step.discounts[i] == ts.discount
      assert step.ends[i] == ts.last() and not step.lost[i]
      if ts.last():
        seen['terminal' if ts.discount == 0 else 'cut'] += 1
        if ts.discount > 0:  # The cut episode's own final observation.
          np.testing.assert_array_equal(step.final_observations[i], ts.observation)
        ts = env.reset(start_cell=cell_of(step.observations[i]))
      np.testing.assert_array_equal(step.observations[i], ts.observation)
    assert (step.final_observations is None) == (not step.cut.any())
  assert seen['terminal'] > 0 and seen['cut'] > 0
