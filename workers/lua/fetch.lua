-- Take up to ARGV[1] jobs, atomically: move each id from its queue into this worker's
-- in-flight list (never a bare pop), then mark it started the way RQ 3.0 does (job hash
-- status/started_at/worker_name, StartedJobRegistry entry `<job>:<execution>`, execution
-- hash and per-job execution index), so rq info / rq-dashboard see it as running.
-- KEYS[1] in-flight list, KEYS[2] defer-horizon hash, KEYS[3..] queue lists in service order.
-- ARGV[1] limit, ARGV[2] execution id (= worker name), ARGV[3] now (unix), ARGV[4] now as an
-- RQ timestamp, ARGV[5] registry ttl, ARGV[6] id already moved by BLMOVE or '', ARGV[7] its
-- queue name, ARGV[8] most jobs to defer per call, ARGV[9] skip margin (s),
-- ARGV[10] paused-portals set, ARGV[11] held-list key prefix (`<ns>:held:`),
-- ARGV[12] RQ's key names (shared/rqkeys.py LUA_ARG), ARGV[13..] queue names matching KEYS[3..].
-- A job of a paused portal (`b24pipe portals pause`) is not started: it goes, in arrival order,
-- to the portal's held list (status `deferred`, RQ's DeferredJobRegistry) until `portals
-- resume` (shared/lua/portal_resume.lua) puts the held jobs back at the front of their queue.
-- ARGV[-] see below; fairness: a job whose hash names its portal (`b24_member`, written at
-- enqueue) while that portal's defer horizon is ahead, and which has no slot of its own, is
-- not taken at all: it goes straight behind the horizon in RQ's ScheduledJobRegistry (at
-- most ARGV[8] of them per call), so a storm costs a few microseconds per event, server-side.
-- RQ's worker record follows: each job taken joins the worker's execution index (what RQ's
-- `get_current_job_id` reads) and the record's state becomes `busy`. While `rq suspend` holds
-- (RQ's suspension key), nothing is taken: a job BLMOVE already moved goes back to the front
-- of its queue and the state is `suspended`.
-- Returns {{id, queue, data, timeout, enqueued_at, result_ttl, b24_attempts, b24_runs, b24_slot}...},
-- the flat HGETALL of the defer-horizon hash, the number of jobs deferred that way, and 1
-- when suspended (else 0).
local limit = tonumber(ARGV[1])
local exec = ARGV[2]
local now = tonumber(ARGV[3])
local stamp = ARGV[4]
local ttl = tonumber(ARGV[5])
local max_skip = tonumber(ARGV[8])
local margin = tonumber(ARGV[9])
local rq = cjson.decode(ARGV[12])
local wkey = rq.worker .. exec
local out = {}
local taken = 0
local skipped = 0
local horizons = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  horizons[flat[i]] = tonumber(flat[i + 1])
end

local any_paused = redis.call('SCARD', ARGV[10]) > 0

-- Hold a paused portal's job instead of starting it; true when done.
local function hold_paused(id, queue)
  if not any_paused then
    return false
  end
  local jkey = rq.job .. id
  local member = redis.call('HGET', jkey, 'b24_member')
  if not member or redis.call('SISMEMBER', ARGV[10], member) == 0 then
    return false
  end
  redis.call('HSET', jkey, 'status', 'deferred')
  redis.call('ZADD', rq.deferred .. queue, now, id)
  redis.call('RPUSH', ARGV[11] .. member, id)
  return true
end

-- Defer behind the portal's horizon instead of starting; true when done.
local function wait_behind(id, queue)
  local jkey = rq.job .. id
  local f = redis.call('HMGET', jkey, 'b24_member', 'b24_slot')
  local member = f[1]
  if not member or f[2] then
    return false
  end
  local horizon = horizons[member]
  if not horizon or horizon <= now + margin then
    return false
  end
  local spacing = horizons[member .. ':s'] or 1
  horizons[member] = horizon + spacing
  redis.call('HSET', KEYS[2], member, horizon + spacing)
  redis.call('HSET', jkey, 'status', 'scheduled', 'b24_slot', horizon)
  redis.call('ZADD', rq.scheduled .. queue, horizon, id)
  skipped = skipped + 1
  return true
end

local function start(id, queue)
  local jkey = rq.job .. id
  local f = redis.call('HMGET', jkey, 'data', 'timeout', 'enqueued_at', 'result_ttl', 'b24_attempts', 'b24_slot')
  if not f[1] then
    redis.call('LREM', KEYS[1], 1, id)
    return
  end
  local runs = redis.call('HINCRBY', jkey, 'b24_runs', 1)
  redis.call('HSET', jkey, 'status', 'started', 'started_at', stamp, 'last_heartbeat', stamp, 'worker_name', exec)
  redis.call('PERSIST', jkey)
  redis.call('ZADD', rq.started .. queue, now + ttl, id .. ':' .. exec)
  local ekey = rq.execution .. id .. ':' .. exec
  redis.call('HSET', ekey, 'id', exec, 'job_id', id, 'created_at', now, 'last_heartbeat', now, 'worker_name', exec)
  redis.call('EXPIRE', ekey, ttl)
  redis.call('ZADD', rq.executions .. id, now + ttl + 60, exec)
  redis.call('EXPIRE', rq.executions .. id, ttl + 60)
  redis.call('SADD', wkey .. rq.worker_executions, id .. ':' .. exec)
  out[#out + 1] = {id, queue, f[1], f[2] or '', f[3] or '', f[4] or '', f[5] or '', runs, f[6] or ''}
  taken = taken + 1
end

local known = redis.call('EXISTS', wkey) == 1  -- written by maintain.lua; never made partial here
if redis.call('EXISTS', rq.suspended) == 1 then
  if ARGV[6] ~= '' then
    redis.call('LREM', KEYS[1], 1, ARGV[6])
    redis.call('LPUSH', rq.queue .. ARGV[7], ARGV[6])
  end
  if known then
    redis.call('HSET', wkey, 'state', 'suspended')
  end
  return {out, redis.call('HGETALL', KEYS[2]), skipped, 1}
end

if ARGV[6] ~= '' then
  if hold_paused(ARGV[6], ARGV[7]) then
    redis.call('LREM', KEYS[1], 1, ARGV[6])
  else
    start(ARGV[6], ARGV[7])
  end
end
for i = 3, #KEYS do
  local queue = ARGV[i + 10]
  while taken < limit and skipped < max_skip do
    local id = redis.call('LPOP', KEYS[i])
    if not id then
      break
    end
    if not hold_paused(id, queue) and not wait_behind(id, queue) then
      redis.call('RPUSH', KEYS[1], id)
      start(id, queue)
    end
  end
end
if known then
  redis.call('HSET', wkey, 'state', taken > 0 and 'busy' or 'idle')
end
return {out, redis.call('HGETALL', KEYS[2]), skipped, 0}
