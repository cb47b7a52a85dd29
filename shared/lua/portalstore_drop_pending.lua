-- Forget a pending install's token, but only while it is still pending: a token that was
-- verified in the meantime (now "app") must survive a late refutation of an older attempt.
-- KEYS[1] accepted-token hash, KEYS[2] portals version counter; ARGV[1] digest
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw)['kind'] == 'pending' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
