-- How long the oldest job not yet delivered to a consumer group has waited in each of a
-- queue's streams (priority aging, docs/architecture.md): the first entry after the
-- group's last-delivered id, whose id says when it entered the stream.
--
-- KEYS[1..3] the queue's high, normal and low streams  ARGV[1] the consumer group
--
-- Returns {age high, age normal, age low} in ms on Redis' clock; -1 for a stream with
-- nothing waiting (or no group yet).
local now = clock_ms()
local out = {}
for i = 1, 3 do
  local age = -1
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[i])
  if ok then
    local last = nil
    for _, g in ipairs(groups) do
      local name, delivered = nil, nil
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
      end
      if name == ARGV[1] then last = delivered end
    end
    if last then
      local first = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
      if first[1] then
        local ms = tonumber(string.match(first[1][1], '^(%d+)'))
        if ms then age = math.max(0, now - ms) end
      end
    end
  end
  out[i] = age
end
return out
