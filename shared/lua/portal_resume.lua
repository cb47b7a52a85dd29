-- Resume a paused portal (`b24pipe portals resume`): in one step, it is no longer paused and
-- its held jobs go back to the front of their queues in arrival order, ahead of its events
-- still waiting there (which are newer), so the portal's events run in the order they came.
-- KEYS[1] paused-portals set, KEYS[2] the portal's held list. ARGV[1] member id,
-- ARGV[2] RQ's key names (shared/rqkeys.py LUA_ARG).
-- Returns how many jobs were put back.
local rq = cjson.decode(ARGV[2])
redis.call('SREM', KEYS[1], ARGV[1])
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local back = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  local jkey = rq.job .. id
  local origin = redis.call('HGET', jkey, 'origin')
  if origin then
    redis.call('ZREM', rq.deferred .. origin, id)
    redis.call('HSET', jkey, 'status', 'queued')
    redis.call('LPUSH', rq.queue .. origin, id)
    back = back + 1
  end
end
redis.call('DEL', KEYS[2])
return back
