-- Release a lock only if we still hold it (the lease may have expired and been taken over):
-- the refresh lock (`portalstore.release_lock`) and the binding and offline-drain locks.
-- KEYS[1] lock key, ARGV[1] our random holder id. Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
