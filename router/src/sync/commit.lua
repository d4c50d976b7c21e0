-- Commits one patch of a sync document, atomically with the document: the patch becomes
-- the next entry of the channel's stream (revision = offset) and the document is replaced
-- by the one the router computed, but only if the document is still where the router
-- computed it from.
--
-- KEYS[1] stream, KEYS[2] meta hash (e = epoch, s = revision), KEYS[3] document,
-- KEYS[4] idempotency record ('<rev>:<epoch>' of the key's patch; ignored without a key).
-- ARGV[1] expected epoch, ARGV[2] expected revision, ARGV[3] base revision ('' for none),
-- ARGV[4] new document, ARGV[5] patch, ARGV[6] patches kept, ARGV[7] ttl ms, ARGV[8] epoch
-- to start if there is none, ARGV[9] idempotency ttl ms, ARGV[10] '1' if keyed,
-- ARGV[11] client, ARGV[12] user, ARGV[13] info, ARGV[14] accepted-at (unix microseconds),
-- ARGV[15] the base revision's epoch ('' for any).
-- Returns {'applied', epoch, rev} | {'duplicate', epoch, rev, patch or ''} |
-- {'conflict', epoch, rev, doc} | {'stale', epoch, rev, doc}.

local epoch = redis.call('HGET', KEYS[2], 'e') or ''
local rev = tonumber(redis.call('HGET', KEYS[2], 's') or '0')

if ARGV[10] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    -- A record is '<rev>:<epoch>': after a delete, the key's patch belongs to the old epoch.
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
    return {'duplicate', seen_epoch or '', tonumber(seen_rev or '0'), patch}
  end
end

local function document()
  if epoch == '' then return '{}' end
  return redis.call('GET', KEYS[3]) or '{}'
end
if ARGV[3] ~= '' and (tonumber(ARGV[3]) ~= rev or (ARGV[15] ~= '' and ARGV[15] ~= epoch)) then
  return {'conflict', epoch, rev, document()}
end
if epoch ~= ARGV[1] or rev ~= tonumber(ARGV[2]) then
  return {'stale', epoch, rev, document()}
end

if epoch == '' then
  epoch = ARGV[8]
  redis.call('HSET', KEYS[2], 'e', epoch)
  -- Patches without their meta belong to a forgotten epoch: their revisions would collide.
  redis.call('DEL', KEYS[1])
end
rev = redis.call('HINCRBY', KEYS[2], 's', 1)
-- Fields as a publication's history entry: d data, o client, u user, i info, t accepted-at.
local fields = {'XADD', KEYS[1], 'MAXLEN', ARGV[6], rev .. '-0', 'd', ARGV[5]}
local names = {'o', 'u', 'i'}
for f = 1, 3 do
  local value = ARGV[10 + f]
  if value ~= '' then
    fields[#fields + 1] = names[f]
    fields[#fields + 1] = value
  end
end
fields[#fields + 1] = 't'
fields[#fields + 1] = ARGV[14]
redis.call(unpack(fields))
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], rev .. ':' .. epoch, 'PX', ARGV[9])
end
return {'applied', epoch, rev}
