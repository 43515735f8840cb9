-- Records that a worker is alive, on Redis' clock, and forgets workers silent for long.
--
-- KEYS[1] workers sorted set (member = worker id, score = last heartbeat in ms)
-- ARGV[1] worker id  ARGV[2] forget workers silent this long (ms)
--
-- Returns Redis' now in ms.
local now_ms = clock_ms()
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
return now_ms
