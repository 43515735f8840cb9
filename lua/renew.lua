-- Renews the leases of entries this consumer is working on, fenced: an entry is renewed
-- only while `consumer` still owns it. Renewal resets the entry's idle time without
-- counting a delivery (XCLAIM ... JUSTID).
--
-- KEYS[1] ready stream  KEYS[2] the queue's cancel requests (job_control.lua)
-- ARGV[1] group  ARGV[2] consumer  ARGV[3..] entry ids
--
-- Returns {lost, cancelled}: the ids whose lease was lost to another consumer, and the ids
-- an operator asked to cancel (or deleted) since: the worker stops those jobs (a request
-- published on the wake channel may have been missed). An id no longer pending at all was
-- acknowledged meanwhile (the job finished) and is simply skipped.
local lost, cancelled = {}, {}
local letter = letter_of(KEYS[1])
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], letter .. '-' .. id) == 1 then
    cancelled[#cancelled + 1] = id
  end
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 1 then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    else
      lost[#lost + 1] = id
    end
  end
end
return { lost, cancelled }
