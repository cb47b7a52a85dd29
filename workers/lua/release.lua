-- Release a portal's parked jobs (it is authorized again): each goes back to the end of its
-- queue, leaving RQ's DeferredJobRegistry.
-- KEYS[1] parked list, KEYS[2] parked-portals set. ARGV[1] member id. Returns the count.
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local released = 0
for _, id in ipairs(ids) do
  local jkey = 'rq:job:' .. id
  local origin = redis.call('HGET', jkey, 'origin')
  if origin and redis.call('HGET', jkey, 'status') == 'deferred' then
    redis.call('ZREM', 'rq:deferred:' .. origin, id)
    redis.call('HSET', jkey, 'status', 'queued')
    redis.call('RPUSH', 'rq:queue:' .. origin, id)
    released = released + 1
  end
end
return released
