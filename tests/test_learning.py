"""Learning on a real environment: the deep default algorithm on the grid world."""

import numpy as np

from distral_tf import cli
from distral_tf import results
from distral_tf.envs import two_rooms


def test_kl_ent_2col_returns_rise_far_above_random_on_two_rooms(tmp_path):
  """The default run (its level-set defaults), shortened to 2 tasks."""
  summary = cli.run_from_args([
      '--level_set=two_rooms', '--algorithm=kl_ent_2col', '--num_tasks=2',
      '--env_steps_per_task=40000', '--seed=0', f'--logdir={tmp_path}',
      '--log_interval_secs=5'])
  assert summary['finished']
  rows = results.read_episodes(str(tmp_path))
  config = two_rooms.TwoRoomsConfig()
  layout = two_rooms.layout_of(config)
  for task, stats in summary['task']['tasks'].items():
    goal = layout.cell_index(*map(int, task[len('goal_r'):].split('_c')))
    random_return = two_rooms.random_policy_return(config, goal)
    early = [r['episode_return'] for r in results.select(rows, task=task, policy='task')
             if r['env_steps'] <= 2000]
    # Early on the agent acts like the uniform random policy ...
    assert abs(np.mean(early) - random_return) < 0.25
    # ... and by the end of the budget far better (it stops walking into walls).
    assert stats['final_return'] > random_return + 0.4, (task, stats, random_return)
