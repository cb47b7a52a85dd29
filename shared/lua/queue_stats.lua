-- The queues' state in one atomic read, for the queue gauges (ingress and workers expose
-- them at scrape time, so they live on while every worker is dead) and the scaler's backlog.
-- KEYS[1] workers hash (name -> last heartbeat). ARGV[1] now, ARGV[2] dead after (s),
-- ARGV[3] RQ's key names (shared/rqkeys.py LUA_ARG), ARGV[4..] queue names.
-- Returns {alive, waiting, in_flight, scheduled, oldest_enqueued_at ('' when empty), ...}
-- with the four per-queue values repeated for each queue, in ARGV order. In-flight jobs are
-- RQ's StartedJobRegistry, where fetch.lua registers every job it takes.
local now = tonumber(ARGV[1])
local dead_after = tonumber(ARGV[2])
local rq = cjson.decode(ARGV[3])
local alive = 0
local beats = redis.call('HVALS', KEYS[1])
for _, beat in ipairs(beats) do
  if now - tonumber(beat) <= dead_after then
    alive = alive + 1
  end
end
local out = {alive}
for k = 4, #ARGV do
  local queue = ARGV[k]
  local qkey = rq.queue .. queue
  out[#out + 1] = redis.call('LLEN', qkey)
  out[#out + 1] = redis.call('ZCARD', rq.started .. queue)
  out[#out + 1] = redis.call('ZCARD', rq.scheduled .. queue)
  local first = redis.call('LINDEX', qkey, 0)
  local stamp = first and redis.call('HGET', rq.job .. first, 'enqueued_at')
  out[#out + 1] = stamp or ''
end
return out
