-- Counts one queue's jobs by where they wait, for metrics and the admin views.
--
-- KEYS[1..3] high, normal and low streams  KEYS[4] scheduled sorted set  KEYS[5] DLQ stream
-- ARGV[1] consumer group
--
-- Returns {ready_high, pending_high, ready_normal, pending_normal, ready_low, pending_low,
--          scheduled, dead, oldest_waiting_ms}.
-- Ready is the group's lag; Redis 7.0 reports the lag as nil after some restarts (an AOF
-- reload), and then ready is the stream's length minus its pending entries, which is exact
-- because acknowledged entries are deleted. oldest_waiting_ms is the age of the oldest job
-- that could run now and has not started: the first undelivered entry of each stream, or a
-- scheduled job already due; 0 when none waits.
local now = clock_ms()
local out = {}
local oldest = nil
for i = 1, 3 do
  local ready, pending = 0, 0
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local len = redis.call('XLEN', KEYS[i])
    local last = '0-0'
    local found, lag = false, false
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[i])) do
      local info = {}
      for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
      if info['name'] == ARGV[1] then
        found = true
        pending = tonumber(info['pending']) or 0
        last = info['last-delivered-id'] or '0-0'
        lag = info['lag']
      end
    end
    if not found then
      ready = len
    elseif type(lag) == 'number' then
      ready = lag
    else
      ready = math.max(0, len - pending)
    end
    if ready > 0 then
      local first = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
      if first[1] then
        local ms = tonumber(string.match(first[1][1], '^(%d+)'))
        if ms and (oldest == nil or ms < oldest) then oldest = ms end
      end
    end
  end
  out[#out + 1] = ready
  out[#out + 1] = pending
end
out[#out + 1] = redis.call('ZCARD', KEYS[4])
local due = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if due[2] then
  local at = tonumber(due[2])
  if at <= now and (oldest == nil or at < oldest) then oldest = at end
end
out[#out + 1] = redis.call('XLEN', KEYS[5])
if oldest == nil then
  out[#out + 1] = 0
else
  out[#out + 1] = math.max(0, now - oldest)
end
return out
