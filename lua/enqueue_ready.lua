-- Enqueues ready jobs of one queue (no delay, not unique) in one call, in order. Nothing
-- but the entry is written: a job's id is its entry's (src/names.rs, `locator`), and its
-- status while it waits or runs is read from the entry and the group's pending list.
--
-- KEYS[1..3] the queue's ready streams: high, normal, low
-- ARGV[1..] for each job: priority (1 high, 2 normal, 3 low), the number k of optional
-- fields, the values of type, attempt, max_attempts and enqueued_at, k optional fields as
-- name and value (timeout, unique, traceparent), and the payload. Field names that every
-- entry has are written here, not sent with every job.
--
-- Returns the entry ids, in job order.
local ids = {}
local i = 1
while i <= #ARGV do
  local optional = tonumber(ARGV[i + 1])
  local payload = ARGV[i + 6 + 2 * optional]
  local stream = KEYS[tonumber(ARGV[i])]
  if optional == 0 then
    ids[#ids + 1] = redis.call('XADD', stream, '*', 'type', ARGV[i + 2], 'attempt', ARGV[i + 3],
      'max_attempts', ARGV[i + 4], 'enqueued_at', ARGV[i + 5], 'payload', payload)
  else
    local fields = {'type', ARGV[i + 2], 'attempt', ARGV[i + 3], 'max_attempts', ARGV[i + 4],
      'enqueued_at', ARGV[i + 5]}
    for k = i + 6, i + 5 + 2 * optional do
      fields[#fields + 1] = ARGV[k]
    end
    fields[#fields + 1] = 'payload'
    fields[#fields + 1] = payload
    ids[#ids + 1] = redis.call('XADD', stream, '*', unpack(fields))
  end
  i = i + 7 + 2 * optional
end
return ids
