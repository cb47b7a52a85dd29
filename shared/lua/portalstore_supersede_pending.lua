-- Mark a member id's pending installs that arrived before a newly verified one as
-- superseded: when one of them is verified later, its held events are released but its
-- older token does not replace the newer one (Bitrix24 signs its events with the newest).
-- KEYS[1] member's pending-tokens set. ARGV[1] pending-hash key prefix (followed by the
-- digest), ARGV[2] arrival time of the verified install, ARGV[3] its digest (skipped).
-- Returns how many were marked.
local marked = 0
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. digest
  local seen = tonumber(redis.call('HGET', key, 'pending_first_seen') or '')
  if digest ~= ARGV[3] and seen and seen < tonumber(ARGV[2]) then
    redis.call('HSET', key, 'pending_superseded', '1')
    marked = marked + 1
  end
end
return marked
