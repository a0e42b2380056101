"""Tests of the DeepMind Lab level sets and their flags, and of our own Lua maze
levels (run against the test double of DeepMind Lab's Lua modules)."""

import collections
import importlib.util
import os
import pickle
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import pytest

from distral_tf import errors
from distral_tf.dmlab import games
from distral_tf.envs import level_sets
from tests import dmlab_double
from tests.dmlab_double import lab_double_fixture  # noqa: F401  pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_SIZES = {'mazes': 8, 'navigation': 4, 'lasertag': 8}
# Lasertag adds JUMP to the standard 9 actions.
EXPECTED_ACTIONS = {'mazes': 9, 'navigation': 9, 'lasertag': 10}


@pytest.fixture(autouse=True)
def _cache_in_tmp_path(monkeypatch, tmp_path):
  """Keeps the level cache of these tests out of the user's home."""
  monkeypatch.setitem(games.OPTION_DEFAULTS, 'dmlab_level_cache_dir',
                      str(tmp_path / 'level_cache'))


def test_level_lists_have_the_papers_sizes_and_distinct_levels():
  assert {name: len(levels) for name, levels in games.LEVELS.items()} == EXPECTED_SIZES
  for levels in games.LEVELS.values():
    names = [task for task, _, _ in levels]
    assert len(set(names)) == len(names)
    assert len(set((level, settings) for _, level, settings in levels)) == len(levels)
  navigation = [level for _, level, _ in games.LEVELS['navigation']]
  assert all(level.startswith('contributed/dmlab30/explore_') for level in navigation)
  lasertag = [level for _, level, _ in games.LEVELS['lasertag']]
  assert sum(level.startswith('lt_') for level in lasertag) == 4
  assert sum('lasertag_' in level for level in lasertag) == 4


def test_our_maze_levels_are_loaded_from_the_lua_directory():
  ours = [(task, level, dict(settings)) for task, level, settings in games.LEVELS['mazes']
          if level == 'distral_maze']
  assert [task for task, _, _ in ours] == ['distral_maze_a', 'distral_maze_b']
  for _, level, settings in ours:
    assert settings['levelDirectory'] == games.LUA_DIR
    assert os.path.isfile(os.path.join(settings['levelDirectory'], level + '.lua'))
  assert [s['mazeLayout'] for _, _, s in ours] == ['a', 'b']


@pytest.mark.parametrize('name', sorted(EXPECTED_SIZES))
def test_make_level_set(lab_double, name):
  level_set = level_sets.make_level_set(name, None, seed=3)
  assert level_set.name == name
  assert len(level_set.tasks) == EXPECTED_SIZES[name]
  assert level_set.num_actions == EXPECTED_ACTIONS[name]
  assert level_set.frames_per_step == 4
  assert level_set.observation_kind == 'pixels'
  assert level_set.normalise_by_a3c == (name != 'mazes')
  assert level_set.task_names == tuple(task for task, _, _ in games.LEVELS[name])
  task = pickle.loads(pickle.dumps(level_set.tasks[-1]))
  env = task.make_env(0)
  assert env.lab.level == games.LEVELS[name][-1][1]
  assert env.action_spec().num_values == level_set.num_actions
  assert env.reset().observation.shape == (72, 96, 3)
  env.step(level_set.num_actions - 1)
  jumped = env.lab.step_calls[-1][0][5] == 1
  assert jumped == (name == 'lasertag')
  env.close()


def test_fewer_tasks_take_the_first_ones_and_more_is_a_usage_error(lab_double):
  level_set = games.make_level_set('lasertag', 3, seed=0)
  assert level_set.task_names == ('lt_chasm', 'lt_hallway_slope', 'lt_horseshoe_color')
  with pytest.raises(errors.UsageError, match='num_tasks'):
    games.make_level_set('navigation', 5, seed=0)
  with pytest.raises(errors.UsageError):
    games.make_level_set('navigation', 0, seed=0)
  with pytest.raises(errors.UsageError):
    games.make_level_set('atari', None, seed=0)


def test_tasks_and_runs_get_distinct_episode_seeds(lab_double):
  def first_seed(run_seed, task, worker):
    level_set = games.make_level_set('mazes', None, seed=run_seed)
    env = level_set.tasks[task].make_env(worker)
    env.reset()
    return env.episode_seed

  seeds = [first_seed(r, t, w) for r in (0, 1) for t in range(8) for w in range(3)]
  assert len(set(seeds)) == len(seeds)
  assert first_seed(1, 2, 2) == first_seed(1, 2, 2)


@flagsaver.flagsaver
def test_flags_set_size_repeat_renderer_and_cache(lab_double, tmp_path):
  flags.FLAGS(['prog', '--dmlab_height=60', '--dmlab_width=80',
               '--dmlab_action_repeat=2', '--dmlab_renderer=hardware',
               f'--dmlab_level_cache_dir={tmp_path}'])
  try:
    options = lambda: flags.FLAGS.flag_values_dict()  # As the entry points pass them.
    level_set = games.make_level_set('navigation', 1, seed=0, options=options())
    assert level_set.frames_per_step == 2
    env = level_set.tasks[0].make_env(0)
    assert env.lab.config['height'] == '60' and env.lab.config['width'] == '80'
    assert env.lab.renderer == 'hardware'
    assert env.lab.level_cache.cache_dir == str(tmp_path)
    env.reset()
    assert env.step(0).reward == 2.0 and env.lab.num_steps() == 2
    flags.FLAGS(['prog', '--dmlab_level_cache=false'])
    env = games.make_level_set('navigation', 1, seed=0,
                               options=options()).tasks[0].make_env(0)
    assert env.lab.level_cache is None
    flags.FLAGS(['prog', '--dmlab_action_repeat=0'])
    with pytest.raises(errors.UsageError, match='dmlab_action_repeat'):
      games.make_level_set('navigation', 1, seed=0, options=options())
  finally:
    flags.FLAGS.unparse_flags()


def test_default_cache_is_on_under_the_users_cache_directory():
  default = flags.FLAGS['dmlab_level_cache_dir'].default
  assert os.path.expanduser(default) == os.path.expanduser(
      '~/.cache/distral_tf/dmlab_levels')
  assert flags.FLAGS['dmlab_level_cache'].default is True
  config = games.config_from_options(None)  # No options: the flags' defaults.
  assert config.level_cache_dir == games.OPTION_DEFAULTS['dmlab_level_cache_dir']
  assert (config.height, config.width, config.action_repeat, config.renderer) == (
      72, 96, 4, 'software')


@pytest.mark.parametrize('name', sorted(EXPECTED_SIZES))
def test_missing_deepmind_lab_is_one_line_usage_error(monkeypatch, name):
  monkeypatch.setitem(sys.modules, 'deepmind_lab', None)  # Import fails.
  with pytest.raises(errors.UsageError) as raised:
    level_sets.make_level_set(name, None, seed=0)
  message = str(raised.value)
  assert '\n' not in message
  assert 'deepmind_lab' in message
  assert '"DeepMind Lab" section of docs/dmlab.md' in message
  assert 'launch/build_dmlab.sh' in message


_OTHER_MODULES = ('distral_tf.agents.train', 'distral_tf.envs.two_rooms_tasks',
                  'distral_tf.envs.minigrid_tasks')


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in _OTHER_MODULES),
    reason='the trainers are not all in place yet')
def test_launch_without_deepmind_lab_exits_with_status_2(tmp_path):
  # A deepmind_lab that fails to import stands in for a machine without it.
  fake = tmp_path / 'site'
  fake.mkdir()
  (fake / 'deepmind_lab.py').write_text("raise ImportError('not built')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), REPO]))
  result = subprocess.run(
      [sys.executable, '-m', 'distral_tf.launch', '--level_set=lasertag',
       '--algorithm=a3c', f'--logdir={tmp_path / "run"}', '--env_steps_per_task=100'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == errors.USAGE_EXIT_CODE, result.stderr
  lines = result.stderr.strip().splitlines()
  assert 'docs/dmlab.md' in lines[-1] and 'launch/build_dmlab.sh' in lines[-1]
  assert 'Traceback' not in result.stderr


# -- our Lua maze script, run on Lua 5.1 against the test double of the -------
# -- DeepMind Lab modules it requires -------------------------------------------

MAZE_SCRIPT = os.path.join(games.LUA_DIR, 'distral_maze.lua')


def _maze_source():
  with open(MAZE_SCRIPT) as f:
    return f.read()


class _LuaMaze:
  """Our maze script in Lua 5.1, driven the way DeepMind Lab's engine drives it."""

  def __init__(self, layout, source=None):
    self.lua = dmlab_double.lua_runtime()
    self.api = self.lua.execute(source or _maze_source())
    self.api.init(self.api, self.lua.table_from({'mazeLayout': layout}))
    make_map_call = self.lua.globals().calls.makeMap[1]
    self.map_name = make_map_call.mapName
    self.rows = [r for r in make_map_call.mapEntityLayer.split('\n') if r]

  def entities(self):
    """Map entities of the layout's P, A and G cells, as the compiled map has them."""
    kinds = {'P': 'info_player_start', 'A': 'apple_reward', 'G': 'goal'}
    for i, row in enumerate(self.rows):
      for j, c in enumerate(row):
        if c in kinds:
          x, y = j * 100 + 50, (len(self.rows) - 1 - i) * 100 + 50
          yield c, (i, j), {'classname': kinds[c], 'origin': f'{x} {y} 30'}

  def load(self):
    """Returns the cells (by layout letter) whose entities the script keeps."""
    kept = collections.defaultdict(list)
    for c, cell, spawn_vars in self.entities():
      result = self.api.updateSpawnVars(self.api, self.lua.table_from(spawn_vars))
      if result is not None:
        assert result.classname == spawn_vars['classname']
        kept[c].append(cell)
    return kept


def _connected(rows):
  cells = {(i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c != '*'}
  start = next(iter(cells))
  seen, todo = {start}, [start]
  while todo:
    i, j = todo.pop()
    for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
      if n in cells and n not in seen:
        seen.add(n)
        todo.append(n)
  return seen == cells


@pytest.mark.parametrize('layout', ['a', 'b'])
def test_lua_maze_layouts_are_closed_connected_mazes(layout):
  maze = _LuaMaze(layout)
  assert maze.map_name == f'distral_maze_{layout}'
  rows = maze.rows
  assert len({len(r) for r in rows}) == 1
  assert set(rows[0]) == set(rows[-1]) == {'*'}
  assert all(r[0] == r[-1] == '*' for r in rows)
  assert set(''.join(rows)) <= set('* PAG')
  text = ''.join(rows)
  assert text.count('G') == 1 and text.count('P') >= 4 and text.count('A') >= 6
  assert _connected(rows)
  assert len(maze.lua.globals().calls.seedRng) == 1


def test_lua_maze_layouts_differ():
  assert _LuaMaze('a').rows != _LuaMaze('b').rows


@pytest.mark.parametrize('layout', ['a', 'b'])
def test_lua_maze_episode_keeps_one_start_half_the_apples_and_the_goal(layout):
  maze = _LuaMaze(layout)
  num_apples = ''.join(maze.rows).count('A')
  maze.api.start(maze.api, 0, 1234)
  assert maze.api.nextMap(maze.api) == maze.map_name
  kept = maze.load()
  assert len(kept['P']) == 1
  assert len(kept['G']) == 1
  assert len(kept['A']) == int(0.5 * num_apples + 0.5)
  # Collecting the goal restarts on the loaded map from a new random start.
  starts = set()
  for _ in range(30):
    assert maze.api.nextMap(maze.api) == ''
    restart = maze.load()
    assert len(restart['P']) == 1 and restart['A'] == kept['A']
    starts.add(restart['P'][0])
  assert len(starts) > 1
  # A new episode loads the map again, with apples drawn from its seed.
  apple_sets = set()
  for seed in range(6):
    maze.api.start(maze.api, 1, seed)
    assert maze.api.nextMap(maze.api) == maze.map_name
    apple_sets.add(tuple(maze.load()['A']))
  assert len(apple_sets) > 1
  maze.api.start(maze.api, 2, 1234)
  maze.api.nextMap(maze.api)
  assert maze.load()['A'] == kept['A']


def test_lua_maze_episode_length_and_pickups():
  maze = _LuaMaze('a')
  assert not maze.api.hasEpisodeFinished(maze.api, 59.9)
  assert maze.api.hasEpisodeFinished(maze.api, 60)
  assert maze.api.createPickup(maze.api, 'goal').name == 'Goal'
  other = {'classname': 'light', 'origin': '0 0 0'}
  assert maze.api.updateSpawnVars(maze.api, maze.lua.table_from(other)) is not None


# -- our Lua uses only what DeepMind Lab's Lua modules have ----------------------


def _lua_scripts():
  return sorted(name for name in os.listdir(games.LUA_DIR) if name.endswith('.lua'))


@pytest.mark.parametrize('name', _lua_scripts())
def test_our_lua_calls_only_functions_deepmind_lab_has(name):
  with open(os.path.join(games.LUA_DIR, name)) as f:
    source = f.read()
  assert 'require' in source
  assert dmlab_double.lua_module_errors(source) == []


def _line_of(source, text):
  return source[:source.index(text)].count('\n') + 1


def test_lua_check_finds_functions_deepmind_lab_lacks():
  source = _maze_source()
  shuffle_line = _line_of(source, 'random:shuffle(')
  invented = source.replace('random:shuffle(', 'random:shuffleCopy(')
  assert dmlab_double.lua_module_errors(invented) == [
      f"line {shuffle_line}: common.random has no member 'shuffleCopy' in DeepMind Lab"]
  # common.helpers of DeepMind Lab has no shuffle.
  helpers = ("local helpers = require 'common.helpers'\n" +
             source.replace('random:shuffle(', 'helpers.shuffle('))
  assert dmlab_double.lua_module_errors(helpers) == [
      f"line {shuffle_line + 1}: common.helpers has no member 'shuffle' in DeepMind Lab"]
  # common.random's functions are methods: random.shuffle(x) passes x as self.
  dotted = source.replace('random:shuffle(', 'random.shuffle(')
  assert dmlab_double.lua_module_errors(dotted) == [
      f'line {shuffle_line}: common.random.shuffle is a method: '
      f'call it as random:shuffle(...)']
  maze = source.replace('maze:getEntityCell(', 'maze:entityCell(')
  assert dmlab_double.lua_module_errors(maze) == [
      f'line {_line_of(source, "maze:getEntityCell(")}: '
      f"dmlab.system.maze_generation.mazeGeneration(...) has no member 'entityCell' "
      f'in DeepMind Lab']
  other = "local colors = require 'common.colors'\n" + source
  assert len(dmlab_double.lua_module_errors(other)) == 1
  # Comments and strings are not code.
  commented = source + "\n-- random:shuffleCopy(x)\nlocal s = 'random.nothing'\n"
  assert dmlab_double.lua_module_errors(commented) == []


def test_lua_double_refuses_what_deepmind_lab_lacks():
  lupa = pytest.importorskip('lupa.lua51')
  source = _maze_source()
  helpers = ("local helpers = require 'common.helpers'\n" +
             source.replace('random:shuffle(', 'helpers.shuffle('))
  dotted = source.replace('random:shuffle(', 'random.shuffle(')
  for script, message in ((helpers, "common.helpers has no member 'shuffle'"),
                          (dotted, 'common.random.shuffle is a method')):
    maze = _LuaMaze('a', source=script)
    with pytest.raises(lupa.LuaError, match=message):
      maze.api.start(maze.api, 0, 1234)
  unknown = "local colors = require 'common.colors'\n" + source
  with pytest.raises(lupa.LuaError, match='common.colors'):
    _LuaMaze('a', source=unknown)
  lua = dmlab_double.lua_runtime()
  with pytest.raises(lupa.LuaError, match='not modelled by the test double'):
    lua.execute("return require('common.random'):color()")
