-- Lists the workers whose heartbeat is younger than `lease`, on Redis' clock.
--
-- KEYS[1] workers sorted set (member = worker id, score = last heartbeat in ms)
-- ARGV[1] lease (ms)
local now_ms = clock_ms()
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now_ms - tonumber(ARGV[1])), '+inf')
