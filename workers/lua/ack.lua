-- Acknowledge several jobs in one round trip. Every entry leaves the in-flight list and the
-- StartedJobRegistry (and its RQ execution records), then goes where its outcome says:
--   ok     a=result ttl                 -> FinishedJobRegistry (ttl 0: job deleted, as RQ does)
--   fail   a=failure ttl, b=exc_info, c=the same base64 -> FailedJobRegistry (exc_info already
--          scrubbed+zlib), plus RQ's result record (the job's results stream entry, type 2
--          FAILED, `exc_string` base64 of zlib as RQ writes it: what job.latest_result(),
--          rq info and rq-dashboard read)
-- RQ's worker record: each entry leaves the worker's execution index; `ok` and `fail` count in
-- successful_job_count / failed_job_count; with nothing left in flight the state is `idle`.
--   sched  a=unix time, b=attempts|''   -> ScheduledJobRegistry (RQ-compatible score)
--   defer  a=member, b=after, c=mode    -> ScheduledJobRegistry, spread per portal (fairness):
--          mode 'first' (rate limited: the portal's horizon starts/extends with spacing b),
--          'skip' (portal already deferred: queue behind its horizon), 'again' (its slot came
--          but the limiter still said wait: now+b, horizon unchanged)
--   park   a=member, b=portal hash, c=parked list -> DeferredJobRegistry + parked list, unless
--          the portal is active again (then straight back to its queue)
--   back   (taken, never started)       -> front of its queue
--   tail   (a coalescing leader, delay 0) -> tail of its queue, behind the burst waiting
-- An entry whose job is no longer in the in-flight list is skipped: it was acknowledged
-- already (the same acknowledgements sent again after a reply lost in a Redis outage) or
-- recovered from this worker, and must not be queued twice.
-- KEYS[1] in-flight list, KEYS[2] defer-horizon hash, KEYS[3] parked-portals set.
-- ARGV[1] execution id, ARGV[2] now, ARGV[3] now as RQ timestamp, ARGV[4] RQ's key names
-- (shared/rqkeys.py LUA_ARG), then entries of 6: kind, id, queue, a, b, c.
local exec = ARGV[1]
local now = tonumber(ARGV[2])
local stamp = ARGV[3]
local rq = cjson.decode(ARGV[4])
local wkey = rq.worker .. exec
local known = redis.call('EXISTS', wkey) == 1
local succeeded, failed = 0, 0

local function score(ttl)
  if ttl < 0 then
    return '+inf'
  end
  return now + ttl
end

local function schedule(jkey, id, queue, when)
  redis.call('HSET', jkey, 'status', 'scheduled', 'b24_slot', when)
  redis.call('ZADD', rq.scheduled .. queue, when, id)
end

for i = 5, #ARGV, 6 do
  local kind, id, queue, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local jkey = rq.job .. id
  local owned = redis.call('LREM', KEYS[1], 1, id) == 1
  redis.call('ZREM', rq.started .. queue, id .. ':' .. exec)
  redis.call('DEL', rq.execution .. id .. ':' .. exec)
  redis.call('ZREM', rq.executions .. id, exec)
  redis.call('SREM', wkey .. rq.worker_executions, id .. ':' .. exec)
  if owned and kind == 'ok' then
    succeeded = succeeded + 1
  elseif owned and kind == 'fail' then
    failed = failed + 1
  end
  if owned and redis.call('EXISTS', jkey) == 1 then
    if kind == 'ok' then
      local ttl = tonumber(a)
      if ttl == 0 then
        redis.call('DEL', jkey, rq.executions .. id)
      else
        redis.call('HSET', jkey, 'status', 'finished', 'ended_at', stamp)
        redis.call('HDEL', jkey, 'b24_attempts', 'b24_slot')
        if ttl > 0 then
          redis.call('EXPIRE', jkey, ttl)
        end
        redis.call('ZADD', rq.finished .. queue, score(ttl), id)
      end
    elseif kind == 'fail' then
      local ttl = tonumber(a)
      redis.call('HSET', jkey, 'status', 'failed', 'ended_at', stamp, 'exc_info', b, 'failure_ttl', ttl)
      redis.call('HDEL', jkey, 'b24_attempts', 'b24_slot')
      if ttl > 0 then
        redis.call('EXPIRE', jkey, ttl)
      end
      redis.call('ZADD', rq.failed .. queue, score(ttl), id)
      local rkey = rq.results .. id
      redis.call('XADD', rkey, 'MAXLEN', '10', '*', 'type', '2', 'worker_name', exec, 'exc_string', c)
      if ttl > 0 then
        redis.call('EXPIRE', rkey, ttl)
      else
        redis.call('PERSIST', rkey)
      end
    elseif kind == 'sched' then
      if b ~= '' then
        redis.call('HSET', jkey, 'b24_attempts', b)
      end
      schedule(jkey, id, queue, tonumber(a))
    elseif kind == 'defer' then
      local after = tonumber(b)
      local when = now + after
      if c ~= 'again' then
        local horizon = tonumber(redis.call('HGET', KEYS[2], a)) or 0
        local spacing = tonumber(redis.call('HGET', KEYS[2], a .. ':s')) or after
        if c == 'first' then
          spacing = after
          redis.call('HSET', KEYS[2], a .. ':s', spacing)
        end
        if horizon > when then
          when = horizon
        end
        redis.call('HSET', KEYS[2], a, when + spacing)
      end
      schedule(jkey, id, queue, when)
    elseif kind == 'park' then
      if redis.call('HGET', b, 'status') == 'active' then
        redis.call('HSET', jkey, 'status', 'queued')
        redis.call('RPUSH', rq.queue .. queue, id)
      else
        redis.call('HSET', jkey, 'status', 'deferred')
        redis.call('ZADD', rq.deferred .. queue, now, id)
        redis.call('RPUSH', c, id)
        redis.call('SADD', KEYS[3], a)
      end
    elseif kind == 'back' then
      redis.call('HSET', jkey, 'status', 'queued')
      redis.call('LPUSH', rq.queue .. queue, id)
    elseif kind == 'tail' then
      redis.call('HSET', jkey, 'status', 'queued')
      redis.call('RPUSH', rq.queue .. queue, id)
    end
  end
end
if known then
  if succeeded > 0 then
    redis.call('HINCRBY', wkey, 'successful_job_count', succeeded)
  end
  if failed > 0 then
    redis.call('HINCRBY', wkey, 'failed_job_count', failed)
  end
  if redis.call('LLEN', KEYS[1]) == 0 and redis.call('HGET', wkey, 'state') == 'busy' then
    redis.call('HSET', wkey, 'state', 'idle')
  end
end
return 1
