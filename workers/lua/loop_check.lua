-- Loop breaker: may a handler run on this event without feeding a write-echo-write loop?
--
-- A cycle is a handler run on an event of an entity the pipeline wrote within the window,
-- where the event was not caused by a person (its user is our writer user, a robot (0) or
-- unknown), i.e. it may be a consequence of our own write that echo suppression did not
-- catch. More than `bound` cycles within the window: cut. An event caused by a person
-- resets the chain: a busy entity changed by people is not a loop. Counting is by event id,
-- so a retried event is not counted twice.
--
-- KEYS[1]  chain key (writer user of our last write to the entity; absent = none in window)
-- KEYS[2]  cycles sorted set (event id -> ms)
-- ARGV[1]  event id
-- ARGV[2]  event user id ('' when none)
-- ARGV[3]  window (ms)
-- ARGV[4]  bound
-- returns 0 allowed (not a cycle), 1 allowed (counted as a cycle), -1 cut
local writer = redis.call('GET', KEYS[1])
if not writer then return 0 end
local user = ARGV[2]
if user ~= '' and user ~= '0' and user ~= writer then
  redis.call('DEL', KEYS[2])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], window)
return 1
