-- Coalescing group of one handler for (portal, event, entity): run once after a burst.
--
-- The first update event of an entity to reach dispatch becomes the group's leader; its job
-- is deferred by the handler's delay (0: back to the tail of the queue). Every later event
-- of the group that reaches dispatch before the leader runs is merged: it only replaces the
-- group's "latest" payload when it is newer (ts, then received_at, then id). When the
-- leader's job comes back it claims the latest payload and the group ends, so the next
-- change starts a new one. A job that runs again (crash, retry) finds its own state again.
--
-- KEYS[1]  group hash {leader, ts, ra, id, latest}
-- ARGV[1]  'arrive' | 'claim'
-- ARGV[2]  event id
-- ARGV[3]  event ts
-- ARGV[4]  event received_at
-- ARGV[5]  event JSON ('arrive')
-- ARGV[6]  group TTL (ms) ('arrive')
-- arrive -> 'lead' | 'merged'
-- claim  -> {'latest', json} (the leader) | {'own'} (no group: run this event) | {'merged'}
local function newer(g)
  local ts, gts = tonumber(ARGV[3]), tonumber(g[2])
  if ts ~= gts then return ts > gts end
  local ra, gra = tonumber(ARGV[4]), tonumber(g[3])
  if ra ~= gra then return ra > gra end
  return ARGV[2] > g[4]
end

local g = redis.call('HMGET', KEYS[1], 'leader', 'ts', 'ra', 'id')
if ARGV[1] == 'arrive' then
  if not g[1] then
    redis.call('HSET', KEYS[1], 'leader', ARGV[2], 'ts', ARGV[3], 'ra', ARGV[4], 'id', ARGV[2], 'latest', ARGV[5])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
    return 'lead'
  end
  if g[1] == ARGV[2] then return 'lead' end
  if newer(g) then
    redis.call('HSET', KEYS[1], 'ts', ARGV[3], 'ra', ARGV[4], 'id', ARGV[2], 'latest', ARGV[5])
  end
  return 'merged'
end
if not g[1] then return {'own'} end
if g[1] == ARGV[2] then
  local latest = redis.call('HGET', KEYS[1], 'latest')
  redis.call('DEL', KEYS[1])
  return {'latest', latest}
end
if newer(g) then return {'own'} end
return {'merged'}
