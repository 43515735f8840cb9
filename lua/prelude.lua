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

