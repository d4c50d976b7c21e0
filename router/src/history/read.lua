-- Reads a page of a channel's history and its position. Reading creates nothing: a
-- channel without a stream has the empty epoch and offset 0 (its first publication starts
-- an epoch at offset 1), so reading names that never existed costs no memory.
--
-- KEYS[1] history stream, KEYS[2] meta hash.
-- ARGV: 1 mode ('latest', 'after', 'before'), 2 since offset, 3 limit, 4 '1' for newest
-- first (mode 'latest' only), 5 most bytes of field values in the page (at least one entry
-- is returned), 6 bytes each entry adds to those.
-- Returns {epoch, top offset, entries, 1 if entries were cut at the byte budget else 0},
-- entries as XRANGE returns them.

local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  return {'', 0, {}, 0}
end
local top = tonumber(redis.call('HGET', KEYS[2], 's') or '0')

local limit = tonumber(ARGV[3])
local since = tonumber(ARGV[2])
local entries = {}
if limit > 0 then
  local mode = ARGV[1]
  if mode == 'latest' then
    entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
    if ARGV[4] ~= '1' then
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
local budget, overhead = tonumber(ARGV[5]), tonumber(ARGV[6])
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
