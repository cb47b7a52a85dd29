-- One maintenance tick, run by every worker's heartbeat thread:
-- 1. heartbeat: this worker's time in the workers hash, its RQ worker record, and the
--    StartedJobRegistry scores of its in-flight jobs pushed forward (so RQ's own cleanup
--    never takes a live job for abandoned);
-- 2. recovery: a worker silent for more than ARGV[3] seconds is dead; its in-flight jobs go
--    back to the front of their queues and its records are removed;
-- 3. scheduled jobs that are due move back to their queues (what `rq worker --with-scheduler`
--    would do), and stale fairness horizons are dropped.
-- Returns {recovered, promoted, next}: `next` is the time the earliest scheduled job left
-- falls due (a string, so Lua keeps its fraction; '' when none), for the caller's next tick.
-- Liveness is judged by Redis's clock (TIME), never the hosts': workers whose clocks differ
-- still agree on who is silent. When no worker at all ticked for more than half of ARGV[3]
-- (KEYS[3], the fleet's last tick), Redis was unreachable (or stalled, or no worker ran):
-- the silence is the outage's, not the workers', so every heartbeat restarts from now and a
-- worker is recovered only if it stays silent ARGV[3] seconds after Redis is back.
-- KEYS[1] workers hash, KEYS[2] defer-horizon hash, KEYS[3] fleet clock.
-- ARGV[1] this worker, ARGV[2] now (the host's: scheduled jobs' times are hosts' times), ARGV[3] dead after (s), ARGV[4] in-flight key prefix,
-- ARGV[5] registry ttl, ARGV[6] promote limit, ARGV[7] RQ worker hash fields (queues csv),
-- ARGV[8] RQ timestamp of now, ARGV[9] pid, ARGV[10] hostname, ARGV[11] RQ's key names
-- (shared/rqkeys.py LUA_ARG), ARGV[12..] queue names.
local me = ARGV[1]
local now = tonumber(ARGV[2])
local dead_after = tonumber(ARGV[3])
local prefix = ARGV[4]
local ttl = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local rq = cjson.decode(ARGV[11])
local clock = redis.call('TIME')
local beat_now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local fleet_last = tonumber(redis.call('GET', KEYS[3]) or beat_now)
redis.call('SET', KEYS[3], beat_now)
local outage = beat_now - fleet_last > dead_after / 2

-- 1. heartbeat
if me ~= '' then
  redis.call('HSET', KEYS[1], me, beat_now)
  local wkey = rq.worker .. me
  if redis.call('EXISTS', wkey) == 0 then
    redis.call('HSET', wkey, 'birth', ARGV[8], 'queues', ARGV[7], 'pid', ARGV[9], 'hostname', ARGV[10],
      'version', 'b24pipe', 'state', 'idle')
  end
  redis.call('HSET', wkey, 'last_heartbeat', ARGV[8])
  redis.call('EXPIRE', wkey, math.ceil(dead_after) + 60)
  redis.call('SADD', rq.workers, wkey)
  for k = 12, #ARGV do
    redis.call('SADD', rq.workers_of .. ARGV[k], wkey)
  end
  for _, id in ipairs(redis.call('LRANGE', prefix .. me, 0, -1)) do
    local origin = redis.call('HGET', rq.job .. id, 'origin')
    if origin then
      redis.call('ZADD', rq.started .. origin, 'XX', now + ttl, id .. ':' .. me)
      redis.call('EXPIRE', rq.execution .. id .. ':' .. me, ttl)
    end
  end
end

-- 2. recovery of dead workers' in-flight jobs
local recovered = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local name, beat = all[i], tonumber(all[i + 1])
  if outage then
    redis.call('HSET', KEYS[1], name, beat_now)
  elseif name ~= me and beat_now - beat > dead_after then
    local ikey = prefix .. name
    local ids = redis.call('LRANGE', ikey, 0, -1)
    for j = #ids, 1, -1 do
      local id = ids[j]
      local jkey = rq.job .. id
      local origin = redis.call('HGET', jkey, 'origin')
      if origin then
        redis.call('ZREM', rq.started .. origin, id .. ':' .. name)
        redis.call('DEL', rq.execution .. id .. ':' .. name)
        redis.call('ZREM', rq.executions .. id, name)
        local status = redis.call('HGET', jkey, 'status')
        if status == 'started' or status == 'queued' then
          redis.call('HSET', jkey, 'status', 'queued')
          redis.call('LPUSH', rq.queue .. origin, id)
          recovered = recovered + 1
        end
      end
    end
    local wkey = rq.worker .. name
    redis.call('DEL', ikey, wkey, wkey .. rq.worker_executions)
    redis.call('SREM', rq.workers, wkey)
    for k = 12, #ARGV do
      redis.call('SREM', rq.workers_of .. ARGV[k], wkey)
    end
    redis.call('HDEL', KEYS[1], name)
  end
end

-- 3. due scheduled jobs back to their queues; stale fairness horizons dropped
local promoted = 0
for k = 12, #ARGV do
  local queue = ARGV[k]
  local skey = rq.scheduled .. queue
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', skey, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', skey, id)
    local jkey = rq.job .. id
    if redis.call('EXISTS', jkey) == 1 then
      redis.call('HSET', jkey, 'status', 'queued')
      redis.call('RPUSH', rq.queue .. queue, id)
      promoted = promoted + 1
    end
  end
end
local next_due = ''
for k = 12, #ARGV do
  local first = redis.call('ZRANGE', rq.scheduled .. ARGV[k], 0, 0, 'WITHSCORES')
  if first[2] and (next_due == '' or tonumber(first[2]) < tonumber(next_due)) then
    next_due = first[2]
  end
end
local horizons = redis.call('HGETALL', KEYS[2])
for i = 1, #horizons, 2 do
  local member = horizons[i]
  if string.sub(member, -2) ~= ':s' and tonumber(horizons[i + 1]) < now - 60 then
    redis.call('HDEL', KEYS[2], member, member .. ':s')
  end
end
return {recovered, promoted, next_due}
