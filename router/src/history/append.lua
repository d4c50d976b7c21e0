-- Appends one publication to a channel's history, atomically.
--
-- KEYS[1] history stream, KEYS[2] meta hash (e = epoch, s = newest offset),
-- KEYS[3] idempotency record (ignored unless ARGV[7] == '1').
-- ARGV: 1 data, 2 origin, 3 max size, 4 history ttl ms, 5 meta ttl ms, 6 epoch to use if the
-- channel has none, 7 '1' to check the idempotency key, 8 idempotency ttl ms,
-- 9 accepted-at (unix microseconds).
-- Returns {offset, epoch, duplicate (0/1)}.

local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[2], 'e', epoch)
  -- A log without its meta belongs to a forgotten epoch: its offsets would collide.
  redis.call('DEL', KEYS[1])
end

if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    return {tonumber(seen), epoch, 1}
  end
end

local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], offset .. '-0',
  'd', ARGV[1], 'o', ARGV[2], 't', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ARGV[7] == '1' then
  redis.call('SET', KEYS[3], offset, 'PX', ARGV[8])
end
return {offset, epoch, 0}
