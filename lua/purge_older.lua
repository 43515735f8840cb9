-- Deletes the dead letters older than an age, measured on Redis' clock: every entry whose
-- id (the time it was dead-lettered, in ms) is below now minus the age.
--
-- KEYS[1] dead-letter stream
-- ARGV[1] age in milliseconds (a non-negative integer)
--
-- Returns how many entries were deleted.
local age = tonumber(ARGV[1])
if age == nil or age < 0 then
  return redis.error_reply('ERR age must be a non-negative number of milliseconds')
end
local now_ms = clock_ms()
local cutoff = now_ms - age
if cutoff <= 0 then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('%d-0', cutoff))
