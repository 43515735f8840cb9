-- Settles an attempt that stopped because it was cancelled, fenced: the entry is
-- acknowledged, deleted and its job marked `cancelled` only while `consumer` still owns it
-- (a job deleted while it ran is gone already, and a lease lost to another worker changes
-- nothing). The cancel request is removed either way.
--
-- KEYS[1] ready stream  KEYS[2] the job's status hash  KEYS[3] the queue's cancel requests
-- KEYS[4] its lifetime totals
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] status retention (ms; 0: none)
-- ARGV[5] who, when no request is recorded (a handler that cancelled itself)
-- ARGV[6] why, likewise  ARGV[7..] more field, value pairs for the status hash (type,
-- queue, attempts, ...: a job that had no hash gets a whole one)
--
-- Returns 1 when settled, 0 when the entry was not this consumer's any more.
local field = letter_of(KEYS[1]) .. '-' .. ARGV[3]
local request = redis.call('HGET', KEYS[3], field)
redis.call('HDEL', KEYS[3], field)
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
local who, why = ARGV[5], ARGV[6]
if request then
  who, why = string.match(request, '^([^\n]*)\n(.*)$')
  who, why = who or '', why or ''
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
notify_dependents(queue_base(KEYS[1]), string.match(KEYS[2], '}:job:(.*)$') or '', 'cancelled', why)
local now = tostring(clock_ms())
set_status(KEYS[2], tonumber(ARGV[4]), 'state', 'cancelled', 'cancelled_by', who, 'reason', why,
  'finished_at', now, 'updated_at', now, unpack(ARGV, 7))
if tonumber(ARGV[4]) > 0 then
  redis.call('HDEL', KEYS[2], 'entry', 'next_at', 'waiting_for')
end
return 1
