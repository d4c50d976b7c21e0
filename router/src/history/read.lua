-- Reads a page of a channel's history and its position, creating the epoch if the channel
-- has none yet (so a subscriber learns the epoch that later publications will carry).
--
-- KEYS[1] history stream, KEYS[2] meta hash.
-- ARGV: 1 epoch to use if the channel has none, 2 meta ttl ms, 3 mode ('latest', 'after',
-- 'before'), 4 since offset, 5 limit, 6 '1' for newest first (mode 'latest' only), 7 most
-- bytes of field values in the page (at least one entry is returned), 8 bytes each entry
-- adds to those.
-- Returns {epoch, top offset, entries, 1 if entries were cut at the byte budget else 0},
-- entries as XRANGE returns them.

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
local budget, overhead = tonumber(ARGV[7]), tonumber(ARGV[8])
local size, truncated = 0, 0
for i = 1, #entries do
  local fields = entries[i][2]
  for f = 2, #fields, 2 do
    size = size + #fields[f]
  end
  size = size + overhead
  if i > 1 and size > budget then
    for j = #entries, i, -1 do
      entries[j] = nil
    end
    truncated = 1
    break
  end
end
return {epoch, top, entries, truncated}
