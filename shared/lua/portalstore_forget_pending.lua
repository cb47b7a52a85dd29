-- Forget every pending install of a member id, with their quarantines (revoke, purge).
-- KEYS[1] member's pending-tokens set, KEYS[2] pending index, KEYS[3] quarantine-bytes hash
-- ARGV[1] member id, ARGV[2] pending-hash key prefix, ARGV[3] quarantine key prefix
-- (each followed by the digest). Returns how many were forgotten.
local digests = redis.call('SMEMBERS', KEYS[1])
for _, digest in ipairs(digests) do
  local source = ARGV[1] .. ':' .. digest
  redis.call('DEL', ARGV[2] .. digest, ARGV[3] .. digest)
  redis.call('ZREM', KEYS[2], source)
  redis.call('HDEL', KEYS[3], source)
end
redis.call('DEL', KEYS[1])
return #digests
