"""A small test double of DeepMind Lab's Python module ``deepmind_lab``.

It follows the documented API (``Lab(level, observations, config, renderer,
level_cache)``, ``reset``, ``step(action, num_steps)``, ``is_running``,
``observations``, ``num_steps``, the spec lists, ``close``) and its checks:
actions must be ``np.intc`` arrays of shape (7,) within the spec, config values
must be strings, observations may not be read once the episode has ended.

Its world is simple and deterministic, so tests can check what the adapter
does with it:

* an episode lasts ``doubleEpisodeFrames`` frames (config; default 100);
* each frame pays +1 while moving forward, -1 while moving backward, +10 while
  firing, 0 otherwise;
* the observation encodes the episode seed (little-endian, pixels [0, 0:4] of
  channel 0) and the frame count (pixels [0, 0:4] of channel 1);
* "procedural" levels (``explore_*``, ``lasertag_*``) compile a map per seed
  and our own ``distral_maze`` script one map per layout, going through
  ``level_cache.fetch``/``write`` on reset like the real module; a map is a
  ``.pk3`` (zip) archive holding ``maps/<key>.bsp`` (``pk3_bytes``), and a
  fetched map that is not the one compiled ends the process with status 1
  and the real module's message (``Didn't find map``);
* ``doubleCrashAtFrame=N`` kills the process (``os._exit``) when a frame
  count reaches N, ``doubleCrashAtReset=N`` at the process's N-th reset; with
  ``doubleCrashMarker=PATH`` it does so only once per marker file.

Install it in-process with the ``lab_double`` fixture, or name it
(``'tests.dmlab_double'``) as the adapter's ``lab_module`` in child processes.

It also stands in for the DeepMind Lab Lua modules our own level scripts
(``distral_tf/dmlab/lua``) require: ``LUA_MODULES`` lists each module's members
as DeepMind Lab defines them (``game_scripts/common/*.lua`` and the engine's
``dmlab.system.maze_generation``), ``lua_runtime`` runs scripts against modules
that have exactly those members (anything else is an error, as calling a
missing function is on a real build), and ``lua_module_errors`` checks a
script's uses of them without running it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tempfile
import zipfile
from typing import Any

import numpy as np
import pytest

OBSERVATIONS = ('RGB_INTERLEAVED', 'RGBD_INTERLEAVED', 'RGB', 'RGBD')
ACTION_SPEC = (
    {'name': 'LOOK_LEFT_RIGHT_PIXELS_PER_FRAME', 'min': -512, 'max': 512},
    {'name': 'LOOK_DOWN_UP_PIXELS_PER_FRAME', 'min': -512, 'max': 512},
    {'name': 'STRAFE_LEFT_RIGHT', 'min': -1, 'max': 1},
    {'name': 'MOVE_BACK_FORWARD', 'min': -1, 'max': 1},
    {'name': 'FIRE', 'min': 0, 'max': 1},
    {'name': 'JUMP', 'min': 0, 'max': 1},
    {'name': 'CROUCH', 'min': 0, 'max': 1},
)
DEFAULT_EPISODE_FRAMES = 100
MAP_COMPILE_MARK = b'compiled map for '

# Every Lab built in this process, for tests to inspect.
INSTANCES: list['Lab'] = []


def pk3_bytes(name: str, data: bytes) -> bytes:
  """A ``.pk3`` as DeepMind Lab compiles one: a zip holding ``maps/<name>.bsp``.

  Always the same bytes for the same arguments (fixed member date).
  """
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(zipfile.ZipInfo(f'maps/{name}.bsp', (2000, 1, 1, 0, 0, 0)), data)
  return buffer.getvalue()


def decode_seed(observation: np.ndarray) -> int:
  """The episode seed written into an observation."""
  return int.from_bytes(bytes(observation[0, :4, 0]), 'little')


def decode_frame(observation: np.ndarray) -> int:
  """The frame count written into an observation."""
  return int.from_bytes(bytes(observation[0, :4, 1]), 'little')


def _map_key(level: str, seed: int, config: dict[str, str]) -> str | None:
  """The cache key of the map a reset compiles, or None for prebuilt maps."""
  name = level.rsplit('/', 1)[-1]
  if name.startswith(('explore_', 'lasertag_')):
    text = f'{level}:{seed}'
  elif name == 'distral_maze':
    text = f'{level}:{config.get("mazeLayout", "")}'
  else:
    return None
  return hashlib.md5(text.encode()).hexdigest()


class Lab:
  """Test double of ``deepmind_lab.Lab``."""

  def __init__(self, level: str, observations: list[str],
               config: dict[str, str] | None = None, renderer: str = 'software',
               level_cache: Any = None):
    if not isinstance(level, str):
      raise TypeError('level must be a string')
    config = dict(config or {})
    for key, value in config.items():
      if not isinstance(key, str) or not isinstance(value, str):
        raise TypeError(f'config keys and values must be strings: {key!r}: {value!r}')
    for name in observations:
      if name not in OBSERVATIONS:
        raise ValueError(f'Unknown observation {name!r}')
    if renderer not in ('software', 'hardware'):
      raise ValueError(f'Unknown renderer {renderer!r}')
    self.level = level
    self.config = config
    self.renderer = renderer
    self.level_cache = level_cache
    self._observation_names = list(observations)
    self._height = int(config.get('height', '240'))
    self._width = int(config.get('width', '320'))
    self._episode_frames = int(config.get('doubleEpisodeFrames',
                                          DEFAULT_EPISODE_FRAMES))
    self._crash_at = int(config.get('doubleCrashAtFrame', '0'))
    self._crash_at_reset = int(config.get('doubleCrashAtReset', '0'))
    self._crash_marker = config.get('doubleCrashMarker')
    self._running = False
    self._closed = False
    self._frames = 0
    self._seed = 0
    self.reset_seeds: list[int] = []
    self.step_calls: list[tuple[np.ndarray, int]] = []
    self.maps_compiled = 0
    self.maps_fetched = 0
    INSTANCES.append(self)

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError('Environment has been closed')

  # -- episodes -------------------------------------------------------------

  def reset(self, episode: int = -1, seed: int | None = None) -> bool:
    self._check_open()
    if seed is None:
      seed = int(np.random.randint(0, 2**31 - 1))
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
      raise TypeError(f'seed must be an integer, got {seed!r}')
    if not 0 <= seed < 2**31:
      raise ValueError(f'seed out of range: {seed}')
    self._seed = int(seed)
    self.reset_seeds.append(self._seed)
    if self._crash_at_reset and len(self.reset_seeds) >= self._crash_at_reset:
      self._crash()
    self._load_map()
    self._frames = 0
    self._running = True
    return True

  def _load_map(self) -> None:
    key = _map_key(self.level, self._seed, self.config)
    if key is None:
      return
    expected = pk3_bytes(key, MAP_COMPILE_MARK + key.encode())
    with tempfile.TemporaryDirectory() as tmp:
      pk3 = os.path.join(tmp, key + '.pk3')
      if self.level_cache is not None and self.level_cache.fetch(key, pk3):
        with open(pk3, 'rb') as f:
          if f.read() != expected:  # As the engine does: the process ends.
            print(f"Didn't find map '{key}'", file=sys.stderr, flush=True)
            os._exit(1)  # pylint: disable=protected-access
        self.maps_fetched += 1
        return
      with open(pk3, 'wb') as f:
        f.write(expected)
      self.maps_compiled += 1
      if self.level_cache is not None:
        self.level_cache.write(key, pk3)

  def step(self, action: np.ndarray, num_steps: int = 1) -> float:
    self._check_open()
    if not self._running:
      raise RuntimeError('Environment in wrong status to advance')
    if not isinstance(action, np.ndarray) or action.dtype != np.intc:
      raise ValueError('action must be a numpy array of dtype np.intc')
    if action.shape != (len(ACTION_SPEC),):
      raise ValueError(f'action must have shape ({len(ACTION_SPEC)},), '
                       f'got {action.shape}')
    for value, spec in zip(action, ACTION_SPEC):
      if not spec['min'] <= value <= spec['max']:
        raise ValueError(f'{spec["name"]}={value} out of range')
    if not isinstance(num_steps, int) or num_steps < 1:
      raise ValueError(f'num_steps must be a positive integer, got {num_steps!r}')
    self.step_calls.append((action.copy(), num_steps))
    per_frame = float(action[3]) + 10.0 * float(action[4])
    reward = 0.0
    for _ in range(num_steps):
      self._frames += 1
      reward += per_frame
      self._maybe_crash()
      if self._frames >= self._episode_frames:
        self._running = False
        break
    return reward

  def _maybe_crash(self) -> None:
    if self._crash_at and self._frames >= self._crash_at:
      self._crash()

  def _crash(self) -> None:
    """Ends the process at once, as a crash of native code would."""
    if self._crash_marker:
      if os.path.exists(self._crash_marker):
        return
      with open(self._crash_marker, 'w') as f:
        f.write(str(os.getpid()))
    sys.stdout.flush()
    os._exit(3)  # pylint: disable=protected-access

  def is_running(self) -> bool:
    return self._running

  def num_steps(self) -> int:
    self._check_open()
    return self._frames

  def observations(self) -> dict[str, np.ndarray]:
    self._check_open()
    if not self._running:
      raise RuntimeError('Environment in wrong status for call to observations()')
    result = {}
    for name in self._observation_names:
      channels = 4 if name.startswith('RGBD') else 3
      frame = np.zeros((self._height, self._width, channels), np.uint8)
      frame[1:, :, :] = (self._seed + self._frames) % 251
      frame[0, :4, 0] = np.frombuffer(self._seed.to_bytes(4, 'little'), np.uint8)
      frame[0, :4, 1] = np.frombuffer(self._frames.to_bytes(4, 'little'), np.uint8)
      if not name.endswith('INTERLEAVED'):
        frame = np.ascontiguousarray(np.transpose(frame, (2, 0, 1)))
      result[name] = frame
    return result

  # -- specs and the rest ---------------------------------------------------

  def observation_spec(self) -> list[dict[str, Any]]:
    specs = []
    for name in OBSERVATIONS:
      channels = 4 if name.startswith('RGBD') else 3
      shape = ((self._height, self._width, channels) if name.endswith('INTERLEAVED')
               else (channels, self._height, self._width))
      specs.append({'name': name, 'dtype': np.uint8, 'shape': shape})
    return specs

  def action_spec(self) -> list[dict[str, Any]]:
    return [dict(spec) for spec in ACTION_SPEC]

  def events(self) -> list:
    self._check_open()
    return []

  def fps(self) -> int:
    return int(self.config.get('fps', '60'))

  def close(self) -> bool:
    self._closed = True
    self._running = False
    return True


@pytest.fixture(name='lab_double')
def lab_double_fixture(monkeypatch):
  """Installs this module as ``deepmind_lab`` for the test; yields the module."""
  del INSTANCES[:]
  monkeypatch.setitem(sys.modules, 'deepmind_lab', sys.modules[__name__])
  yield sys.modules[__name__]
  del INSTANCES[:]


# -- DeepMind Lab's Lua modules, for our own level scripts -----------------------

# Module -> member -> kind, as DeepMind Lab defines them. Kinds: 'method' (called
# as module:name(...)), 'function' (module.name(...)) or 'table'.
_RANDOM_METHODS = ('seed', 'mapGenerationSeed', 'themeGenerationSeed', 'uniformInt',
                   'uniformReal', 'discreteDistribution', 'normalDistribution',
                   'color', 'choice', 'shuffleInPlace', 'shuffle', 'generator',
                   'shuffledIndexGenerator')
_HELPERS_FUNCTIONS = ('split', 'spawnVarToNumberTable', 'pathJoin', 'dirname',
                      'fileExists', 'findFileInLuaPath', 'shallowCopy', 'deepCopy',
                      'tostring', 'secondsToTimeString', 'fromString', 'pairsByKeys')
LUA_MODULES: dict[str, dict[str, str]] = {
    'common.helpers': dict.fromkeys(_HELPERS_FUNCTIONS, 'function'),
    'common.make_map': dict.fromkeys(('makeMap', 'seedRng', 'random'), 'function'),
    'common.pickups': dict.fromkeys(('type', 'moveType', 'defaults'), 'table'),
    'common.random': dict.fromkeys(_RANDOM_METHODS, 'method'),
    'dmlab.system.maze_generation': dict.fromkeys(
        ('mazeGeneration', 'randomMazeGeneration'), 'function'),
}
# Methods of the maze objects that maze_generation's functions return.
MAZE_METHODS = ('entityLayer', 'variationsLayer', 'getEntityCell', 'setEntityCell',
                'fillEntityRect', 'getVariationsCell', 'setVariationsCell',
                'countEntities', 'countVariations', 'rotate', 'paste', 'findRooms',
                'size', 'toWorldPos', 'fromWorldPos', 'visitFill', 'visitRandomPath')
# (module, function) -> the methods of the object it returns.
LUA_OBJECTS = {('dmlab.system.maze_generation', name): MAZE_METHODS
               for name in ('mazeGeneration', 'randomMazeGeneration')}

# The modules' behaviour, as far as our scripts need it. Members listed in
# LUA_MODULES but not modelled here fail when called; members not listed fail
# when read; methods fail when called without ':'. Calls of make_map are
# recorded in the global table `calls`.
_LUA_MODULES_DOUBLE = r"""
return function(catalogue, mazeMethods)
  calls = {makeMap = {}, seedRng = {}}

  local function strict(label, members, impl)
    local object = {}
    for name, kind in pairs(members) do
      local value = impl[name]
      if value == nil then
        value = function()
          error(label .. '.' .. name .. ' is not modelled by the test double', 2)
        end
      end
      if kind == 'method' then
        local method = value
        value = function(self, ...)
          if self ~= object then
            error(label .. '.' .. name .. " is a method: call it with ':'", 2)
          end
          return method(self, ...)
        end
      end
      rawset(object, name, value)
    end
    return setmetatable(object, {__index = function(_, key)
      error(label .. " has no member '" .. tostring(key) .. "' in DeepMind Lab", 2)
    end})
  end

  local state = 1
  local random = strict('common.random', catalogue['common.random'], {
    seed = function(self, value) state = tonumber(value) % 2147483646 + 1 end,
    uniformInt = function(self, lower, upper)
      state = (state * 16807) % 2147483647
      return lower + state % (upper - lower + 1)
    end,
    shuffleInPlace = function(self, array, n)
      local last = (n and n < #array) and n or #array - 1
      for i = 1, last do
        local j = self:uniformInt(i, #array)
        array[i], array[j] = array[j], array[i]
      end
      return array
    end,
    shuffle = function(self, array)
      local copy = {}
      for i, value in ipairs(array) do copy[i] = value end
      return self:shuffleInPlace(copy)
    end,
  })

  local function newMaze(kwargs)
    local rows = {}
    for line in kwargs.entity:gmatch('[^\n]+') do rows[#rows + 1] = line end
    return strict('maze', mazeMethods, {
      size = function(self) return #rows, #rows[1] end,
      getEntityCell = function(self, i, j) return rows[i]:sub(j, j) end,
      toWorldPos = function(self, i, j)
        return (j - 1) * 100 + 50, (#rows - i) * 100 + 50
      end,
    })
  end

  local modules = {
    ['common.random'] = random,
    ['common.helpers'] = strict('common.helpers', catalogue['common.helpers'], {}),
    ['common.make_map'] = strict('common.make_map', catalogue['common.make_map'], {
      makeMap = function(kwargs)
        table.insert(calls.makeMap, kwargs)
        return kwargs.mapName
      end,
      seedRng = function(value) table.insert(calls.seedRng, value) end,
    }),
    ['common.pickups'] = strict('common.pickups', catalogue['common.pickups'], {
      type = {REWARD = 9, GOAL = 10},
      moveType = {BOB = 0, STATIC = 1},
      defaults = {
        apple_reward = {name = 'Apple', classname = 'apple_reward', quantity = 1},
        goal = {name = 'Goal', classname = 'goal', quantity = 10},
      },
    }),
    ['dmlab.system.maze_generation'] = strict(
        'dmlab.system.maze_generation', catalogue['dmlab.system.maze_generation'],
        {mazeGeneration = newMaze}),
  }
  for name, module in pairs(modules) do
    package.preload[name] = function() return module end
  end
end
"""


def lua_runtime():
  """A Lua 5.1 runtime (``lupa``) whose ``require`` gives the modules above.

  Skips the calling test when ``lupa`` is not installed.
  """
  lupa = pytest.importorskip('lupa.lua51')
  lua = lupa.LuaRuntime(unpack_returned_tuples=True)
  catalogue = lua.table_from({module: lua.table_from(members)
                              for module, members in LUA_MODULES.items()})
  install = lua.execute(_LUA_MODULES_DOUBLE)
  install(catalogue, lua.table_from(dict.fromkeys(MAZE_METHODS, 'method')))
  return lua


# Comments, long strings and short strings of Lua source, in one pass so that
# '--' inside a string or a quote inside a comment is read as Lua reads it.
_LUA_NON_CODE = re.compile(r"""--\[(=*)\[.*?\]\1\]|\[(=*)\[.*?\]\2\]|--[^\n]*"""
                           r"""|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*\"""", re.S)
_LUA_REQUIRE = re.compile(r"""local\s+(\w+)\s*=\s*require\s*\(?\s*['"]([\w.]+)['"]""")


def _lua_code(source: str, keep_strings: bool) -> str:
  """``source`` with comments (and strings, unless kept) blanked, lines kept."""
  def blank(match: re.Match) -> str:
    text = match.group(0)
    if text[0] in '\'"':
      return text if keep_strings else "''"
    return '\n' * text.count('\n')
  return _LUA_NON_CODE.sub(blank, source)


def _member_uses(code: str, name: str):
  """``(line, separator, member)`` of every ``name.member`` / ``name:member``."""
  pattern = re.compile(rf'(?<![\w.:]){re.escape(name)}\s*([.:])\s*(\w+)')
  for match in pattern.finditer(code):
    yield code.count('\n', 0, match.start()) + 1, match.group(1), match.group(2)


def _use_error(label: str, alias: str, members: dict[str, str], line: int,
               separator: str, member: str) -> str | None:
  """What is wrong with one use of ``member`` of a module or object, if anything."""
  kind = members.get(member)
  if kind is None:
    return f"line {line}: {label} has no member '{member}' in DeepMind Lab"
  if kind == 'method' and separator != ':':
    return f'line {line}: {label}.{member} is a method: call it as {alias}:{member}(...)'
  if kind != 'method' and separator != '.':
    return f'line {line}: {label}.{member} is not a method: use {alias}.{member}'
  return None


def lua_module_errors(source: str) -> list[str]:
  """Uses of DeepMind Lab's Lua modules in a level script that DeepMind Lab lacks.

  Reads which modules ``source`` requires (``local name = require '...'``), and
  checks every ``name.member`` and ``name:member`` against ``LUA_MODULES``, and
  the methods called on maze objects (``local maze = name.mazeGeneration...``)
  against ``MAZE_METHODS``. Returns one message per problem; none when clean.
  """
  errors = []
  code = _lua_code(source, keep_strings=False)
  for alias, module in _LUA_REQUIRE.findall(_lua_code(source, keep_strings=True)):
    members = LUA_MODULES.get(module)
    if members is None:
      errors.append(f"module '{module}' is not one the test double describes "
                    f'(add its members as DeepMind Lab defines them)')
      continue
    for line, separator, member in _member_uses(code, alias):
      error = _use_error(module, alias, members, line, separator, member)
      if error:
        errors.append(error)
    constructors = re.compile(rf'local\s+(\w+)\s*=\s*{re.escape(alias)}\s*\.\s*(\w+)')
    for variable, function in constructors.findall(code):
      methods = LUA_OBJECTS.get((module, function))
      if methods is None:
        continue
      for line, separator, member in _member_uses(code, variable):
        error = _use_error(f'{module}.{function}(...)', variable,
                           dict.fromkeys(methods, 'method'), line, separator, member)
        if error:
          errors.append(error)
  return errors
