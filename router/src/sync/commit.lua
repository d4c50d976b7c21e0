-- Commits patches of a sync document, atomically with the document: the patches become
-- the next entries of the channel's stream (revision = offset), in order, and the document
-- is replaced by the one the router computed from them, but only if the document is still
-- where the router computed it from. Without patches it only checks that.
--
-- KEYS[1] stream, KEYS[2] meta hash (e = epoch, s = revision), KEYS[3] document,
-- KEYS[3 + i] idempotency record of patch i ('<rev>:<epoch>'; ignored without a key).
-- ARGV[1] expected epoch, ARGV[2] expected revision, ARGV[3] new document, ARGV[4] patches
-- kept, ARGV[5] ttl ms, ARGV[6] epoch to start if there is none, ARGV[7] idempotency ttl
-- ms, then 6 values per patch: the patch, '1' if keyed, client, user, info, accepted-at
-- (unix microseconds).
-- Returns {'applied', epoch, revision of the first patch} | {'duplicate', i, epoch, rev,
-- patch or ''} (patch i's key was seen: nothing written) | {'stale', epoch, rev, doc}.

local epoch = redis.call('HGET', KEYS[2], 'e') or ''
local rev = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local count = (#ARGV - 7) / 6

for i = 1, count do
  if ARGV[7 + (i - 1) * 6 + 2] == '1' then
    local seen = redis.call('GET', KEYS[3 + i])
    if seen then
      -- After a delete, the key's patch belongs to the old epoch, whose patches are gone.
      local seen_rev, seen_epoch = string.match(seen, '^(%d+):(.*)$')
      local patch = ''
      if seen_epoch == epoch then
        local entry = redis.call('XRANGE', KEYS[1], seen_rev .. '-0', seen_rev .. '-0')[1]
        if entry then
          local fields = entry[2]
          for f = 1, #fields, 2 do
            if fields[f] == 'd' then patch = fields[f + 1] end
          end
        end
      end
      return {'duplicate', i, seen_epoch or '', tonumber(seen_rev or '0'), patch}
    end
  end
end

if epoch ~= ARGV[1] or rev ~= tonumber(ARGV[2]) then
  local doc = '{}'
  if epoch ~= '' then doc = redis.call('GET', KEYS[3]) or '{}' end
  return {'stale', epoch, rev, doc}
end
if count == 0 then
  return {'applied', epoch, rev + 1}
end

if epoch == '' then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[2], 'e', epoch)
  -- Patches without their meta belong to a forgotten epoch: their revisions would collide.
  redis.call('DEL', KEYS[1])
end
local first = rev + 1
-- Fields as a publication's history entry: d data, o client, u user, i info, t accepted-at.
local names = {'o', 'u', 'i'}
for i = 1, count do
  local base = 7 + (i - 1) * 6
  rev = redis.call('HINCRBY', KEYS[2], 's', 1)
  local fields = {'XADD', KEYS[1], 'MAXLEN', ARGV[4], rev .. '-0', 'd', ARGV[base + 1]}
  for f = 1, 3 do
    local value = ARGV[base + 2 + f]
    if value ~= '' then
      fields[#fields + 1] = names[f]
      fields[#fields + 1] = value
    end
  end
  fields[#fields + 1] = 't'
  fields[#fields + 1] = ARGV[base + 6]
  redis.call(unpack(fields))
  if ARGV[base + 2] == '1' then
    redis.call('SET', KEYS[3 + i], rev .. ':' .. epoch, 'PX', ARGV[7])
  end
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'applied', epoch, first}
