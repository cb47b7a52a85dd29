-- Forget one pending install: its record, its bookkeeping, its quarantine when asked
-- (refuted: only what came with its own token), and its token, but only while still
-- pending: a token verified in the meantime (now "app") survives a late refutation.
-- KEYS[1] accepted-token hash, KEYS[2] portals version counter, KEYS[3] pending hash,
-- KEYS[4] member's pending-tokens set, KEYS[5] pending index, KEYS[6] quarantine-bytes
-- hash, KEYS[7] quarantine list.
-- ARGV[1] digest, ARGV[2] source ("member_id:digest"), ARGV[3] "1": drop the quarantine
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('HDEL', KEYS[6], ARGV[2])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[7])
end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw)['kind'] == 'pending' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
