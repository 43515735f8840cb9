-- Enqueues ready jobs of one queue (no delay, not unique) in one call, in order. Nothing
-- but the entry is written: a job's id is its entry's (src/names.rs, `locator`), and its
-- status while it waits or runs is read from the entry and the group's pending list.
--
-- A bounded queue (one with a capacity) takes jobs while it has room and refuses the
-- rest of the call, counting and writing in one step, so concurrent producers never push
-- it past its capacity; a refusal leaves the queue's full mark for room.lua and is counted
-- in the queue's lifetime totals.
--
-- KEYS[1..3] the queue's ready streams: high, normal, low  KEYS[4] its scheduled set
-- KEYS[5] its capacity  KEYS[6] its full mark  KEYS[7] its lifetime totals (`refused`)
-- ARGV[1] the consumer group
-- ARGV[2..] for each job: priority (1 high, 2 normal, 3 low), the number k of optional
-- fields, the values of type, attempt, max_attempts and enqueued_at, k optional fields as
-- name and value (timeout, unique, traceparent), and the payload. Field names that every
-- entry has are written here, not sent with every job.
--
-- Returns, in job order, each job's entry id, or for a job refused because the queue is
-- full, the queue's capacity (an integer).
local room, capacity = room_left(KEYS[5], { KEYS[1], KEYS[2], KEYS[3] }, KEYS[4], ARGV[1])
local ids = {}
local refused = 0
local i = 2
while i <= #ARGV do
  local optional = tonumber(ARGV[i + 1])
  if room ~= nil and room <= 0 then
    ids[#ids + 1] = capacity
    refused = refused + 1
  else
    if room ~= nil then
      room = room - 1
    end
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
  end
  i = i + 7 + 2 * optional
end
if refused > 0 then
  mark_full(KEYS[6])
  redis.call('HINCRBY', KEYS[7], 'refused', refused)
end
return ids
