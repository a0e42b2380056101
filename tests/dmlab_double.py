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
  ``level_cache.fetch``/``write`` on reset like the real module;
* ``doubleCrashAtFrame=N`` kills the process (``os._exit``) when a frame
  count reaches N, ``doubleCrashAtReset=N`` at the process's N-th reset; with
  ``doubleCrashMarker=PATH`` it does so only once per marker file.

Install it in-process with the ``lab_double`` fixture, or name it
(``'tests.dmlab_double'``) as the adapter's ``lab_module`` in child processes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
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
    expected = MAP_COMPILE_MARK + key.encode()
    with tempfile.TemporaryDirectory() as tmp:
      pk3 = os.path.join(tmp, key + '.pk3')
      if self.level_cache is not None and self.level_cache.fetch(key, pk3):
        with open(pk3, 'rb') as f:
          if f.read() != expected:
            raise RuntimeError(f'level cache returned a corrupt map for {key}')
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
