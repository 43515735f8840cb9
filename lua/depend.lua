-- Records that a job waits for job ARGV[3] of this queue (an existing one), atomically with
-- that job's end: if it has ended already, says how instead, and the caller resolves the
-- dependent at once (resolve.lua).
--
-- KEYS[1] the job's status hash  KEYS[2] the stream its id names  KEYS[3] the done bucket
-- of its id (KEYS[2] and KEYS[3]: the status hash again for an id that names no entry)
-- ARGV[1] group  ARGV[2] the entry its id names ('' for none)  ARGV[3] the job id
-- ARGV[4] the dependent (`<queue> <id> <policy>`)
--
-- Returns {'registered'}, {'ended', outcome, result} (outcome: succeeded, dead, cancelled)
-- or {'none'} (unknown or expired: the caller refuses the dependency).
local base = queue_base(KEYS[1])
local function register()
  local set = base .. 'dependents:' .. ARGV[3]
  -- A new set counts in `has_deps` (the queue's live dependents sets; see hold.lua).
  if redis.call('EXISTS', set) == 0 then
    redis.call('INCR', base .. 'has_deps')
  end
  redis.call('SADD', set, ARGV[4])
  return { 'registered' }
end
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  if state == 'succeeded' then
    return { 'ended', 'succeeded', redis.call('HGET', KEYS[1], 'result') or '' }
  elseif state == 'dead' or state == 'cancelled' then
    return { 'ended', state, redis.call('HGET', KEYS[1], 'error') or redis.call('HGET', KEYS[1], 'reason') or '' }
  end
  return register()
end
if ARGV[2] == '' then
  return { 'none' }
end
local read, entry = pcall(redis.call, 'XRANGE', KEYS[2], ARGV[2], ARGV[2])
if read and #entry == 1 and not field_of(entry[1][2], 'id') then
  return register()
end
local done = redis.call('HGET', KEYS[3], ARGV[3])
if done then
  return { 'ended', 'succeeded', string.match(done, '^%S+ %S+ %S+ %S+ (.*)$') or '' }
end
return { 'none' }
