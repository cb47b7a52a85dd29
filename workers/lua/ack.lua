-- Acknowledge several jobs in one round trip. Every entry leaves the in-flight list and the
-- StartedJobRegistry (and its RQ execution records), then goes where its verb (the job's
-- outcome: workers.runner.acks) says:
--   done   -> FinishedJobRegistry for `ttl` seconds (ttl 0: job deleted, as RQ does)
--   fail   -> FailedJobRegistry for `ttl` seconds with `exc_info` (already scrubbed+zlib), plus
--             RQ's result record (the job's results stream entry, type 2 FAILED, `exc_string`
--             the same bytes base64 as RQ writes them: what job.latest_result(), rq info and
--             rq-dashboard read)
--   retry  -> ScheduledJobRegistry at unix time `at` (RQ-compatible score); `attempts`, when
--             given, is the job's new attempt count
--   defer  -> ScheduledJobRegistry, spread per portal `member_id` (fairness) by `spacing`:
--             'first' (rate limited: the portal's horizon starts/extends with spacing `after`),
--             'skip' (portal already deferred: queue behind its horizon), 'again' (its slot
--             came but the limiter still said wait: now + `after`, horizon unchanged)
--   hold   -> (a coalescing leader) ScheduledJobRegistry at `at`, or with no `at` the tail of
--             its queue, behind the burst waiting
--   park   -> DeferredJobRegistry + the portal `member_id`'s parked list, unless its record
--             says active again (then straight back to its queue)
--   front  (taken, never started) -> front of its queue
-- RQ's worker record: each entry leaves the worker's execution index; `done` and `fail` count
-- in successful_job_count / failed_job_count; with nothing left in flight the state is `idle`.
-- An entry whose job is no longer in the in-flight list is skipped: it was acknowledged
-- already (the same acknowledgements sent again after a reply lost in a Redis outage) or
-- recovered from this worker, and must not be queued twice.
-- KEYS[1] in-flight list, KEYS[2] defer-horizon hash, KEYS[3] parked-portals set.
-- ARGV[1] execution id, ARGV[2] now, ARGV[3] now as RQ timestamp, ARGV[4] RQ's key names
-- (shared/rqkeys.py LUA_ARG), ARGV[5] the portal-record key of member '' (Keys.portal),
-- ARGV[6] the parked list of member '' (Keys.parked), then
-- one row per entry: its width, then that many columns in this order (COLUMNS in
-- workers/runner/acks.py; a column means the same for every verb, '' past the row's end):
-- verb, job_id, queue, ttl, at, attempts, member_id, after, spacing, exc_info, exc_string.
local exec = ARGV[1]
local now = tonumber(ARGV[2])
local stamp = ARGV[3]
local rq = cjson.decode(ARGV[4])
local portal_prefix, parked_prefix = ARGV[5], ARGV[6]
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

-- Column n of the row at ARGV[row] (its width), '' past the row's end.
local function column(row, width, n)
  if n > width then
    return ''
  end
  return ARGV[row + n]
end

local row = 7
while row <= #ARGV do
  local width = tonumber(ARGV[row])
  local verb, id, queue = ARGV[row + 1], ARGV[row + 2], ARGV[row + 3]
  local ttl, at, attempts = tonumber(column(row, width, 4)), column(row, width, 5), column(row, width, 6)
  local member, after, spacing = column(row, width, 7), tonumber(column(row, width, 8)), column(row, width, 9)
  local exc_info, exc_string = column(row, width, 10), column(row, width, 11)
  row = row + 1 + width
  local jkey = rq.job .. id
  local owned = redis.call('LREM', KEYS[1], 1, id) == 1
  redis.call('ZREM', rq.started .. queue, id .. ':' .. exec)
  redis.call('DEL', rq.execution .. id .. ':' .. exec)
  redis.call('ZREM', rq.executions .. id, exec)
  redis.call('SREM', wkey .. rq.worker_executions, id .. ':' .. exec)
  if owned and verb == 'done' then
    succeeded = succeeded + 1
  elseif owned and verb == 'fail' then
    failed = failed + 1
  end
  if owned and redis.call('EXISTS', jkey) == 1 then
    if verb == 'done' then
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
    elseif verb == 'fail' then
      redis.call('HSET', jkey, 'status', 'failed', 'ended_at', stamp, 'exc_info', exc_info, 'failure_ttl', ttl)
      redis.call('HDEL', jkey, 'b24_attempts', 'b24_slot')
      if ttl > 0 then
        redis.call('EXPIRE', jkey, ttl)
      end
      redis.call('ZADD', rq.failed .. queue, score(ttl), id)
      local rkey = rq.results .. id
      redis.call('XADD', rkey, 'MAXLEN', '10', '*', 'type', '2', 'worker_name', exec, 'exc_string', exc_string)
      if ttl > 0 then
        redis.call('EXPIRE', rkey, ttl)
      else
        redis.call('PERSIST', rkey)
      end
    elseif verb == 'retry' then
      if attempts ~= '' then
        redis.call('HSET', jkey, 'b24_attempts', attempts)
      end
      schedule(jkey, id, queue, tonumber(at))
    elseif verb == 'defer' then
      local when = now + after
      if spacing ~= 'again' then
        local horizon = tonumber(redis.call('HGET', KEYS[2], member)) or 0
        local gap = tonumber(redis.call('HGET', KEYS[2], member .. ':s')) or after
        if spacing == 'first' then
          gap = after
          redis.call('HSET', KEYS[2], member .. ':s', gap)
        end
        if horizon > when then
          when = horizon
        end
        redis.call('HSET', KEYS[2], member, when + gap)
      end
      schedule(jkey, id, queue, when)
    elseif verb == 'park' then
      if redis.call('HGET', portal_prefix .. member, 'status') == 'active' then
        redis.call('HSET', jkey, 'status', 'queued')
        redis.call('RPUSH', rq.queue .. queue, id)
      else
        redis.call('HSET', jkey, 'status', 'deferred')
        redis.call('ZADD', rq.deferred .. queue, now, id)
        redis.call('RPUSH', parked_prefix .. member, id)
        redis.call('SADD', KEYS[3], member)
      end
    elseif verb == 'front' then
      redis.call('HSET', jkey, 'status', 'queued')
      redis.call('LPUSH', rq.queue .. queue, id)
    elseif verb == 'hold' and at ~= '' then
      schedule(jkey, id, queue, tonumber(at))
    elseif verb == 'hold' then
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
