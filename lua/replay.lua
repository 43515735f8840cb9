-- Moves one dead letter back to a ready stream of its queue as a fresh job: a new entry
-- with the job's own fields, `attempt` reset to 1 and `replayed_from` naming the dead
-- letter, which is deleted in the same step.
--
-- KEYS[1] dead-letter stream
-- KEYS[2] ready stream high    KEYS[3] ready stream normal    KEYS[4] ready stream low
-- ARGV[1] dead-letter entry id
-- ARGV[2] prefix of job status keys (`<prefix>:{q}:job:`)  ARGV[3] status retention (ms, 0 = off)
--
-- Returns {new entry id, job id or ''} when replayed, 0 when the dead letter no longer
-- exists (already replayed or purged: replaying twice re-enqueues the job once).
--
-- The ready stream is the one of the priority the job died in, read from the suffix of the
-- stream named in `origin` (`:high`, `:normal`, `:low`); `normal` when there is none.
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then
  return 0
end
local original = entry[1][2]

-- Fields the dead-letter step added, or that describe an earlier replay: not the job's.
local dropped = {
  reason = true, error = true, failed_at = true, deliveries = true, origin = true,
  truncated = true, replayed_from = true,
}

local target = KEYS[3]
for i = 1, #original, 2 do
  if original[i] == 'origin' then
    local stream = string.match(original[i + 1] or '', '^(.*) [^ ]*$') or ''
    if string.sub(stream, -5) == ':high' then
      target = KEYS[2]
    elseif string.sub(stream, -4) == ':low' then
      target = KEYS[4]
    end
    break
  end
end

-- At most 1000 fields are copied (unpack has a stack limit; a hand-written dead letter
-- may have more). The first `attempt` and `id` win, as they would for a reader.
local fields = {}
local job_id, job_type, max_attempts = '', nil, nil
local has_attempt = false
local last = math.min(#original, 2000)
for i = 1, last, 2 do
  local name = original[i]
  if name == 'attempt' then
    if not has_attempt then
      has_attempt = true
      fields[#fields + 1] = 'attempt'
      fields[#fields + 1] = '1'
    end
  elseif not dropped[name] then
    if name == 'id' and job_id == '' then
      job_id = original[i + 1]
    elseif name == 'type' and not job_type then
      job_type = original[i + 1]
    elseif name == 'max_attempts' and not max_attempts then
      max_attempts = original[i + 1]
    end
    fields[#fields + 1] = name
    fields[#fields + 1] = original[i + 1]
  end
end
if not has_attempt then
  fields[#fields + 1] = 'attempt'
  fields[#fields + 1] = '1'
end
fields[#fields + 1] = 'replayed_from'
fields[#fields + 1] = ARGV[1]

local id = redis.call('XADD', target, '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
-- The job's status starts over: queued, no error, attempts counted again from 0. A status
-- that expired while the job lay dead is written whole again from the dead letter (the
-- queue is the one in the status keys' prefix, `<prefix>:{<queue>}:job:`).
local retention = tonumber(ARGV[3] or '0') or 0
if job_id ~= '' and retention > 0 then
  local status = (ARGV[2] or '') .. job_id
  local now = tostring(clock_ms())
  if redis.call('EXISTS', status) == 1 then
    redis.call('HDEL', status, 'error', 'reason', 'finished_at', 'next_at', 'started_at', 'result',
      'dlq', 'cancelled_by')
  else
    redis.call('HSET', status, 'type', job_type or '', 'max_attempts', max_attempts or '0',
      'queue', string.match(ARGV[2] or '', '{([^}]*)}:job:$') or '', 'enqueued_at', now)
  end
  redis.call('HSET', status, 'state', 'queued', 'attempts', '0', 'updated_at', now,
    'entry', letter_of(target) .. '-' .. id)
  redis.call('PEXPIRE', status, retention)
end
return { id, job_id }
