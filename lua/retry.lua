-- Re-queues one pending entry as a new entry of the same stream with `attempt` raised by
-- one, and acknowledges and deletes the old entry, fenced: nothing happens unless
-- `consumer` still owns the entry.
--
-- KEYS[1] ready stream
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id
--
-- Returns the new entry id, or 0 when the entry is owned by another consumer, no longer
-- pending, or its data was deleted.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return 0
end
local fields = entry[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'attempt' then
    fields[i + 1] = tostring((tonumber(fields[i + 1]) or 0) + 1)
  end
end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return id
