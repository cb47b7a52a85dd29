-- Release a portal's parked jobs when, and only when, the portal is active (authorized again):
-- each goes back to the end of its queue, leaving RQ's DeferredJobRegistry.
--
-- Run inside the transaction that saves the portal record, so a record made active and its
-- parked jobs released are one step: a worker that parks a job afterwards sees the active
-- status (ack.lua checks it) and queues the job instead, so no job stays parked behind an
-- authorized portal.
--
-- KEYS[1] parked list, KEYS[2] parked-portals set, KEYS[3] portal hash. ARGV[1] member id,
-- ARGV[2] RQ's key names (shared/rqkeys.py LUA_ARG).
-- Returns the number of jobs released (0 when the portal is not active: nothing changes).
if redis.call('HGET', KEYS[3], 'status') ~= 'active' then
  return 0
end
local rq = cjson.decode(ARGV[2])
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local released = 0
for _, id in ipairs(ids) do
  local jkey = rq.job .. id
  local origin = redis.call('HGET', jkey, 'origin')
  if origin and redis.call('HGET', jkey, 'status') == 'deferred' then
    redis.call('ZREM', rq.deferred .. origin, id)
    redis.call('HSET', jkey, 'status', 'queued')
    redis.call('RPUSH', rq.queue .. origin, id)
    released = released + 1
  end
end
return released
