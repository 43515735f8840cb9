-- Clears one resolved outbox entry (worker/deps.rs): the job's dependents were all told.
--
-- KEYS[1] the queue's outbox  KEYS[2] the job's dependents set  KEYS[3] the queue's count
-- of live dependents sets (`has_deps`), deleted at zero
-- ARGV[1] the job id  ARGV[2] the outbox value that was resolved
--
-- Returns 1 when cleared, 0 when the entry changed meanwhile (left for the next round).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('DEL', KEYS[2]) == 1 then
  if redis.call('DECR', KEYS[3]) <= 0 then
    redis.call('DEL', KEYS[3])
  end
end
return 1
