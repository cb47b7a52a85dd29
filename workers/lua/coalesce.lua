-- One job of a coalescing or batch handler reaches dispatch: lead a group, join one, or run.
--
-- A group is one handler's waiting work for a portal (batch handlers) or for one entity's
-- update event (coalescing handlers). Its leader is the RQ job that opened it (keyed by job
-- id, so a duplicate delivery of the same event is not a second leader). Every other job
-- that arrives while the group is open joins it and is finished by the caller: its event is
-- stored under its item field, replacing an older event of the same field (ts, then
-- received_at, then event id; Bitrix24 may reorder). The leader is held for `delay`; when it
-- comes back and the group has been quiet for `delay` (or has waited `max wait` in all), it
-- claims the group: the hash is renamed to the leader's claim key, so a new arrival opens
-- a new group, and a re-run of the leader (worker killed mid-handler, retry, requeue) finds
-- its claim again instead of losing the merged events. The caller deletes the claim once the
-- handler has succeeded.
--
-- KEYS[1]  group hash {leader, started, last, o:<field> = 'ts ra id', p:<field> = event JSON}
-- KEYS[2]  this job's claim key (the group renamed)
-- ARGV[1]  job id
-- ARGV[2]  item field of this event
-- ARGV[3]  event ts     ARGV[4] event received_at     ARGV[5] event id
-- ARGV[6]  event JSON
-- ARGV[7]  delay (ms)   ARGV[8] max wait (ms)   ARGV[9] group TTL (ms)   ARGV[10] claim TTL (ms)
-- returns {'hold', ms} | {'merged'} | {'run', json, json, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function claimed(key)
  local out = {'run'}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'p:' then
      out[#out + 1] = flat[i + 1]
    end
  end
  return out
end

local function newer(old)
  local ts, ra, id = string.match(old, '^(%S+) (%S+) (.*)$')
  local mine_ts, mine_ra = tonumber(ARGV[3]), tonumber(ARGV[4])
  if mine_ts ~= tonumber(ts) then return mine_ts > tonumber(ts) end
  if mine_ra ~= tonumber(ra) then return mine_ra > tonumber(ra) end
  return ARGV[5] > id
end

local function put()
  local field = ARGV[2]
  local old = redis.call('HGET', KEYS[1], 'o:' .. field)
  if not old or newer(old) then
    redis.call('HSET', KEYS[1], 'o:' .. field, ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5], 'p:' .. field, ARGV[6])
  end
end

if redis.call('EXISTS', KEYS[2]) == 1 then
  return claimed(KEYS[2])
end
local delay, max_wait = tonumber(ARGV[7]), tonumber(ARGV[8])
local g = redis.call('HMGET', KEYS[1], 'leader', 'started', 'last')
if not g[1] then
  redis.call('HSET', KEYS[1], 'leader', ARGV[1], 'started', now, 'last', now)
  put()
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[9]))
  return {'hold', delay}
end
if g[1] ~= ARGV[1] then
  put()
  redis.call('HSET', KEYS[1], 'last', now)
  return {'merged'}
end
local quiet = now - tonumber(g[3])
if quiet < delay and now - tonumber(g[2]) < max_wait then
  return {'hold', math.min(delay - quiet, max_wait - (now - tonumber(g[2])))}
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[10]))
return claimed(KEYS[2])
