-- An event reached dispatch: is it the echo of one of our writes? Consume one live mark.
--
-- Marks are tried in KEYS order (the entity's own list, then for add events the entity
-- type's list of adds whose id was not known yet). Expired marks met on the way are dropped.
-- Atomic, so N echoes consume at most N marks however many workers race.
--
-- KEYS[1..]   mark lists to try
-- returns the 1-based index of the list a mark was consumed from, or 0 (not an echo)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  while true do
    local expiry = redis.call('LPOP', KEYS[i])
    if not expiry then break end
    if tonumber(expiry) > now then return i end
  end
end
return 0
