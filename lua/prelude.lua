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


-- The job id of a ready entry: its `id` field, or, for an entry without one (a job
-- enqueued to run now), its queue, its stream's priority letter and its entry id
-- (`emails:n-1733300000000-0`; src/names.rs, `locator`).
local function job_id_of(stream, entry_id, fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'id' then
      return fields[i + 1]
    end
  end
  local letter = 'n'
  if string.sub(stream, -5) == ':high' then
    letter = 'h'
  elseif string.sub(stream, -4) == ':low' then
    letter = 'l'
  end
  return (string.match(stream, '{([^}]*)}') or '') .. ':' .. letter .. '-' .. entry_id
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
