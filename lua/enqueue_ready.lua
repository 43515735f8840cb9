-- Enqueues ready jobs of one queue (no delay, not unique) in one call, in order: for each
-- job its status hash first (when status is tracked), then its entry, so a worker that
-- takes the entry at once never has its `running` overwritten by this `queued`.
--
-- KEYS[1..3] the queue's ready streams: high, normal, low
-- KEYS[4..] the jobs' status hashes, in job order (none when status is off)
-- ARGV[1] status retention (ms; 0: no status)  ARGV[2] now (ms)  ARGV[3] queue
-- then for each job: priority (1 high, 2 normal, 3 low), the number k of optional fields,
-- the values of id, type, attempt, max_attempts and enqueued_at, k optional fields as
-- name and value (timeout, unique, traceparent), and the payload. Field names that every
-- entry has are written here, not sent with every job.
--
-- Returns the number of jobs enqueued.
local retention = tonumber(ARGV[1])
local now = ARGV[2]
local i = 4
local job = 0
while i <= #ARGV do
  local optional = tonumber(ARGV[i + 1])
  local job_type, max_attempts = ARGV[i + 3], ARGV[i + 5]
  local payload = ARGV[i + 7 + 2 * optional]
  job = job + 1
  set_status(KEYS[3 + job], retention, 'state', 'queued', 'type', job_type, 'queue', ARGV[3],
    'attempts', '0', 'max_attempts', max_attempts, 'enqueued_at', now, 'updated_at', now)
  local stream = KEYS[tonumber(ARGV[i])]
  if optional == 0 then
    redis.call('XADD', stream, '*', 'id', ARGV[i + 2], 'type', job_type, 'attempt', ARGV[i + 4],
      'max_attempts', max_attempts, 'enqueued_at', ARGV[i + 6], 'payload', payload)
  else
    local fields = {'id', ARGV[i + 2], 'type', job_type, 'attempt', ARGV[i + 4],
      'max_attempts', max_attempts, 'enqueued_at', ARGV[i + 6]}
    for k = i + 7, i + 6 + 2 * optional do
      fields[#fields + 1] = ARGV[k]
    end
    fields[#fields + 1] = 'payload'
    fields[#fields + 1] = payload
    redis.call('XADD', stream, '*', unpack(fields))
  end
  i = i + 8 + 2 * optional
end
return job
