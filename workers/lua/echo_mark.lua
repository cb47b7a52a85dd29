-- Mark writes the pipeline is about to send, before it sends them (the echo event can reach
-- a worker before the REST answer reaches the writer).
--
-- One mark is one element of a list holding its expiry time (ms, Redis clock): marks are
-- counted and each expires on its own, so a write whose echo never comes stops mattering
-- after the TTL. Lists are capped (oldest dropped) so a runaway writer cannot grow them.
-- The same call records, per entity written, the writer user for the loop breaker; that
-- record lives one loop window after the last write.
--
-- KEYS[1..n]    echo mark lists, one per expected echo event
-- KEYS[n+1..]   chain keys of the entities written
-- ARGV[1]       n
-- ARGV[2]       mark TTL (ms)
-- ARGV[3]       writer user id
-- ARGV[4]       loop window (ms)
-- ARGV[5]       cap of one mark list
-- returns n
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[5])
for i = 1, n do
  redis.call('RPUSH', KEYS[i], string.format('%d', now + ttl))
  redis.call('LTRIM', KEYS[i], -cap, -1)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
for i = n + 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[3], 'PX', tonumber(ARGV[4]))
end
return n
