-- Deletes a sync document and its patches. The channel starts a new epoch at revision 0
-- at once, so that subscribers holding the old document see the change of epoch.
--
-- KEYS[1] stream, KEYS[2] meta hash, KEYS[3] document. ARGV[1] the new epoch, ARGV[2] ttl
-- ms of the new epoch's meta. Returns the new epoch.

redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'e', ARGV[1], 's', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ARGV[1]
