-- Acknowledges and deletes finished entries of one ready stream and records their jobs as
-- succeeded, in one call (one round trip for a whole batch). Not fenced: a job whose
-- handler finished is done, whoever holds its lease now, and entry ids are never reused,
-- so a late acknowledgement cannot hit another job. Safe to repeat.
--
-- Two kinds of success record (docs/architecture.md, "Data model"):
-- - a job with a status hash (delayed, retried, replayed, or enqueued by an older version)
--   has it marked `succeeded`, with the handler's result;
-- - any other job gets one field in its queue's done bucket, a hash per minute of enqueue
--   time: field = job id, value = "<finished ms> <attempt> <max attempts> <type>" and
--   " <result>" when there is one.
--   A bucket's TTL is raised to the longest retention of what is written into it.
--
-- KEYS[1] ready stream    KEYS[2..] record keys: status hashes and done buckets
-- ARGV[1] group  ARGV[2] now (ms)  ARGV[3] n, entry ids  ARGV[4 .. 3+n] entry ids
-- ARGV[4+n ..] one record per job that keeps one, four values each: the index of its key
--              in KEYS, the field ('' for a status hash), the value (for a status hash the
--              handler's JSON result or ''), the retention (ms, above 0)
--
-- Returns the number of entries acknowledged.
local n = tonumber(ARGV[3])
local acked = 0
if n > 0 then
  acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 4, 3 + n))
  redis.call('XDEL', KEYS[1], unpack(ARGV, 4, 3 + n))
end
local now = ARGV[2]
local buckets, order = {}, {}
for i = 4 + n, #ARGV - 3, 4 do
  local key, field, value, keep = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if field == '' then
    if value ~= '' then
      redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'updated_at', now,
        'result', value)
    else
      redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'updated_at', now)
    end
    redis.call('PEXPIRE', key, keep)
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
  if redis.call('PTTL', key) < b.keep then
    redis.call('PEXPIRE', key, b.keep)
  end
end
return acked
