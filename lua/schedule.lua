-- Enqueues a job to run later: adds it to the queue's scheduled set and wakes promoters.
--
-- KEYS[1] scheduled sorted set
-- ARGV[1] 'in' (ARGV[2] is a delay in ms, added to Redis' clock) or 'at' (ARGV[2] is an
--         absolute time in ms since the Unix epoch)
-- ARGV[3] priority (high|normal|low)  ARGV[4] wake channel  ARGV[5..] field, value, ...
--
-- The member is MessagePack of {priority, field1, value1, ...}, as retry.lua writes it.
-- Returns the due time (ms).
local due = tonumber(ARGV[2])
if ARGV[1] == 'in' then
  local now = redis.call('TIME')
  due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + due
end
local member = { ARGV[3] }
for i = 5, #ARGV do
  member[#member + 1] = ARGV[i]
end
redis.call('ZADD', KEYS[1], due, cmsgpack.pack(member))
redis.call('PUBLISH', ARGV[4], tostring(due))
return due
