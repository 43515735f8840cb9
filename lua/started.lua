-- Records attempts as running, for jobs of one queue, in one call: each job's status hash
-- gets state `running`, the attempt number, the attempt budget in effect (the handler's
-- when the enqueuer set none) and the attempt's start time.
--
-- KEYS[1..n] the jobs' status hashes
-- ARGV[3i-2] attempt of KEYS[i]  ARGV[3i-1] max attempts of KEYS[i]
-- ARGV[3i] start time of KEYS[i] (ms)
--
-- Returns the number of jobs recorded.
for i = 1, #KEYS do
  local at = ARGV[3 * i]
  redis.call('HSET', KEYS[i], 'state', 'running', 'attempts', ARGV[3 * i - 2],
    'max_attempts', ARGV[3 * i - 1], 'started_at', at, 'updated_at', at)
end
return #KEYS
