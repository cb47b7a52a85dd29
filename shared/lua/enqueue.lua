-- Enqueue a batch of events of one queue as RQ jobs, atomically; recent duplicates are skipped.
--
-- KEYS[1] queue list (RQ's Queue.key)   KEYS[2] RQ's set of queue keys
-- KEYS[3..] two per event, in event order: its dedupe key (<ns>:dedupe:<event id>) and its
--           job hash (RQ's Job.key); RQ's names come from shared/rqkeys.py
-- ARGV[1] dedupe window in seconds (0 = no de-duplication)
-- ARGV[2] S: how many ARGV entries the shared field/value pairs take
-- ARGV[3] F: how many fields each event brings
-- ARGV[4 .. 3+S]       the field/value pairs every job of the batch shares (RQ's template)
-- ARGV[4+S .. 3+S+F]   the names of the F per-event fields
-- then per event: its job id and its F values
--
-- The same writes as RQ's Queue.enqueue (HSET job, RPUSH queue, SADD it to the queues), so RQ's
-- tools and workers see ordinary jobs, with one RPUSH for the whole batch. Only the first
-- write of a script can be refused for memory (OOM under noeviction), so a batch is stored
-- whole or not at all. Returns a string of one '1' (queued) or '0' (duplicate) per event:
-- one reply to parse instead of one per event.
local window = tonumber(ARGV[1])
local shared = tonumber(ARGV[2])
local per_event = tonumber(ARGV[3])
local names_at = 3 + shared
local hash = {}
for i = 1, shared do
  hash[i] = ARGV[3 + i]
end
for k = 1, per_event do
  hash[shared + 2 * k - 1] = ARGV[names_at + k]
end
local events = (#KEYS - 2) / 2
local ids = {}
local result = {}
local at = names_at + per_event + 1 -- this event's job id
for e = 1, events do
  local id = ARGV[at]
  if window <= 0 or redis.call('SET', KEYS[2 * e + 1], id, 'NX', 'EX', window) then
    for k = 1, per_event do
      hash[shared + 2 * k] = ARGV[at + k]
    end
    redis.call('HSET', KEYS[2 * e + 2], unpack(hash))
    ids[#ids + 1] = id
    result[e] = '1'
  else
    result[e] = '0'
  end
  at = at + 1 + per_event
end
if #ids > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ids))
  redis.call('SADD', KEYS[2], KEYS[1])
end
return table.concat(result)
