-- Acknowledges and deletes finished entries of one ready stream and marks their jobs
-- succeeded, in one call (one round trip and one command for a whole batch). Not fenced: a
-- job whose handler finished is done, whoever holds its lease now, and entry ids are never
-- reused, so a late acknowledgement cannot hit another job. Safe to repeat.
--
-- KEYS[1] ready stream    KEYS[2..] status hashes of the finished jobs (none when job
--                         status is off)
-- ARGV[1] group  ARGV[2] now (ms)  ARGV[3] status retention (ms)  ARGV[4] n, entry ids
-- ARGV[5 .. 4+n] entry ids
-- ARGV[5+n ..] one result per status hash, in KEYS order: the handler's JSON result, or
--              '' when it stored none (JSON is never empty)
--
-- Returns the number of entries acknowledged.
local n = tonumber(ARGV[4])
local acked = 0
if n > 0 then
  acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + n))
  redis.call('XDEL', KEYS[1], unpack(ARGV, 5, 4 + n))
end
local now = ARGV[2]
local retention = tonumber(ARGV[3])
for i = 2, #KEYS do
  local result = ARGV[4 + n + i - 1]
  if result ~= '' then
    redis.call('HSET', KEYS[i], 'state', 'succeeded', 'finished_at', now, 'updated_at', now,
      'result', result)
  else
    redis.call('HSET', KEYS[i], 'state', 'succeeded', 'finished_at', now, 'updated_at', now)
  end
  redis.call('PEXPIRE', KEYS[i], retention)
end
return acked
