-- Leaky bucket of one portal, shared by every process (and by default every app) on this Redis.
--
-- The bucket mirrors Bitrix24's: each request adds 1, the level drains at `drain` per second,
-- requests above `burst` are refused. Instead of refusing, a caller *reserves* the next free
-- slot and is told how long to sleep before sending: the level may exceed `burst` by the
-- reservations still waiting, so callers are served in arrival order, each sleeps exactly
-- once, and nobody polls. A caller that would wait longer than `max_wait` reserves nothing
-- and gets the wait back as a negative number (it defers its job instead).
--
-- The clock is Redis's own (TIME), so processes on different hosts agree on it.
--
-- KEYS[1]  bucket hash {level, ts}
-- ARGV[1]  op: "take" | "full" | "peek"
-- ARGV[2]  drain (requests per second)
-- ARGV[3]  burst (requests the bucket holds)
-- ARGV[4]  max_wait (seconds; "take" only)
--
-- take -> wait in seconds (>= 0: slot reserved, sleep that long) or -(wait) when over max_wait
-- full -> 0; a QUERY_LIMIT_EXCEEDED still arrived: the bucket is treated as full from now on
-- peek -> current level (for status)

local op = ARGV[1]
local drain = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local state = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(state[1]) or 0
local ts = tonumber(state[2]) or now
if now > ts then
  level = level - (now - ts) * drain
  if level < 0 then level = 0 end
  ts = now
end

if op == 'peek' then
  return tostring(level)
end

if op == 'full' then
  if level < burst then level = burst end
else
  -- The slot this request would take; it may be sent once the level is back below burst.
  local wait = (level + 1 - burst) / drain
  if wait < 0 then wait = 0 end
  if wait > tonumber(ARGV[4]) then
    return tostring(-wait)
  end
  level = level + 1
  redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[1], math.ceil((level / drain + 60) * 1000))
  return tostring(wait)
end

redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((level / drain + 60) * 1000))
return '0'
