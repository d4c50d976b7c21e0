-- Reads a sync document and its revision together, and keeps them (with the patches) for
-- another ttl: a document lives while it is read or patched.
--
-- KEYS[1] stream, KEYS[2] meta hash, KEYS[3] document. ARGV[1] ttl ms, ARGV[2] '1' to read
-- the document, '0' for its position alone (the document comes back empty).
-- Returns {epoch, rev, doc}; {'', 0, '{}'} for a channel without a document.

local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  return {'', 0, '{}'}
end
local rev = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local doc = ''
if ARGV[2] == '1' then
  doc = redis.call('GET', KEYS[3]) or '{}'
end
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return {epoch, rev, doc}
