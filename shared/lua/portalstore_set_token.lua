-- Make one application token the portal's accepted app token, atomically.
-- KEYS[1] accepted-token hash (digest -> {"kind","expires_at"}), KEYS[2] portals version counter
-- ARGV[1] new digest, ARGV[2] its JSON entry, ARGV[3] now (unix seconds),
-- ARGV[4] grace end for the previous app token (0 = drop it at once)
-- Previous "app" tokens become "grace" (or go); "pending" tokens and expired entries go;
-- "webhook" tokens stay. Returns 1 when the app token changed, 0 when it was already this one.
local now = tonumber(ARGV[3])
local grace_until = tonumber(ARGV[4])
local changed = 1
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local digest, entry = entries[i], cjson.decode(entries[i + 1])
  local expires_at = tonumber(entry['expires_at']) or 0
  if digest == ARGV[1] then
    if entry['kind'] == 'app' then changed = 0 end
  elseif expires_at > 0 and expires_at <= now then
    redis.call('HDEL', KEYS[1], digest)
  elseif entry['kind'] == 'app' and grace_until > 0 then
    redis.call('HSET', KEYS[1], digest, cjson.encode({kind = 'grace', expires_at = grace_until}))
  elseif entry['kind'] == 'app' or entry['kind'] == 'pending' then
    redis.call('HDEL', KEYS[1], digest)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return changed
