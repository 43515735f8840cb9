-- Moves one pending entry from a ready stream to the queue's dead-letter stream, fenced:
-- nothing happens unless `consumer` still owns the entry.
--
-- KEYS[1] ready stream    KEYS[2] dead-letter stream
-- KEYS[3] the job's status hash (any key of the same slot when the job id is unknown)
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] reason  ARGV[5] error text
-- ARGV[6] status retention (ms; 0: no status)
-- ARGV[7..] more field, value pairs for the status hash (type, queue, attempts, ...: a job
--           that had no hash gets a whole one)
--
-- The dead letter carries the job id as field `id`, added when the entry had none.
--
-- Returns 1 when moved, 0 when the entry is owned by another consumer or no longer pending
-- (lost lease: do nothing), -1 when the entry was pending but its data was deleted (it is
-- acknowledged so it does not linger).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
local deliveries = pending[1][4]
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return -1
end

-- The dead letter keeps the job's own fields and adds why it died. Fields with the names
-- we add are dropped from the original, so a hand-written entry cannot spoof them.
local added = { reason = true, error = true, failed_at = true, deliveries = true, origin = true }
-- At most 1000 original fields are kept (unpack has a stack limit; a hand-written entry
-- may have more), and `truncated` says so.
local fields = {}
local original = entry[1][2]
local last = math.min(#original, 2000)
for i = 1, last, 2 do
  if not added[original[i]] then
    fields[#fields + 1] = original[i]
    fields[#fields + 1] = original[i + 1]
  end
end
if not field_of(original, 'id') then
  fields[#fields + 1] = 'id'
  fields[#fields + 1] = job_id_of(KEYS[1], ARGV[3], original)
end
if last < #original then
  fields[#fields + 1] = 'truncated'
  fields[#fields + 1] = tostring((#original - last) / 2)
end
local failed_at = tostring(clock_ms())
fields[#fields + 1] = 'reason'
fields[#fields + 1] = ARGV[4]
fields[#fields + 1] = 'error'
fields[#fields + 1] = ARGV[5]
fields[#fields + 1] = 'failed_at'
fields[#fields + 1] = failed_at
fields[#fields + 1] = 'deliveries'
fields[#fields + 1] = tostring(deliveries)
fields[#fields + 1] = 'origin'
fields[#fields + 1] = KEYS[1] .. ' ' .. ARGV[3]

local dead_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
notify_dependents(queue_base(KEYS[1]), job_id_of(KEYS[1], ARGV[3], original), 'dead', ARGV[5])
deliver_hooks(queue_base(KEYS[1]), job_id_of(KEYS[1], ARGV[3], original),
  field_of(original, 'type') or '', 'dead', ARGV[5], tonumber(failed_at))
-- `dlq` names the dead letter, so deleting the job (job_control.lua) deletes it too.
set_status(KEYS[3], tonumber(ARGV[6]), 'state', 'dead', 'reason', ARGV[4], 'error', ARGV[5],
  'finished_at', failed_at, 'updated_at', failed_at, 'dlq', dead_id, unpack(ARGV, 7))
return 1
