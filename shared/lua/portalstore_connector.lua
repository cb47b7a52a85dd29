-- Give a portal that has no `auth_connector` the one offered; keep the one it has.
--
-- KEYS[1] the portal record   ARGV[1] the connector to give it
--
-- A portal installed before offline events were configured has none. Returns the portal's
-- connector after the call, or '' when there is no record (nothing is created).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return ''
end
local current = redis.call('HGET', KEYS[1], 'auth_connector')
if current and current ~= '' then
  return current
end
redis.call('HSET', KEYS[1], 'auth_connector', ARGV[1])
return ARGV[1]
