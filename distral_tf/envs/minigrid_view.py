"""MiniGrid's egocentric view, computed and drawn as pixels without its slow path.

``EgocentricView`` gives MiniGrid's symbolic view (``gen_obs()['image']``) of a
``MiniGridEnv`` straight from its cell list; ``ViewRenderer`` draws it with one
look-up into a table of MiniGrid's own tiles. Both equal MiniGrid's own results
(tests/test_minigrid_tasks.py); docs/pixel_level_set.md, "Speed", says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Object codes of MiniGrid's symbolic view: (type, colour, state) triples,
# flattened to one index into a table of tiles. One extra code is the agent.
_NUM_TYPES = 11
_NUM_COLORS = 6
_NUM_STATES = 3
_CODE_WEIGHTS = np.array([_NUM_COLORS * _NUM_STATES, _NUM_STATES, 1], np.intp)
_AGENT_CODE = _NUM_TYPES * _NUM_COLORS * _NUM_STATES
_UNSEEN_TYPE = 0
_EMPTY_CODE = (1, 0, 0)  # MiniGrid's encoding of an empty visible cell.
_WALL_CODE = (2, 5, 0)  # A grey wall.


# -- rendering -----------------------------------------------------------------


class ViewRenderer:
  """Draws MiniGrid's symbolic egocentric view as RGB pixels.

  The view is a [view, view, 3] array of (type, colour, state) codes (see
  ``EgocentricView``). Drawing it is one look-up in a table of MiniGrid's own
  tiles (highlighted, as MiniGrid draws cells in sight; unseen cells black) and
  one copy, instead of MiniGrid's cell-by-cell ``get_pov_render``. The agent's
  cell always shows the agent, facing up.
  """

  def __init__(self, view_size: int, tile_size: int):
    self._tile_size = tile_size
    self._agent_cell = (view_size // 2, view_size - 1)  # (x, y), facing up.
    self._tiles = np.zeros((_AGENT_CODE + 1, tile_size, tile_size, 3), np.uint8)
    self._ready = np.zeros(_AGENT_CODE + 1, bool)
    self._side = view_size * tile_size

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self._side, self._side, 3)

  def render(self, view: np.ndarray) -> np.ndarray:
    """[view, view, 3] codes indexed [x, y] -> new uint8 [H, W, 3] image."""
    codes = view.dot(_CODE_WEIGHTS)
    codes[self._agent_cell] = _AGENT_CODE
    codes = codes.T  # Rows are y.
    if not self._ready[codes].all():
      self._add_tiles(codes)
    tiles = self._tiles[codes]  # [y, x, ty, tx, 3]
    return tiles.transpose(0, 2, 1, 3, 4).reshape(self._side, self._side, 3)

  def _add_tiles(self, codes: np.ndarray) -> None:
    """Renders the tiles of ``codes`` not in the table yet (unseen: black)."""
    from minigrid.core import grid, world_object  # pylint: disable=g-import-not-at-top
    for code in np.unique(codes[~self._ready[codes]]):
      self._ready[code] = True
      type_idx, rest = divmod(int(code), _NUM_COLORS * _NUM_STATES)
      if type_idx == _UNSEEN_TYPE:
        continue
      obj = (None if code == _AGENT_CODE else
             world_object.WorldObj.decode(type_idx,
                                                        *divmod(rest, _NUM_STATES)))
      self._tiles[code] = grid.Grid.render_tile(
          obj, agent_dir=3 if code == _AGENT_CODE else None, highlight=True,
          tile_size=self._tile_size)


# -- the egocentric view ---------------------------------------------------------


class EgocentricView:
  """MiniGrid's ``gen_obs()['image']``, computed without building sub-grids.

  MiniGrid slices, rotates and re-encodes a copy of the grid (creating new wall
  objects) at every step. This reads the view's cells straight from the
  world's cell list instead, with the same occlusion rule (``Grid.process_vis``),
  and returns an identical array several times faster.
  """

  def __init__(self, view_size: int):
    self._size = view_size
    self._agent = (view_size // 2, view_size - 1)
    # View cell (i, j) is `forward` cells ahead and `right` cells to the right.
    i, j = np.meshgrid(np.arange(view_size), np.arange(view_size), indexing='ij')
    forward, right = view_size - 1 - j, i - view_size // 2
    # World offsets per agent direction (MiniGrid: 0 east, 1 south, 2 west, 3 north).
    self._offsets = []
    for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1)):
      self._offsets.append((forward * dx - right * dy, forward * dy + right * dx))
    # Each row is swept rightwards, then leftwards: (column, direction).
    self._sweep = ([(i, 1) for i in range(view_size - 1)] +
                   [(i, -1) for i in range(view_size - 1, 0, -1)])

  def image(self, env: Any) -> np.ndarray:
    """The [view, view, 3] symbolic view of ``env`` (a ``MiniGridEnv``), [x, y]."""
    grid, size = env.grid, self._size
    x_offset, y_offset = self._offsets[env.agent_dir]
    xs, ys = x_offset + env.agent_pos[0], y_offset + env.agent_pos[1]
    inside = (xs >= 0) & (xs < grid.width) & (ys >= 0) & (ys < grid.height)
    cells = grid.grid
    codes, opaque = [], []
    for k in np.where(inside, ys * grid.width + xs, -1).ravel().tolist():
      if k < 0:  # Outside the world: MiniGrid shows a wall.
        codes.append(_WALL_CODE)
        opaque.append(True)
        continue
      obj = cells[k]
      if obj is None:
        codes.append(_EMPTY_CODE)
        opaque.append(False)
      else:
        codes.append(obj.encode())
        opaque.append(not obj.see_behind())
    image = np.array(codes, np.uint8).reshape(size, size, 3)
    if not env.see_through_walls:
      image[~self._visible(opaque)] = 0
    image[self._agent] = env.carrying.encode() if env.carrying else _EMPTY_CODE
    return image

  def _visible(self, opaque: list[bool]) -> np.ndarray:
    """MiniGrid's occlusion sweep over the flat [x * size + y] opacity list."""
    size = self._size
    mask = [False] * (size * size)
    mask[self._agent[0] * size + self._agent[1]] = True
    for j in reversed(range(size)):
      for i, step in self._sweep:
        k = i * size + j
        if not mask[k] or opaque[k]:
          continue
        mask[k + step * size] = True
        if j > 0:
          mask[k + step * size - 1] = True
          mask[k - 1] = True
    return np.array(mask).reshape(size, size)
