-- One page of the janitor's scan of a ready stream: takes over entries whose lease expired
-- and whose owner is no longer alive, and dead-letters those delivered too often (poison).
--
-- KEYS[1] ready stream  KEYS[2] dead-letter stream  KEYS[3] the queue's cancel requests
-- KEYS[4] its lifetime totals
-- ARGV[1] group  ARGV[2] this janitor's consumer  ARGV[3] lease (ms): entries idle for
--         less are left alone (0 for the entries a stopping worker handed back)
-- ARGV[4] max deliveries  ARGV[5] page size  ARGV[6] scan start ('-' or '(' .. last id)
-- ARGV[7] the queue's status key prefix (`<prefix>:{<queue>}:job:`): a poison job's
--         status hash is marked dead (written whole when it had none)
-- ARGV[8] only entries of this consumer ('' for any): a stopped worker that handed its
--         entries back, whose entries are taken without waiting for the lease
-- ARGV[9] status retention (ms; 0: no status is written)
-- ARGV[10..] other consumers that are alive (heartbeat younger than the lease, on Redis'
--            clock, read by the caller from the workers set, which lives in another slot)
--
-- Entries of live owners are left alone even when their idle time passed the lease: they
-- renew what they hold, and after a Redis pause every lease looks expired at once. The
-- janitor's own entries idle past the lease are only listed (`mine`): the caller takes
-- back those it does not hold (a delivery whose reply was lost when Redis went down sits
-- pending under a live consumer that never saw it) and leaves the ones it is running.
--
-- An entry an operator asked to cancel (job_control.lua) is not taken over: its job is
-- marked cancelled, the entry acknowledged and deleted.
--
-- Returns {next start or '' when the scan is done, claimed, poisoned, deleted, mine,
-- cancelled}:
-- claimed is a list of {id, {field, value, ...}} now owned by ARGV[2] (delivery counted);
-- poisoned is a list of {id, job id, job type} ('' when the entry had none); deleted and
-- mine are lists of ids (deleted = pending entries whose data is gone; they are
-- acknowledged); cancelled is a list of {id, job id, job type}.
local now_ms = clock_ms()
local lease = tonumber(ARGV[3])
local page
if ARGV[8] == '' then
  page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', lease, ARGV[6], '+', tonumber(ARGV[5]))
else
  page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', lease, ARGV[6], '+', tonumber(ARGV[5]), ARGV[8])
end
local claimed, poisoned, deleted, mine, cancelled = {}, {}, {}, {}, {}
local letter = letter_of(KEYS[1])
local alive = {}
local retention = tonumber(ARGV[9]) or 0
for i = 10, #ARGV do
  alive[ARGV[i]] = true
end
for _, p in ipairs(page) do
  local id, owner, deliveries = p[1], p[2], tonumber(p[4])
  if owner == ARGV[2] then
    mine[#mine + 1] = id
  elseif not alive[owner] then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    if #entry == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      deleted[#deleted + 1] = id
    elseif redis.call('HEXISTS', KEYS[3], letter .. '-' .. id) == 1 then
      local request = redis.call('HGET', KEYS[3], letter .. '-' .. id)
      redis.call('HDEL', KEYS[3], letter .. '-' .. id)
      local who, why = string.match(request, '^([^\n]*)\n(.*)$')
      local original = entry[1][2]
      local job_id = job_id_of(KEYS[1], id, original)
      if string.len(job_id) <= 128 then
        write_cancelled(ARGV[7] .. job_id, retention, original,
          string.match(ARGV[7], '{([^}]*)}:job:$') or '', who or '', why or '', now_ms)
      end
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
      notify_dependents(queue_base(KEYS[1]), job_id, 'cancelled', why or '')
      cancelled[#cancelled + 1] = { id, job_id, field_of(original, 'type') or '' }
    elseif deliveries >= tonumber(ARGV[4]) then
      local fields = {}
      local original = entry[1][2]
      local drop = { reason = true, error = true, failed_at = true, deliveries = true, origin = true }
      for i = 1, math.min(#original, 2000), 2 do
        if not drop[original[i]] then
          fields[#fields + 1] = original[i]
          fields[#fields + 1] = original[i + 1]
        end
      end
      local extra = { 'reason', 'poison',
        'error', 'delivered ' .. deliveries .. ' times without finishing (its worker crashed or was killed)',
        'failed_at', tostring(now_ms), 'deliveries', tostring(deliveries), 'origin', KEYS[1] .. ' ' .. id }
      for _, v in ipairs(extra) do
        fields[#fields + 1] = v
      end
      local job_id = job_id_of(KEYS[1], id, original)
      local job_type = field_of(original, 'type') or ''
      if not field_of(original, 'id') then
        fields[#fields + 1] = 'id'
        fields[#fields + 1] = job_id
      end
      local dead_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
      if retention > 0 and string.len(job_id) <= 128 then
        local status = ARGV[7] .. job_id
        if redis.call('EXISTS', status) == 0 then
          redis.call('HSET', status, 'type', job_type,
            'queue', string.match(ARGV[7], '{([^}]*)}:job:$') or '',
            'attempts', field_of(original, 'attempt') or '0',
            'max_attempts', field_of(original, 'max_attempts') or '0',
            'enqueued_at', field_of(original, 'enqueued_at') or '')
        end
        redis.call('HSET', status, 'state', 'dead', 'reason', 'poison',
          'error', 'delivered ' .. deliveries .. ' times without finishing',
          'finished_at', tostring(now_ms), 'updated_at', tostring(now_ms), 'dlq', dead_id)
        redis.call('PEXPIRE', status, retention)
      end
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      notify_dependents(queue_base(KEYS[1]), job_id, 'dead', 'poison')
      deliver_hooks(queue_base(KEYS[1]), job_id, job_type, 'dead', 'poison', now_ms)
      poisoned[#poisoned + 1] = { id, job_id, job_type }
    else
      local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], lease, id)
      if #got == 1 and got[1] ~= false then
        claimed[#claimed + 1] = got[1]
      end
    end
  end
end
local next_start = ''
if #page == tonumber(ARGV[5]) then
  next_start = '(' .. page[#page][1]
end
return { next_start, claimed, poisoned, deleted, mine, cancelled }
