-- Shared by every script: the registry (src/redis/scripts.rs) puts this text in front of
-- each script before it is hashed and loaded, so these helpers are written once.

-- Redis' clock in milliseconds since the Unix epoch: the one clock every worker agrees on.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Writes fields of a job's status hash (`key`; field, value, ... follow) and keeps it for
-- `retention` ms from now. Nothing is written when `retention` is 0 (status is off).
local function set_status(key, retention, ...)
  if retention > 0 then
    redis.call('HSET', key, ...)
    redis.call('PEXPIRE', key, retention)
  end
end

-- Room left in a bounded queue (README, "Bounded queues"): its capacity (the integer at
-- `capacity_key`) less the jobs waiting in it, which are the entries of its three streams
-- not yet delivered to `group` (a stream's length less its pending entries: acknowledged
-- entries are deleted) and the jobs of its scheduled set. Returns nil, nil for a queue
-- without a capacity; else the room (0 or more) and the capacity.
local function room_left(capacity_key, streams, scheduled, group)
  local capacity = tonumber(redis.call('GET', capacity_key))
  if not capacity then
    return nil, nil
  end
  local waiting = redis.call('ZCARD', scheduled)
  for _, s in ipairs(streams) do
    local len = redis.call('XLEN', s)
    if len > 0 then
      local ok, summary = pcall(redis.call, 'XPENDING', s, group)
      if ok and type(summary) == 'table' then
        len = len - (tonumber(summary[1]) or 0)
      end
      waiting = waiting + len
    end
  end
  return math.max(0, capacity - waiting), capacity
end

-- Marks a bounded queue as having refused a job (`full_key`, kept a minute): the next
-- worker that takes jobs from it clears the mark and says so on its room channel
-- (room.lua), which producers waiting for room listen to.
local function mark_full(full_key)
  redis.call('SET', full_key, '1', 'PX', 60000)
end

-- The priority letter of a ready stream's key (`h`, `n` or `l`): how a job id or a status
-- hash's `entry` field names the stream.
local function letter_of(stream)
  if string.sub(stream, -5) == ':high' then
    return 'h'
  elseif string.sub(stream, -4) == ':low' then
    return 'l'
  end
  return 'n'
end

-- The job id of a ready entry: its `id` field, or, for an entry without one (a job
-- enqueued to run now), its queue, its stream's priority letter and its entry id
-- (`emails:n-1733300000000-0`; src/names.rs, `locator`).
local function job_id_of(stream, entry_id, fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'id' then
      return fields[i + 1]
    end
  end
  return (string.match(stream, '{([^}]*)}') or '') .. ':' .. letter_of(stream) .. '-' .. entry_id
end

-- The value of field `name` of a flat {field, value, ...} list (the first), or nil.
local function field_of(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

-- The prefix of a queue's keys (`<prefix>:{q}:`), from any key of the queue.
local function queue_base(key)
  return string.match(key, '^(.*}:)') or ''
end

-- Tells a job's dependents (README, "Chains, dependencies, batches") that it ended:
-- when the queue `base` ever had dependents and this job has some, its `outcome`
-- (`succeeded`, `dead`, `cancelled`, `deleted`) and `result` go to the queue's outbox and
-- the queue's workers are woken to resolve them (worker/deps.rs). Costs one EXISTS for a
-- queue that never had dependents.
local function notify_dependents(base, job_id, outcome, result)
  if base == '' or redis.call('EXISTS', base .. 'has_deps') == 0 then
    return false
  end
  if redis.call('EXISTS', base .. 'dependents:' .. job_id) == 0 then
    return false
  end
  redis.call('HSET', base .. 'outbox', job_id, outcome .. '\n' .. (result or ''))
  redis.call('PUBLISH', base .. 'wake', 'deps')
  return true
end

-- Enqueues a webhook delivery (README, "Webhooks") for each hook of the queue `base` that
-- fires on `event` (`succeeded`, `dead`) for a job of `job_type`: a job of type
-- `stevedore.webhook` on the queue's normal stream, in the same step as the job's end, so
-- a delivery is never lost. `{q}:hooks` holds `queue` and `type:<t>` -> the events, kept
-- by workers from `<prefix>:webhooks`. Deliveries do not trigger hooks themselves. Costs
-- one EXISTS for a queue without hooks.
local function deliver_hooks(base, job_id, job_type, event, detail, now)
  if base == '' or job_type == 'stevedore.webhook' or redis.call('EXISTS', base .. 'hooks') == 0 then
    return
  end
  local scopes = { 'queue', 'type:' .. job_type }
  local found = redis.call('HMGET', base .. 'hooks', scopes[1], scopes[2])
  for i = 1, 2 do
    local events = found[i]
    if events and string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then
      local payload = cmsgpack.pack({
        scope = scopes[i], event = event, job_id = job_id, job_type = job_type,
        queue = string.match(base, '{([^}]*)}:$') or '', detail = detail or '', at_ms = now,
      })
      redis.call('XADD', base .. 'normal', '*', 'type', 'stevedore.webhook', 'attempt', '1',
        'max_attempts', '0', 'enqueued_at', tostring(now), 'payload', payload)
    end
  end
end

-- Acknowledges and deletes finished entries of `stream` and records their jobs' success
-- (ack.lua tells the two kinds of record). Reads ARGV from index `at`: n, then n entry
-- ids, then m, then m records of four values each: the index of its key in KEYS, the field
-- ('' for a status hash), the value (for a status hash the handler's JSON result or ''),
-- the retention (ms; above 0 for a done-bucket field; 0 for a status hash means nothing
-- is kept: it is deleted, and the record only names the job). Returns the number of entries acknowledged and the index
-- of ARGV after the section.
local function ack_finished(stream, group, now, at)
  local n = tonumber(ARGV[at])
  local acked = 0
  -- Jobs with dependents or webhooks: job id -> {type, result, has dependents}. A queue
  -- with neither pays two EXISTS per call. A job's id is its entry's locator, or, for a
  -- job with an `id` field, the key of the status record the worker always sends for it
  -- (below). With dependents only, no entry is read. With hooks, a job's type comes from
  -- its success record; an entry is read only when records do not account for it.
  local base = queue_base(stream)
  local ended = nil
  local watch_deps = n > 0 and redis.call('EXISTS', base .. 'has_deps') == 1
  local watch_hooks = n > 0 and redis.call('EXISTS', base .. 'hooks') == 1
  if watch_deps and not watch_hooks then
    ended = {}
    for i = at + 1, at + n do
      local job_id = job_id_of(stream, ARGV[i], {})
      if redis.call('EXISTS', base .. 'dependents:' .. job_id) == 1 then
        ended[job_id] = { job_type = '', result = '', deps = true }
      end
    end
  elseif watch_hooks then
    -- Each job's type comes from its success record when it has one (a done-bucket value
    -- names it; a status hash holds it); only entries no record accounts for are read.
    ended = {}
    local function found(job_id, job_type)
      ended[job_id] = {
        job_type = job_type,
        result = '',
        deps = watch_deps and redis.call('EXISTS', base .. 'dependents:' .. job_id) == 1,
      }
    end
    local first = at + n + 2
    local typed, others = {}, 0
    for i = first, first + 4 * tonumber(ARGV[at + n + 1]) - 1, 4 do
      local key, field, value = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]
      local job_id, job_type
      if field == '' then
        job_id = string.match(key, '}:job:(.*)$')
        job_type = job_id and redis.call('HGET', key, 'type')
      else
        job_id, job_type = field, string.match(value, '^%S+ %S+ %S+ (%S+)')
      end
      if job_id and job_type then
        found(job_id, job_type)
        typed[job_id] = true
        others = others + 1
      end
    end
    -- Entries whose id names no typed record: jobs with an `id` field (their records name
    -- them by it) or without a record. When the typed records left over are as many, each
    -- is one of those jobs and nothing is read; else those entries are read.
    local unnamed = {}
    for i = at + 1, at + n do
      local job_id = job_id_of(stream, ARGV[i], {})
      if typed[job_id] then
        others = others - 1
      else
        unnamed[#unnamed + 1] = ARGV[i]
      end
    end
    if #unnamed > others then
      for _, entry_id in ipairs(unnamed) do
        local entry = redis.call('XRANGE', stream, entry_id, entry_id)
        if #entry == 1 then
          local job_id = job_id_of(stream, entry_id, entry[1][2])
          if not ended[job_id] then
            found(job_id, field_of(entry[1][2], 'type') or '')
          end
        end
      end
    end
  end
  if n > 0 then
    acked = redis.call('XACK', stream, group, unpack(ARGV, at + 1, at + n))
    redis.call('XDEL', stream, unpack(ARGV, at + 1, at + n))
  end
  local first = at + n + 2
  local after = first + 4 * tonumber(ARGV[at + n + 1])
  local buckets, order = {}, {}
  for i = first, after - 1, 4 do
    local key, field, value, keep = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    if ended then
      -- The handler's result, for the dependents and hooks.
      if field == '' then
        local id = string.match(key, '}:job:(.*)$')
        if id and not ended[id] and watch_deps and not watch_hooks
          and redis.call('EXISTS', base .. 'dependents:' .. id) == 1 then
          ended[id] = { job_type = '', result = '', deps = true }
        end
        if id and ended[id] then
          ended[id].result = value
        end
      elseif ended[field] then
        ended[field].result = string.match(value, '^%S+ %S+ %S+ %S+ (.*)$') or ''
      end
    end
    if field == '' then
      if keep <= 0 then
        -- Nothing kept on success (or status off): the record only named the job.
        redis.call('DEL', key)
      elseif value ~= '' then
        redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'updated_at', now,
          'result', value)
        redis.call('PEXPIRE', key, keep)
      else
        redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'updated_at', now)
        redis.call('PEXPIRE', key, keep)
      end
    else
      local b = buckets[key]
      if not b then
        b = { fields = {}, keep = 0 }
        buckets[key] = b
        order[#order + 1] = key
      end
      b.fields[#b.fields + 1] = field
      b.fields[#b.fields + 1] = value
      if keep > b.keep then
        b.keep = keep
      end
    end
  end
  for _, key in ipairs(order) do
    local b = buckets[key]
    redis.call('HSET', key, unpack(b.fields))
    local ttl = redis.call('PTTL', key)
    if ttl < b.keep then
      redis.call('PEXPIRE', key, b.keep)
      if ttl == -1 then
        -- A new bucket: listed by its minute in the queue's done index
        -- (`<prefix>:{q}:done`), which the optional memory budget trims from.
        local index, minute = string.match(key, '^(.*):(%d+)$')
        if index then
          redis.call('ZADD', index, minute, minute)
          if redis.call('PTTL', index) < b.keep then
            redis.call('PEXPIRE', index, b.keep)
          end
        end
      end
    end
  end
  if ended then
    for job_id, e in pairs(ended) do
      if e.deps then
        notify_dependents(base, job_id, 'succeeded', e.result)
      end
      if watch_hooks then
        deliver_hooks(base, job_id, e.job_type, 'succeeded', e.result, tonumber(now))
      end
    end
  end
  return acked, after
end

-- Frees the unique key of a job that will not run (cancelled, deleted, purged): the key
-- `unique_prefix .. <the entry's unique field>`, when it still holds `job_id`, so the
-- same work can be enqueued again at once.
local function release_unique(fields, unique_prefix, job_id)
  local unique = field_of(fields, 'unique')
  if unique and unique_prefix ~= '' then
    local key = unique_prefix .. unique
    if redis.call('GET', key) == job_id then
      redis.call('DEL', key)
    end
  end
end

-- Marks a job `cancelled` in its status hash `key` (kept `retention` ms; nothing with 0):
-- `who` cancelled it and `why`. A job that had no hash gets a whole one from its entry's
-- `fields` and `queue`; one that had keeps its history, less its due time and limit.
local function write_cancelled(key, retention, fields, queue, who, why, now)
  if retention <= 0 then
    return
  end
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'type', field_of(fields, 'type') or '', 'queue', queue,
      'attempts', tostring(math.max(0, (tonumber(field_of(fields, 'attempt') or '1') or 1) - 1)),
      'max_attempts', field_of(fields, 'max_attempts') or '0',
      'enqueued_at', field_of(fields, 'enqueued_at') or '')
  else
    redis.call('HDEL', key, 'next_at', 'waiting_for', 'entry')
  end
  redis.call('HSET', key, 'state', 'cancelled', 'cancelled_by', who, 'reason', why,
    'finished_at', tostring(now), 'updated_at', tostring(now))
  redis.call('PEXPIRE', key, retention)
end

