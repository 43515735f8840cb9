-- Removes consumers of a stream's group that own no pending entry, have been idle for
-- long, and belong to no live worker, so consumer names of past worker runs do not pile
-- up. A consumer that still owns entries is never removed (XGROUP DELCONSUMER would drop
-- them); the check and the removal are one atomic step.
--
-- KEYS[1] ready stream
-- ARGV[1] group  ARGV[2] idle threshold (ms)  ARGV[3..] consumers that are alive
--
-- Returns the names removed.
local alive = {}
for i = 3, #ARGV do
  alive[ARGV[i]] = true
end
local removed = {}
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then
  return removed
end
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do
    info[c[i]] = c[i + 1]
  end
  if not alive[info['name']] and tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
