-- Appends a run of publications to one channel's history, atomically and in order.
--
-- KEYS[1] history stream, KEYS[2] meta hash (e = epoch, s = newest offset),
-- KEYS[2 + i] idempotency record of entry i (ignored when the entry has no key).
-- ARGV[1] max size, ARGV[2] history ttl ms, ARGV[3] meta ttl ms, ARGV[4] epoch to use if the
-- channel has none, ARGV[5] idempotency ttl ms, then 7 values per entry: data, the
-- publisher's client id, user and info, the attachments (an encoded `Attachments`), '1' if
-- it has an idempotency key, accepted-at (unix microseconds). Empty values are not stored.
-- Returns {epoch, offset 1, duplicate 1 (0/1), offset 2, duplicate 2, ...}.

local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[2], 'e', epoch)
  -- A log without its meta belongs to a forgotten epoch: its offsets would collide.
  redis.call('DEL', KEYS[1])
end

local result = {epoch}
local appended = false
-- Fields: d data, o client, u user, i info, a attachments, t accepted-at.
local names = {'d', 'o', 'u', 'i', 'a'}
local entries = (#ARGV - 5) / 7
for i = 1, entries do
  local base = 5 + (i - 1) * 7
  local keyed, at = ARGV[base + 6], ARGV[base + 7]
  local seen = keyed == '1' and redis.call('GET', KEYS[2 + i])
  if seen then
    result[#result + 1] = tonumber(seen)
    result[#result + 1] = 1
  else
    local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
    local fields = {'XADD', KEYS[1], offset .. '-0', 'd', ARGV[base + 1]}
    for f = 2, 5 do
      local value = ARGV[base + f]
      if value ~= '' then
        fields[#fields + 1] = names[f]
        fields[#fields + 1] = value
      end
    end
    fields[#fields + 1] = 't'
    fields[#fields + 1] = at
    redis.call(unpack(fields))
    if keyed == '1' then
      redis.call('SET', KEYS[2 + i], offset, 'PX', ARGV[5])
    end
    appended = true
    result[#result + 1] = offset
    result[#result + 1] = 0
  end
end
if appended then
  -- Trimmed once for the whole run: an exact trim walks the stream's oldest node, and
  -- doing it after every entry cost more than the appends themselves.
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return result
