-- Enqueues one job that needs more than a plain XADD: a delayed job, a unique job, or
-- both. Checks the unique key, writes the job, and records its status, atomically.
--
-- KEYS[1] target: the ready stream (mode 'ready') or the scheduled set ('in'/'at')
-- KEYS[2] the job's status hash (delayed jobs)  KEYS[3] the unique key (read only when
--         ARGV[7] > 0)  KEYS[4..6] the queue's high, normal and low streams  KEYS[7] its
--         scheduled set  KEYS[8] its capacity  KEYS[9] its full mark  KEYS[10] its totals
--         (KEYS[4..9] are read for a bounded queue: see enqueue_ready.lua)
-- ARGV[1] job id of a delayed job ('' for a ready one: its id is its entry's)
-- ARGV[2] mode: 'ready', 'in' (ARGV[3] = delay ms on Redis' clock) or
--         'at' (ARGV[3] = ms since the epoch)  ARGV[4] priority (high|normal|low)
-- ARGV[5] wake channel  ARGV[6] status retention ms (0: no status)
-- ARGV[7] unique ttl ms (0: not unique)  ARGV[8] job type  ARGV[9] queue
-- ARGV[10] max attempts  ARGV[11] the consumer group  ARGV[12..] field, value, ... of the
-- entry
--
-- A ready job writes its entry only: its status while it waits is read from the entry. A
-- delayed job has no entry yet, so it gets a status hash. Scheduled members are MessagePack
-- of {priority, field1, value1, ...}, as retry.lua writes them.
-- Returns {job id, 1} when enqueued, {existing job id, 0} for a duplicate, {'', 2,
-- capacity} when the queue is full (a duplicate is found first: it takes no room).
if tonumber(ARGV[7]) > 0 then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return { existing, 0 }
  end
end
local room, capacity = room_left(KEYS[8], { KEYS[4], KEYS[5], KEYS[6] }, KEYS[7], ARGV[11])
if room ~= nil and room <= 0 then
  mark_full(KEYS[9])
  redis.call('HINCRBY', KEYS[10], 'refused', 1)
  return { '', 2, capacity }
end
local now_ms = clock_ms()
local job_id = ARGV[1]
if ARGV[2] == 'ready' then
  local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 12))
  job_id = ARGV[9] .. ':' .. string.sub(ARGV[4], 1, 1) .. '-' .. entry_id
else
  local due = tonumber(ARGV[3])
  if ARGV[2] == 'in' then
    due = now_ms + due
  end
  local member = { ARGV[4] }
  for i = 12, #ARGV do
    member[#member + 1] = ARGV[i]
  end
  redis.call('ZADD', KEYS[1], due, cmsgpack.pack(member))
  redis.call('PUBLISH', ARGV[5], tostring(due))
  set_status(KEYS[2], tonumber(ARGV[6]), 'state', 'scheduled', 'type', ARGV[8],
    'queue', ARGV[9], 'attempts', '0', 'max_attempts', ARGV[10],
    'enqueued_at', tostring(now_ms), 'updated_at', tostring(now_ms), 'next_at', tostring(due))
end
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[3], job_id, 'PX', tonumber(ARGV[7]))
end
return { job_id, 1 }
