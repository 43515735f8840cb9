-- One step of purging a queue: deletes up to ARGV[4] waiting jobs, of one ready stream or
-- of the scheduled set, that match the filters. Jobs that run are never touched: a
-- stream's waiting entries are those after its group's last delivered id (acknowledged
-- entries are deleted, so the ones before it are pending). Safe while workers run: each
-- step is atomic, and a job fetched between two steps simply runs.
--
-- KEYS[1] a ready stream, or the scheduled set  KEYS[2] the queue's lifetime totals
-- ARGV[1] 'stream' or 'scheduled'  ARGV[2] the consumer group  ARGV[3] cursor: '' to start,
--         then the reply's  ARGV[4] most entries looked at in this step
-- ARGV[5] only jobs of this type ('' for any)  ARGV[6] only scheduled jobs of this priority
--         ('' for any)  ARGV[7] the prefix of the queue's status keys (`<prefix>:{q}:job:`)
-- ARGV[8] the prefix of its unique keys
--
-- Purged jobs are gone, as if deleted: their status hashes too, and their unique keys are
-- freed. Counted under `purged` in the totals.
-- Returns {purged, next cursor ('' when done)}.
local kind, group, cursor, budget = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local job_type, priority = ARGV[5], ARGV[6]
local purged = 0
local function wanted(fields)
  return job_type == '' or field_of(fields, 'type') == job_type
end

if kind == 'stream' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 0, '' }
  end
  local from = cursor
  if from == '' then
    from = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
      local info = {}
      for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
      if info['name'] == group then
        from = info['last-delivered-id'] or '0-0'
      end
    end
  end
  local page = redis.call('XRANGE', KEYS[1], '(' .. from, '+', 'COUNT', budget)
  local gone = {}
  for _, e in ipairs(page) do
    if wanted(e[2]) then
      gone[#gone + 1] = e[1]
      local id = job_id_of(KEYS[1], e[1], e[2])
      release_unique(e[2], ARGV[8], id)
      notify_dependents(queue_base(KEYS[1]), id, 'deleted', 'purged')
      if field_of(e[2], 'id') then
        redis.call('DEL', ARGV[7] .. id)
      end
    end
  end
  if #gone > 0 then
    redis.call('XDEL', KEYS[1], unpack(gone))
    purged = #gone
  end
  local next_cursor = ''
  if #page == budget then
    next_cursor = page[#page][1]
  end
  if purged > 0 then
    redis.call('HINCRBY', KEYS[2], 'purged', purged)
  end
  return { purged, next_cursor }
end

-- The scheduled set: a ZSCAN, which returns every member present for the whole scan.
local page = redis.call('ZSCAN', KEYS[1], cursor == '' and '0' or cursor, 'COUNT', budget)
for i = 1, #page[2], 2 do
  local member = page[2][i]
  local ok, parts = pcall(cmsgpack.unpack, member)
  if ok and type(parts) == 'table' and (priority == '' or parts[1] == priority) then
    local fields = {}
    for j = 2, #parts do
      fields[#fields + 1] = parts[j]
    end
    if wanted(fields) then
      local id = field_of(fields, 'id') or ''
      release_unique(fields, ARGV[8], id)
      if id ~= '' then
        notify_dependents(queue_base(KEYS[1]), id, 'deleted', 'purged')
        redis.call('DEL', ARGV[7] .. id)
      end
      purged = purged + redis.call('ZREM', KEYS[1], member)
    end
  end
end
if purged > 0 then
  redis.call('HINCRBY', KEYS[2], 'purged', purged)
end
local next_cursor = page[1]
if next_cursor == '0' then
  next_cursor = ''
end
return { purged, next_cursor }
