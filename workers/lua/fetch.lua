-- Take up to ARGV[1] jobs, atomically: LMOVE each id from its queue into this worker's
-- in-flight list (never a bare pop), then mark it started the way RQ 3.0 does (job hash
-- status/started_at/worker_name, StartedJobRegistry entry `<job>:<execution>`, execution
-- hash and per-job execution index), so rq info / rq-dashboard see it as running.
-- KEYS[1] in-flight list, KEYS[2] defer-horizon hash, KEYS[3..] queue lists in service order.
-- ARGV[1] limit, ARGV[2] execution id (= worker name), ARGV[3] now (unix), ARGV[4] now as an
-- RQ timestamp, ARGV[5] registry ttl, ARGV[6] id already moved by BLMOVE or '', ARGV[7] its
-- queue name, ARGV[8..] queue names matching KEYS[3..].
-- Returns {{id, queue, data, timeout, enqueued_at, result_ttl, b24_attempts, b24_runs, b24_slot}...},
-- and the flat HGETALL of the defer-horizon hash.
local limit = tonumber(ARGV[1])
local exec = ARGV[2]
local now = tonumber(ARGV[3])
local stamp = ARGV[4]
local ttl = tonumber(ARGV[5])
local out = {}
local taken = 0

local function start(id, queue)
  local jkey = 'rq:job:' .. id
  local f = redis.call('HMGET', jkey, 'data', 'timeout', 'enqueued_at', 'result_ttl', 'b24_attempts', 'b24_slot')
  if not f[1] then
    redis.call('LREM', KEYS[1], 1, id)
    return
  end
  local runs = redis.call('HINCRBY', jkey, 'b24_runs', 1)
  redis.call('HSET', jkey, 'status', 'started', 'started_at', stamp, 'last_heartbeat', stamp, 'worker_name', exec)
  redis.call('PERSIST', jkey)
  redis.call('ZADD', 'rq:wip:' .. queue, now + ttl, id .. ':' .. exec)
  local ekey = 'rq:execution:' .. id .. ':' .. exec
  redis.call('HSET', ekey, 'id', exec, 'job_id', id, 'created_at', now, 'last_heartbeat', now, 'worker_name', exec)
  redis.call('EXPIRE', ekey, ttl)
  redis.call('ZADD', 'rq:executions:' .. id, now + ttl + 60, exec)
  redis.call('EXPIRE', 'rq:executions:' .. id, ttl + 60)
  out[#out + 1] = {id, queue, f[1], f[2] or '', f[3] or '', f[4] or '', f[5] or '', runs, f[6] or ''}
  taken = taken + 1
end

if ARGV[6] ~= '' then
  start(ARGV[6], ARGV[7])
end
for i = 3, #KEYS do
  local queue = ARGV[i + 5]
  while taken < limit do
    local id = redis.call('LMOVE', KEYS[i], KEYS[1], 'LEFT', 'RIGHT')
    if not id then
      break
    end
    start(id, queue)
  end
end
return {out, redis.call('HGETALL', KEYS[2])}
