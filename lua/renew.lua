-- Renews the leases of entries this consumer is working on, fenced: an entry is renewed
-- only while `consumer` still owns it. Renewal resets the entry's idle time without
-- counting a delivery (XCLAIM ... JUSTID).
--
-- KEYS[1] ready stream
-- ARGV[1] group  ARGV[2] consumer  ARGV[3..] entry ids
--
-- Returns the ids whose lease was lost to another consumer. An id no longer pending at all
-- was acknowledged meanwhile (the job finished) and is simply skipped.
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 1 then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    else
      lost[#lost + 1] = id
    end
  end
end
return lost
