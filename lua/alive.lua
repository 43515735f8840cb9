-- Lists the workers whose heartbeat is younger than `lease`, on Redis' clock.
--
-- KEYS[1] workers sorted set (member = worker id, score = last heartbeat in ms)
-- ARGV[1] lease (ms)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now_ms - tonumber(ARGV[1])), '+inf')
