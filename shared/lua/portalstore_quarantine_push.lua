-- Hold one event of a pending install, within bounds.
-- KEYS[1] quarantine list, KEYS[2] its pending install's hash, KEYS[3] quarantine-bytes
-- hash, KEYS[4] pending index.
-- ARGV[1] max entries, ARGV[2] event JSON, ARGV[3] source ("member_id:digest"),
-- ARGV[4] max quarantined bytes in all, ARGV[5] max bytes for this source, ARGV[6] now.
-- The list expires with its pending install: nothing unverified holds memory for longer.
-- Returns the new length, -1 when this quarantine is full, -2 when no pending install
-- waits for the token (nothing could ever release the event), -3 over a byte cap.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -2
end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return -1
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[6]))
for _, source in ipairs(expired) do
  redis.call('HDEL', KEYS[3], source)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[6]))
end
local size = #ARGV[2]
local own = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if own + size > tonumber(ARGV[5]) then
  return -3
end
local total = size
for _, held in ipairs(redis.call('HVALS', KEYS[3])) do
  total = total + tonumber(held)
end
if total > tonumber(ARGV[4]) then
  return -3
end
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[3], size)
local ttl = redis.call('TTL', KEYS[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return length
