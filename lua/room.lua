-- Tells producers waiting for room in a bounded queue that a worker took jobs from it:
-- when a refused enqueue left its mark (`mark_full` in prelude.lua), clears it and
-- publishes on the queue's room channel. Nothing is published while no enqueue was
-- refused, so a bounded queue that never fills costs one DEL per fetch.
--
-- KEYS[1] the queue's full mark (`<prefix>:{q}:full`)  ARGV[1] its room channel
--
-- Returns 1 when it published, else 0.
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('PUBLISH', ARGV[1], 'room')
  return 1
end
return 0
