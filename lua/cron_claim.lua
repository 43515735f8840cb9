-- Claims one tick of a periodic schedule, so that however many workers run the schedule,
-- exactly one of them enqueues that tick's job. Also reads the schedule's state.
--
-- KEYS[1] the queue's cron hash (<prefix>:{<queue>}:cron)
-- ARGV[1] schedule name
-- ARGV[2] the tick to claim, in ms since the epoch; -1 only reads
-- ARGV[3] the claiming worker's consumer name
--
-- Field <name> holds the newest tick claimed so far. A claim succeeds only for a tick
-- newer than that and already due on Redis' clock, and then moves the field to it (and
-- records "<worker> <now ms>" in field <name>:by). So a tick is claimed at most once, and
-- a late worker can never claim a tick older than one already claimed.
--
-- Returns {status, Redis' now in ms, newest claimed tick (after this call) or -1}, where
-- status is 1 claimed, 0 already claimed (by anyone), -1 not due yet, 2 read only.
local now_ms = clock_ms()
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1') or -1
local tick = tonumber(ARGV[2])
if tick < 0 then
  return { 2, now_ms, last }
end
if tick > now_ms then
  return { -1, now_ms, last }
end
if tick <= last then
  return { 0, now_ms, last }
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':by', ARGV[3] .. ' ' .. now_ms)
return { 1, now_ms, tick }
