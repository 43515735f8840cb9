-- Reads where one job is, in one step, from whatever holds it (docs/architecture.md,
-- "Data model"): its status hash when it has one; else, for an id that names an entry
-- (`emails:n-1733300000000-0`), the entry itself while it waits or runs, or the queue's done
-- bucket once it succeeded.
--
-- KEYS[1] the job's status hash  KEYS[2] the ready stream its id names  KEYS[3] the done
-- bucket of its id (KEYS[2] and KEYS[3]: the status hash again for an id that names no entry)
-- KEYS[4] the queue's cancel requests
-- ARGV[1] group  ARGV[2] the entry id its id names ('' for none)  ARGV[3] the job id
--
-- Returns one of:
--   {'record', {field, value, ...}}                          the status hash
--   {'entry', {field, value, ...}, owner, idle ms, deliveries, cancel request or ''}
--                                                            waiting ('' owner) or running
--   {'done', value}                                          the done bucket's record
--   {'none'}                                                 unknown, or expired
local record = redis.call('HGETALL', KEYS[1])
if #record > 0 then
  return { 'record', record }
end
if ARGV[2] == '' then
  return { 'none' }
end
-- A key of another type under the stream's name reads as no entry, not as an error.
local read, entry = pcall(redis.call, 'XRANGE', KEYS[2], ARGV[2], ARGV[2])
if read and #entry == 1 and not field_of(entry[1][2], 'id') then
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
  if ok and #pending == 1 then
    local request = redis.call('HGET', KEYS[4], letter_of(KEYS[2]) .. '-' .. ARGV[2]) or ''
    return { 'entry', entry[1][2], pending[1][2], pending[1][3], pending[1][4], request }
  end
  return { 'entry', entry[1][2], '', 0, 0 }
end
local done = redis.call('HGET', KEYS[3], ARGV[3])
if done then
  return { 'done', done }
end
return { 'none' }
