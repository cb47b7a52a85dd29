-- Hold one event of a pending install, within bounds.
-- KEYS[1] quarantine list; ARGV[1] max entries, ARGV[2] ttl seconds, ARGV[3] event JSON
-- The list expires ttl seconds after its first event: a pending install that is never
-- verified cannot hold memory for longer. Returns the new length, or -1 when full.
local max = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) >= max then
  return -1
end
local length = redis.call('RPUSH', KEYS[1], ARGV[3])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return length
