-- Enqueues one job that needs more than a plain XADD: a delayed job, a unique job, or
-- both. Checks the unique key, writes the job, and records its status, atomically.
--
-- KEYS[1] target: the ready stream (mode 'ready') or the scheduled set ('in'/'at')
-- KEYS[2] the job's status hash  KEYS[3] the unique key (read only when ARGV[7] > 0)
-- ARGV[1] job id  ARGV[2] mode: 'ready', 'in' (ARGV[3] = delay ms on Redis' clock) or
--         'at' (ARGV[3] = ms since the epoch)  ARGV[4] priority (high|normal|low)
-- ARGV[5] wake channel  ARGV[6] status retention ms (0: no status)
-- ARGV[7] unique ttl ms (0: not unique)  ARGV[8] job type  ARGV[9] queue
-- ARGV[10] max attempts  ARGV[11..] field, value, ... of the entry
--
-- Scheduled members are MessagePack of {priority, field1, value1, ...}, as retry.lua
-- writes them. Returns {job id, 1} when enqueued, {existing job id, 0} for a duplicate.
if tonumber(ARGV[7]) > 0 then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return { existing, 0 }
  end
  redis.call('SET', KEYS[3], ARGV[1], 'PX', tonumber(ARGV[7]))
end
local now_ms = clock_ms()
local state, due = 'queued', nil
if ARGV[2] == 'ready' then
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, 11))
else
  due = tonumber(ARGV[3])
  if ARGV[2] == 'in' then
    due = now_ms + due
  end
  local member = { ARGV[4] }
  for i = 11, #ARGV do
    member[#member + 1] = ARGV[i]
  end
  redis.call('ZADD', KEYS[1], due, cmsgpack.pack(member))
  redis.call('PUBLISH', ARGV[5], tostring(due))
  state = 'scheduled'
end
if tonumber(ARGV[6]) > 0 then
  redis.call('HSET', KEYS[2], 'state', state, 'type', ARGV[8], 'queue', ARGV[9],
    'attempts', '0', 'max_attempts', ARGV[10], 'enqueued_at', tostring(now_ms),
    'updated_at', tostring(now_ms))
  if due then
    redis.call('HSET', KEYS[2], 'next_at', tostring(due))
  end
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return { ARGV[1], 1 }
