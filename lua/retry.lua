-- Schedules the next attempt of a failed job, fenced: nothing happens unless `consumer`
-- still owns the entry. The job moves from its ready stream to the scheduled set, due
-- after `delay` on Redis' clock, with `attempt` raised by one; the old entry is
-- acknowledged and deleted; promoters are woken through the queue's wake channel.
--
-- KEYS[1] ready stream    KEYS[2] scheduled sorted set    KEYS[3] the job's status hash
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] delay (ms)
-- ARGV[5] priority of the stream (high|normal|low)  ARGV[6] wake channel
-- ARGV[7] status retention (ms; 0: no status)  ARGV[8] the error  ARGV[9] the job id
-- ARGV[10] 'retry': a failed attempt, the next one raises `attempt`; 'defer' or 'reserve':
--          the job waits for a rate limit, `attempt` unchanged, its status `scheduled`
--          with ARGV[8] as `waiting_for`; 'reserve' marks the entry `reserved` (its tokens
--          are taken for its due time, so it starts without asking again)
-- ARGV[11..] more field, value pairs for the status hash (type, queue, attempts, ...: a job
--            that had no hash gets a whole one)
--
-- The set member is MessagePack of {priority, field1, value1, field2, value2, ...}. It
-- carries the job id as field `id` (added when the entry had none: the job's next entry
-- has an id of its own, so the job is found by its status hash from now on).
-- Returns the due time (ms), or 0 when the entry is owned by another consumer or no longer
-- pending (lost lease), or -1 when its data was deleted (it is acknowledged).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return -1
end
local fields = entry[1][2]
local mode = ARGV[10]
local member = { ARGV[5] }
if not field_of(fields, 'id') then
  member[#member + 1] = 'id'
  member[#member + 1] = ARGV[9]
end
for i = 1, math.min(#fields, 2000), 2 do
  local value = fields[i + 1]
  if fields[i] == 'attempt' and mode == 'retry' then
    value = tostring((tonumber(value) or 0) + 1)
  end
  -- A reservation is good for one start only.
  if fields[i] ~= 'reserved' then
    member[#member + 1] = fields[i]
    member[#member + 1] = value
  end
end
if mode == 'reserve' then
  member[#member + 1] = 'reserved'
  member[#member + 1] = '1'
end
local due = clock_ms() + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, cmsgpack.pack(member))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[6], tostring(due))
if mode == 'retry' then
  set_status(KEYS[3], tonumber(ARGV[7]), 'state', 'retrying', 'error', ARGV[8],
    'next_at', tostring(due), 'updated_at', tostring(due - tonumber(ARGV[4])), unpack(ARGV, 11))
else
  set_status(KEYS[3], tonumber(ARGV[7]), 'state', 'scheduled', 'waiting_for', ARGV[8],
    'next_at', tostring(due), 'updated_at', tostring(due - tonumber(ARGV[4])), unpack(ARGV, 11))
end
return due
