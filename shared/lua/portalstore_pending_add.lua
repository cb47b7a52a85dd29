-- Store a pending install, one per (member id, application token), within the global cap.
-- KEYS[1] pending hash, KEYS[2] member's pending-tokens set, KEYS[3] pending index (zset,
-- score = expiry), KEYS[4] quarantine-bytes hash, KEYS[5] accepted-token hash,
-- KEYS[6] portals version counter.
-- ARGV[1] token digest, ARGV[2] source ("member_id:digest"), ARGV[3] now, ARGV[4] expiry
-- (unix seconds), ARGV[5] max pending installs, ARGV[6] the "pending" token entry (JSON),
-- ARGV[7..] the pending hash as field, value pairs.
-- Returns 1 stored, 0 when this (member id, token) is already pending (the first is kept:
-- nothing replaces a pending install), -1 when the global cap is reached.
local now = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, source in ipairs(expired) do
  redis.call('HDEL', KEYS[4], source)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then
  return -1
end
local expiry = tonumber(ARGV[4])
local fields = {}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIREAT', KEYS[1], expiry)
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('TTL', KEYS[2]) < expiry - now then
  redis.call('EXPIREAT', KEYS[2], expiry)
end
redis.call('ZADD', KEYS[3], expiry, ARGV[2])
-- accept the token as "pending" unless it is already accepted as something else
local raw = redis.call('HGET', KEYS[5], ARGV[1])
if not raw or cjson.decode(raw)['kind'] == 'pending' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
  redis.call('INCR', KEYS[6])
end
return 1
