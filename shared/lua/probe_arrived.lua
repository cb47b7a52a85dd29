-- A delivery probe's ONAPPTEST arrived: if it carries the marker in flight, record it once.
-- KEYS[1] the portal's probe hash; ARGV[1] the marker, ARGV[2] now (unix seconds).
-- Returns the probe's sent_at, or false (not our marker, or already recorded).
if redis.call('HGET', KEYS[1], 'marker') ~= ARGV[1] then
  return false
end
local sent = redis.call('HGET', KEYS[1], 'sent_at') or ARGV[2]
local latency = math.max(0, tonumber(ARGV[2]) - tonumber(sent))
redis.call('HDEL', KEYS[1], 'marker')
redis.call('HSET', KEYS[1], 'result', 'ok', 'received_at', ARGV[2], 'latency', tostring(latency))
return sent
