-- Reads a page of a channel's history and its position, creating the epoch if the channel
-- has none yet (so a subscriber learns the epoch that later publications will carry).
--
-- KEYS[1] history stream, KEYS[2] meta hash.
-- ARGV: 1 epoch to use if the channel has none, 2 meta ttl ms, 3 mode ('latest', 'after',
-- 'before'), 4 since offset, 5 limit, 6 '1' for newest first (mode 'latest' only).
-- Returns {epoch, top offset, entries} with entries as XRANGE returns them.

local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'e', epoch)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[1])
end
local top = tonumber(redis.call('HGET', KEYS[2], 's') or '0')

local limit = tonumber(ARGV[5])
local since = tonumber(ARGV[4])
local entries = {}
if limit > 0 then
  local mode = ARGV[3]
  if mode == 'latest' then
    entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
    if ARGV[6] ~= '1' then
      local ascending = {}
      for i = #entries, 1, -1 do
        ascending[#ascending + 1] = entries[i]
      end
      entries = ascending
    end
  elseif mode == 'after' then
    entries = redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', '+', 'COUNT', limit)
  elseif since > 1 then
    entries = redis.call('XREVRANGE', KEYS[1], (since - 1) .. '-0', '-', 'COUNT', limit)
  end
end
return {epoch, top, entries}
