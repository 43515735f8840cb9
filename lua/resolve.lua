-- Tells a waiting job, or a batch, that one job it waits for ended (README, "Chains,
-- dependencies, batches"). Idempotent: a job's outcome counts once however many workers
-- resolve the same outbox entry, so the last of two jobs ending at the same moment on two
-- workers releases its dependent exactly once.
--
-- KEYS[1] the target's hash (a job's status hash, or `{q}:batch:<id>`)  KEYS[2] what it
-- heard so far (`{q}:parents:<id>`, or `{q}:batch:<id>:jobs`): job id -> outcome
-- KEYS[3..5] the target queue's high, normal and low streams  KEYS[6] its scheduled set
-- KEYS[7] its dead-letter stream  KEYS[8] its totals
-- ARGV[1] the job that ended ('' to only check whether the target can go: a job waiting
--         for nothing is released, a batch is sealed)
-- ARGV[2] its outcome (succeeded, dead, cancelled, deleted; `unwritten`: the job, or
--         batch, was never written, its flow's client having stopped half-way: the
--         dependent is cancelled whatever its policy)  ARGV[3] its result or error
-- ARGV[4] the dependency's policy when it did not succeed: 'cancel' (the dependent is
--         cancelled), 'run' (it runs anyway), 'dead' (it is dead-lettered)
-- ARGV[5] status retention (ms; 0: the target's status goes once it runs)
-- ARGV[6] 'job' or 'batch'  ARGV[7] the target's id
--
-- A released job's entry carries `parents`: JSON of {job id: {"state": outcome,
-- "result": text}}, for its handler (`JobContext::parent_results`).
-- Returns {what happened}: 'released', 'scheduled', 'waiting', 'cancelled', 'dead',
-- 'done' (a batch finished), 'counted' (a batch heard of one more job), 'dup' (heard
-- already), 'gone' (the target ended or was deleted meanwhile).
local now = clock_ms()
local base = queue_base(KEYS[1])
local retention = tonumber(ARGV[5]) or 0
local parent, outcome, result, policy = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local target = ARGV[7]

if ARGV[6] == 'batch' then
  if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'state') == 'done' then
    return { 'gone' }
  end
  if parent == '' then
    redis.call('HSET', KEYS[1], 'sealed', '1')
  else
    if redis.call('HSETNX', KEYS[2], parent, outcome) == 0 then
      return { 'dup' }
    end
    if outcome == 'succeeded' then
      redis.call('HINCRBY', KEYS[1], 'succeeded', 1)
    else
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
    end
  end
  local b = redis.call('HMGET', KEYS[1], 'sealed', 'total', 'succeeded', 'failed')
  local total, ok, failed = tonumber(b[2]) or 0, tonumber(b[3]) or 0, tonumber(b[4]) or 0
  if b[1] ~= '1' or ok + failed < total then
    return { 'counted' }
  end
  redis.call('HSET', KEYS[1], 'state', 'done', 'finished_at', tostring(now))
  if retention > 0 then
    redis.call('PEXPIRE', KEYS[1], retention)
    redis.call('PEXPIRE', KEYS[2], retention)
  end
  if failed == 0 then
    notify_dependents(base, target, 'succeeded', '')
  else
    notify_dependents(base, target, 'failed', failed .. ' of ' .. total .. ' jobs failed')
  end
  return { 'done' }
end

if redis.call('HGET', KEYS[1], 'state') ~= 'blocked' then
  return { 'gone' }
end
local function finish()
  redis.call('HDEL', KEYS[1], 'member', 'needs', 'due')
  redis.call('DEL', KEYS[2])
  if retention > 0 then
    redis.call('PEXPIRE', KEYS[1], retention)
  else
    redis.call('DEL', KEYS[1])
  end
end
if parent ~= '' then
  if redis.call('HSETNX', KEYS[2], parent, outcome .. '\n' .. result) == 0 then
    return { 'dup' }
  end
  if outcome == 'unwritten' then
    policy = 'cancel'
  end
  if outcome ~= 'succeeded' and policy ~= 'run' then
    local why = 'job ' .. parent .. ' it depends on ended ' .. outcome
    if outcome == 'unwritten' then
      why = parent .. ' of its flow was never written: the enqueue of the flow stopped half-way'
    end
    if policy == 'dead' then
      local ok, parts = pcall(cmsgpack.unpack, redis.call('HGET', KEYS[1], 'member') or '')
      local fields = {}
      if ok and type(parts) == 'table' then
        for i = 2, #parts do
          fields[#fields + 1] = parts[i]
        end
      end
      fields[#fields + 1] = 'reason'
      fields[#fields + 1] = 'parent_failed'
      fields[#fields + 1] = 'error'
      fields[#fields + 1] = why
      fields[#fields + 1] = 'failed_at'
      fields[#fields + 1] = tostring(now)
      fields[#fields + 1] = 'origin'
      fields[#fields + 1] = KEYS[1]
      local dead_id = redis.call('XADD', KEYS[7], '*', unpack(fields))
      redis.call('HSET', KEYS[1], 'state', 'dead', 'reason', 'parent_failed', 'error', why,
        'finished_at', tostring(now), 'updated_at', tostring(now), 'dlq', dead_id)
      redis.call('HINCRBY', KEYS[8], 'dead', 1)
      local job_type = redis.call('HGET', KEYS[1], 'type') or ''
      finish()
      notify_dependents(base, target, 'dead', why)
      deliver_hooks(base, target, job_type, 'dead', why, now)
      return { 'dead' }
    end
    redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancelled_by', 'stevedore', 'reason', why,
      'finished_at', tostring(now), 'updated_at', tostring(now))
    redis.call('HINCRBY', KEYS[8], 'cancelled', 1)
    finish()
    notify_dependents(base, target, 'cancelled', why)
    return { 'cancelled' }
  end
end
local needs = tonumber(redis.call('HGET', KEYS[1], 'needs')) or 0
if redis.call('HLEN', KEYS[2]) < needs then
  return { 'waiting' }
end

-- Every job it waits for has ended: it goes to its stream, or to the schedule if it is
-- not due yet, with what they left it.
local ok, parts = pcall(cmsgpack.unpack, redis.call('HGET', KEYS[1], 'member') or '')
if not ok or type(parts) ~= 'table' or #parts < 3 then
  return { 'gone' }
end
local heard = redis.call('HGETALL', KEYS[2])
if #heard > 0 then
  local map = {}
  for i = 1, #heard, 2 do
    local state, text = string.match(heard[i + 1], '^([^\n]*)\n(.*)$')
    map[heard[i]] = { state = state or heard[i + 1], result = text or '' }
  end
  parts[#parts + 1] = 'parents'
  parts[#parts + 1] = cjson.encode(map)
end
local streams = { high = KEYS[3], normal = KEYS[4], low = KEYS[5] }
local stream = streams[parts[1]] or KEYS[4]
local due = tonumber(redis.call('HGET', KEYS[1], 'due')) or 0
-- The job is written first, then its held form goes: should the write fail (a key of the
-- wrong type), the job stays held as it was.
if due > now then
  redis.call('ZADD', KEYS[6], due, cmsgpack.pack(parts))
  finish()
  redis.call('PUBLISH', base .. 'wake', tostring(due))
  if retention > 0 then
    redis.call('HSET', KEYS[1], 'state', 'scheduled', 'next_at', tostring(due),
      'updated_at', tostring(now))
  end
  return { 'scheduled' }
end
local entry_id = redis.call('XADD', stream, '*', unpack(parts, 2))
finish()
if retention > 0 then
  redis.call('HSET', KEYS[1], 'state', 'queued', 'updated_at', tostring(now),
    'entry', letter_of(stream) .. '-' .. entry_id)
end
return { 'released' }
