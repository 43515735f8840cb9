-- An operator's action on one job, atomic with everything that moves jobs: cancel it, delete
-- it, or run a scheduled or retrying job now. The job is found where its id says
-- (docs/architecture.md, "Data model"): its status hash, else the entry its id names.
--
-- KEYS[1] the job's status hash  KEYS[2..4] the queue's high, normal and low streams
-- KEYS[5] its scheduled set  KEYS[6] the done bucket of the id (the status hash again for
-- an id that names no entry)  KEYS[7] the queue's cancel requests (`{q}:cancel`)
-- KEYS[8] its lifetime totals  KEYS[9] its dead-letter stream
-- ARGV[1] 'cancel', 'delete' or 'retry'  ARGV[2] the job id  ARGV[3] the consumer group
-- ARGV[4] the entry the id names (`<letter>-<entry id>`; '' for none)  ARGV[5] the wake
-- channel  ARGV[6] status retention (ms; 0: none is written)  ARGV[7] who acts
-- ARGV[8] why  ARGV[9] the queue  ARGV[10] the prefix of its unique keys
--
-- A running job (its entry pending) is not stopped here: the request is recorded in the
-- cancel hash (field `<letter>-<entry id>`, value `who \n why`) and published on the wake
-- channel (`cancel <stream> <entry id>`); the worker running it stops it and settles it
-- (cancelled.lua), and a janitor taking the entry over from a dead worker cancels it
-- instead of running it (reclaim.lua). Deleting a running job removes its entry at once
-- (the worker's later writes are fenced and change nothing) and asks the worker to stop.
--
-- Returns {outcome, state before, job type}: outcome 'cancelled', 'cancelling' (asked of
-- the worker running it), 'deleted', 'retried', 'final' (already ended: nothing changed),
-- 'not_scheduled' (retry of a job that is not waiting for a time: nothing changed),
-- 'none' (unknown id). The state is '' for 'none'.
local mode, id, group = ARGV[1], ARGV[2], ARGV[3]
local retention = tonumber(ARGV[6]) or 0
local who, why, queue, unique_prefix = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local now = clock_ms()
local streams = { h = KEYS[2], n = KEYS[3], l = KEYS[4] }

local flat = redis.call('HGETALL', KEYS[1])
local record = {}
for i = 1, #flat, 2 do
  record[flat[i]] = flat[i + 1]
end
local has_record = #flat > 0
local state = record['state'] or ''
local job_type = record['type'] or ''

local base = queue_base(KEYS[1])
-- Counts the action and tells the job's dependents it will not run.
local function count(field)
  redis.call('HINCRBY', KEYS[8], field, 1)
  if field == 'cancelled' or field == 'deleted' then
    notify_dependents(base, id, field, why)
  end
end

-- The scheduled member of this job: looked up by its due time when the hash has one,
-- else scanned for (a member carries the id in its `id` field).
local function member_of_id(member)
  local ok, parts = pcall(cmsgpack.unpack, member)
  if ok and type(parts) == 'table' then
    for i = 2, #parts - 1, 2 do
      if parts[i] == 'id' then
        return parts[i + 1] == id, parts
      end
    end
  end
  return false, nil
end
local function find_scheduled()
  local at = tonumber(record['next_at'] or '')
  if at then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], at, at)) do
      local mine, parts = member_of_id(m)
      if mine then
        return m, parts
      end
    end
  end
  local pattern = '*' .. string.gsub(id, '([%*%?%[%]\\])', '\\%1') .. '*'
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', KEYS[5], cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      local mine, parts = member_of_id(page[2][i])
      if mine then
        return page[2][i], parts
      end
    end
  until cursor == '0'
  return nil, nil
end

-- Ended jobs: only a delete changes them.
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
  if mode ~= 'delete' then
    return { 'final', state, job_type }
  end
  if state == 'dead' and record['dlq'] then
    redis.call('XDEL', KEYS[9], record['dlq'])
  end
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[8], 'deleted', 1)
  return { 'deleted', state, job_type }
end

-- Waiting for the jobs it depends on: it has no entry yet.
if state == 'blocked' then
  if mode == 'retry' then
    return { 'not_scheduled', state, job_type }
  end
  redis.call('DEL', base .. 'parents:' .. id)
  if mode == 'cancel' then
    redis.call('HDEL', KEYS[1], 'member', 'needs', 'due')
    write_cancelled(KEYS[1], retention, {}, queue, who, why, now)
    if retention <= 0 then
      redis.call('DEL', KEYS[1])
    end
    count('cancelled')
    return { 'cancelled', state, job_type }
  end
  redis.call('DEL', KEYS[1])
  count('deleted')
  return { 'deleted', state, job_type }
end

if state == 'scheduled' or state == 'retrying' then
  local member, parts = find_scheduled()
  if member then
    if mode == 'retry' then
      redis.call('ZADD', KEYS[5], now, member)
      redis.call('HSET', KEYS[1], 'next_at', tostring(now), 'updated_at', tostring(now))
      redis.call('HDEL', KEYS[1], 'waiting_for')
      redis.call('PUBLISH', ARGV[5], tostring(now))
      count('retried_now')
      return { 'retried', state, job_type }
    end
    redis.call('ZREM', KEYS[5], member)
    local fields = {}
    for i = 2, #parts do
      fields[#fields + 1] = parts[i]
    end
    release_unique(fields, unique_prefix, id)
    if mode == 'cancel' then
      write_cancelled(KEYS[1], retention, fields, queue, who, why, now)
      count('cancelled')
      return { 'cancelled', state, job_type }
    end
    redis.call('DEL', KEYS[1])
    count('deleted')
    return { 'deleted', state, job_type }
  end
  -- Promoted meanwhile without its hash saying so (written by an earlier version): read
  -- as queued below, if its entry is known.
end

if mode == 'retry' then
  if has_record then
    return { 'not_scheduled', state, job_type }
  end
  -- No hash: a job to run now, waiting, running or done, as its entry and bucket say.
  local letter, entry_id = string.match(ARGV[4], '^([hnl])%-(.+)$')
  if not letter then
    return { 'none', '', '' }
  end
  local found, entry = pcall(redis.call, 'XRANGE', streams[letter], entry_id, entry_id)
  if found and #entry == 1 and not field_of(entry[1][2], 'id') then
    local read_pending, pending = pcall(redis.call, 'XPENDING', streams[letter], group, entry_id, entry_id, 1)
    local now_state = 'queued'
    if read_pending and type(pending) == 'table' and #pending == 1 then
      now_state = 'running'
    end
    return { 'not_scheduled', now_state, field_of(entry[1][2], 'type') or '' }
  end
  local done = redis.call('HGET', KEYS[6], id)
  if done then
    return { 'not_scheduled', 'succeeded', string.match(done, '^%S+ %S+ %S+ (%S+)') or '' }
  end
  return { 'none', '', '' }
end

-- Queued or running: the entry, named by the hash or by the id itself.
local at = record['entry'] or ''
if not has_record then
  at = ARGV[4]
end
local letter, entry_id = string.match(at, '^([hnl])%-(.+)$')
if not letter then
  return { 'none', '', '' }
end
local stream = streams[letter]
local found, entry = pcall(redis.call, 'XRANGE', stream, entry_id, entry_id)
-- An entry that carries an `id` of another job is not this job's.
if not found or #entry == 0 or (not has_record and field_of(entry[1][2], 'id')) then
  if has_record then
    -- The hash names an entry that is gone (acknowledged as the hash was being read by a
    -- previous version): nothing to act on.
    return { 'final', state, job_type }
  end
  local done = redis.call('HGET', KEYS[6], id)
  if done then
    if mode == 'delete' then
      redis.call('HDEL', KEYS[6], id)
      count('deleted')
      return { 'deleted', 'succeeded', string.match(done, '^%S+ %S+ %S+ (%S+)') or '' }
    end
    return { 'final', 'succeeded', string.match(done, '^%S+ %S+ %S+ (%S+)') or '' }
  end
  return { 'none', '', '' }
end
local fields = entry[1][2]
job_type = field_of(fields, 'type') or job_type
-- No consumer group yet (no worker ever read the queue): nothing is pending.
local read_pending, pending = pcall(redis.call, 'XPENDING', stream, group, entry_id, entry_id, 1)
if read_pending and type(pending) == 'table' and #pending == 1 then
  -- Running (or fetched and about to start): the worker holding it is asked to stop.
  redis.call('HSET', KEYS[7], letter .. '-' .. entry_id, who .. '\n' .. why)
  redis.call('PEXPIRE', KEYS[7], 86400000)
  redis.call('PUBLISH', ARGV[5], 'cancel ' .. stream .. ' ' .. entry_id)
  if mode == 'cancel' then
    if has_record then
      redis.call('HSET', KEYS[1], 'state', 'cancelling', 'cancelled_by', who, 'reason', why,
        'updated_at', tostring(now))
    end
    return { 'cancelling', 'running', job_type }
  end
  redis.call('XACK', stream, group, entry_id)
  redis.call('XDEL', stream, entry_id)
  release_unique(fields, unique_prefix, id)
  redis.call('DEL', KEYS[1])
  count('deleted')
  return { 'deleted', 'running', job_type }
end
-- Waiting: it never runs.
redis.call('XDEL', stream, entry_id)
release_unique(fields, unique_prefix, id)
if mode == 'cancel' then
  write_cancelled(KEYS[1], retention, fields, queue, who, why, now)
  count('cancelled')
  return { 'cancelled', 'queued', job_type }
end
redis.call('DEL', KEYS[1])
count('deleted')
return { 'deleted', 'queued', job_type }
