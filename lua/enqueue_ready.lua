-- Enqueues ready jobs of one queue (no delay, not unique) in one call, in order: for each
-- job its status hash first (when status is tracked), then its entry, so a worker that
-- takes the entry at once never has its `running` overwritten by this `queued`.
--
-- KEYS[1..3] the queue's ready streams: high, normal, low
-- KEYS[4..] the jobs' status hashes, in job order (none when status is off)
-- ARGV[1] status retention (ms; 0: no status)  ARGV[2] now (ms)  ARGV[3] queue
-- then for each job: priority (1 high, 2 normal, 3 low), job type, max attempts, the
-- number of entry arguments that follow (fields and values), then the entry's fields and
-- values as XADD takes them.
--
-- Returns the number of jobs enqueued.
local retention = tonumber(ARGV[1])
local now = ARGV[2]
local i = 4
local job = 0
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  job = job + 1
  if retention > 0 then
    local status = KEYS[3 + job]
    redis.call('HSET', status, 'state', 'queued', 'type', ARGV[i + 1], 'queue', ARGV[3],
      'attempts', '0', 'max_attempts', ARGV[i + 2], 'enqueued_at', now, 'updated_at', now)
    redis.call('PEXPIRE', status, retention)
  end
  redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', unpack(ARGV, i + 4, i + 3 + n))
  i = i + 4 + n
end
return job
