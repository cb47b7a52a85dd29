-- Enqueue one event as one RQ job, atomically, unless it is a recent duplicate.
--
-- KEYS[1] dedupe key (<ns>:dedupe:<event id>)   KEYS[2] job hash (rq:job:<id>)
-- KEYS[3] queue list (rq:queue:<name>)          KEYS[4] rq:queues
-- ARGV[1] dedupe window in seconds (0 = no de-duplication)
-- ARGV[2] job id
-- ARGV[3..] the job hash as field, value pairs (what RQ's Job.to_dict gives)
--
-- The same writes as RQ's Queue.enqueue (HSET job, RPUSH queue, SADD rq:queues), so RQ's
-- tools and workers see an ordinary job. Returns 1 when queued, 0 for a duplicate.
local window = tonumber(ARGV[1])
if window > 0 then
  if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', window) then
    return 0
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], KEYS[3])
return 1
