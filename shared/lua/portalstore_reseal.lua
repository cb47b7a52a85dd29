-- Replace a record's ciphertexts with the same secrets sealed under the current key, only if
-- nothing changed them since they were read, and never while a token refresh is under way.
--
-- KEYS[1] the record hash (portal or pending install)   KEYS[2] the portal's refresh lock
-- (b24pipe/rekey.py computes the triples; shared/portalstore.py `write_resealed` runs this)
-- ARGV    triples: field, ciphertext read, new ciphertext
--
-- The refresh saves its new pair with compare-and-set on the refresh-token ciphertext it read
-- under the lock (shared/lua/portalstore_token_cas.lua); re-sealing that field meanwhile would make the
-- save fail and lose the pair. Returns 1 when written, 0 when the record changed (read again),
-- -1 when a refresh holds the lock (try later).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    return 0
  end
end
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
end
return 1
