--[[ Fixed-layout mazes of distral_tf's `mazes` level set (tasks 7 and 8).

Like the paper's maze tasks: a fixed layout per task, a goal object (+10) at a
fixed place, collected again and again from different start positions within
the episode (collecting it restarts the level at a new start), and apples (+1)
placed at random every episode.

Loaded through Lab's `levelDirectory` setting. Settings (Lab config strings):

*   `mazeLayout` - 'a' or 'b' (default 'a').
*   `episodeLengthSeconds` - default 60.
*   `appleFraction` - fraction of the apple cells ('A') that get an apple in an
    episode, default 0.5.

Layout legend: '*' wall, ' ' corridor, 'P' start position, 'A' possible
apple, 'G' the goal.

Uses DeepMind Lab's public Lua modules only: `common.make_map` (makeMap,
seedRng), `common.pickups` (defaults), `common.random` (the methods seed,
uniformInt and shuffle, which returns a shuffled copy of an array) and
`dmlab.system.maze_generation` (mazeGeneration{entity}, and the maze's
methods size, getEntityCell, toWorldPos).
]]

local make_map = require 'common.make_map'
local maze_generation = require 'dmlab.system.maze_generation'
local pickups = require 'common.pickups'
local random = require 'common.random'

local LAYOUTS = {
    a = [[
***************
*P  A  *  A  P*
* *** * * *** *
* *A  *   A * *
* * ***** *** *
*A    G      A*
*** * *** * ***
*P  *  A  *  P*
* ***** ***** *
*A     P     A*
***************
]],
    b = [[
*******************
*P    *     A    P*
* *** * *** ***** *
* *A  *   *     * *
* * ***** * *** * *
*   *   A * *G  * *
*** * *** * * *** *
*A  *   * *   *  A*
* ***** * ***** * *
*   A   *     * * *
* ******* *** * * *
*P        A  *   P*
*******************
]],
}

-- Texture choices of each layout's map are fixed, so every worker compiles
-- the same map and the level cache serves all but the first.
local MAP_SEED = {a = 101, b = 202}

local api = {}

-- Cells are keyed by their world position (rounded), as map entities give it.
local function cellKey(x, y)
  return string.format('%d %d', math.floor(x + 0.5), math.floor(y + 0.5))
end

local function originKey(origin)
  local x, y = origin:match('^%s*(%S+)%s+(%S+)')
  return cellKey(tonumber(x), tonumber(y))
end

function api:init(settings)
  local layout = settings.mazeLayout or 'a'
  assert(LAYOUTS[layout], 'distral_maze: unknown mazeLayout ' .. layout)
  api._episodeLengthSeconds = tonumber(settings.episodeLengthSeconds or '60')
  api._appleFraction = tonumber(settings.appleFraction or '0.5')

  local maze = maze_generation.mazeGeneration{entity = LAYOUTS[layout]}
  api._starts = {}
  api._appleCells = {}
  local height, width = maze:size()
  for i = 1, height do
    for j = 1, width do
      local c = maze:getEntityCell(i, j)
      if c == 'P' or c == 'A' then
        local key = cellKey(maze:toWorldPos(i, j))
        if c == 'P' then
          table.insert(api._starts, key)
        else
          table.insert(api._appleCells, key)
        end
      end
    end
  end

  make_map.seedRng(MAP_SEED[layout])
  api._mapName = make_map.makeMap{
      mapName = 'distral_maze_' .. layout,
      mapEntityLayer = LAYOUTS[layout],
      useSkybox = true,
  }
end

function api:createPickup(classname)
  return pickups.defaults[classname]
end

function api:start(episode, seed)
  random:seed(seed)
  local cells = random:shuffle(api._appleCells)
  local count = math.floor(api._appleFraction * #cells + 0.5)
  api._apples = {}
  for k = 1, count do
    api._apples[cells[k]] = true
  end
  api._mapLoaded = false
end

-- Called at the start of the episode and after each goal: picks a new start.
function api:nextMap()
  api._start = api._starts[random:uniformInt(1, #api._starts)]
  if api._mapLoaded then
    return ''  -- Restart on the map already loaded.
  end
  api._mapLoaded = true
  return api._mapName
end

function api:updateSpawnVars(spawnVars)
  local classname = spawnVars.classname
  if classname == 'info_player_start' then
    return originKey(spawnVars.origin) == api._start and spawnVars or nil
  elseif classname == 'apple_reward' then
    return api._apples[originKey(spawnVars.origin)] and spawnVars or nil
  end
  return spawnVars
end

function api:hasEpisodeFinished(timeSeconds)
  return timeSeconds >= api._episodeLengthSeconds
end

return api
