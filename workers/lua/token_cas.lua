-- Compare-and-set on a portal record, keyed on the refresh token a refresh used.
--
-- A refresh token works once: the pair it bought must be saved before anyone uses it, and
-- only if nobody saved another pair meanwhile. The stored refresh ciphertext is the version:
-- it changes on every save (fresh nonce), so equality means "still the pair I refreshed".
--
-- KEYS[1]  portal hash
-- KEYS[2]  portals version counter (ingress caches watch it)
-- ARGV[1]  the refresh_token ciphertext read before refreshing
-- ARGV[2]  "1" to bump token_gen (a new pair), "0" otherwise (a status change)
-- ARGV[3..] field, value, field, value, ...
-- returns  the token_gen now stored, or -1 when the record changed under us (nothing written)

if redis.call('HGET', KEYS[1], 'refresh_token') ~= ARGV[1] then
  return -1
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local gen
if ARGV[2] == '1' then
  gen = redis.call('HINCRBY', KEYS[1], 'token_gen', 1)
else
  gen = tonumber(redis.call('HGET', KEYS[1], 'token_gen') or '0')
end
redis.call('INCR', KEYS[2])
return gen
