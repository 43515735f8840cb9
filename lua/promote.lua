-- Moves due jobs from the scheduled set into their ready streams. Atomic, so with many
-- promoters each job is promoted exactly once.
--
-- KEYS[1] scheduled sorted set  KEYS[2] high stream  KEYS[3] normal stream
-- KEYS[4] low stream            KEYS[5] dead-letter stream
-- ARGV[1] most jobs to move in this call
-- ARGV[2] the queue's status key prefix (`<prefix>:{<queue>}:job:`): an existing status
--         hash of a promoted job is set back to `queued`
--
-- A member that does not unpack (written by hand) goes to the dead-letter stream with
-- reason bad_entry rather than blocking the set.
-- Returns {moved, next due time in ms or -1 when the set is empty, Redis' now in ms}.
local now_ms = clock_ms()
local streams = { high = KEYS[2], normal = KEYS[3], low = KEYS[4] }
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local ok, parts = pcall(cmsgpack.unpack, member)
  if ok and type(parts) == 'table' and streams[parts[1]] and #parts >= 3 and #parts % 2 == 1 then
    local entry_id = redis.call('XADD', streams[parts[1]], '*', unpack(parts, 2))
    for i = 2, #parts - 1, 2 do
      if parts[i] == 'id' then
        local status = ARGV[2] .. parts[i + 1]
        if redis.call('EXISTS', status) == 1 then
          -- `entry` names the job's entry (`<priority letter>-<entry id>`), so it can be
          -- cancelled or deleted while it waits or runs (job_control.lua).
          redis.call('HSET', status, 'state', 'queued', 'updated_at', tostring(now_ms),
            'entry', string.sub(parts[1], 1, 1) .. '-' .. entry_id)
          redis.call('HDEL', status, 'next_at', 'waiting_for')
        end
      end
    end
  else
    redis.call('XADD', KEYS[5], '*', 'member', member, 'reason', 'bad_entry',
      'error', 'scheduled member does not unpack', 'failed_at', tostring(now_ms),
      'origin', KEYS[1])
  end
  redis.call('ZREM', KEYS[1], member)
end
local next_due = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 2 then
  next_due = tonumber(first[2])
end
return { #due, next_due, now_ms }
