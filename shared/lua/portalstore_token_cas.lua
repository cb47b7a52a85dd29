-- Compare-and-set on a portal record, keyed on the refresh token a refresh used.
--
-- A refresh token works once: the pair it bought must be saved before anyone uses it, and
-- only if nobody saved another pair meanwhile. The stored refresh ciphertext is the version:
-- it changes on every save (fresh nonce), so equality means "still the pair I refreshed".
--
-- The keep-alive index (member -> when its pair was issued) and the set of portals needing
-- re-authorization move in the same step: a new pair is indexed at its issue time and the
-- portal leaves the set; the only status change made here (re-authorization needed) does
-- the opposite.
--
-- KEYS[1]  portal hash
-- KEYS[2]  portals version counter (ingress caches watch it)
-- KEYS[3]  keep-alive index (sorted set)
-- KEYS[4]  portals needing re-authorization (set)
-- ARGV[1]  the refresh_token ciphertext read before refreshing
-- ARGV[2]  "1" to bump token_gen (a new pair), "0" otherwise (a status change)
-- ARGV[3]  member id
-- ARGV[4]  issue time of the new pair (unix seconds; ignored for a status change)
-- ARGV[5..] field, value, field, value, ...
-- returns  the token_gen now stored, or -1 when the record changed under us (nothing written)

if redis.call('HGET', KEYS[1], 'refresh_token') ~= ARGV[1] then
  return -1
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local gen
if ARGV[2] == '1' then
  gen = redis.call('HINCRBY', KEYS[1], 'token_gen', 1)
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  redis.call('SREM', KEYS[4], ARGV[3])
else
  gen = tonumber(redis.call('HGET', KEYS[1], 'token_gen') or '0')
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[3])
end
redis.call('INCR', KEYS[2])
return gen
