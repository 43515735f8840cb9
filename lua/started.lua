-- Records attempts as running, for jobs of one queue, in one call: each job's status hash
-- gets state `running`, the attempt number and the attempt's start time.
--
-- KEYS[1..n] the jobs' status hashes
-- ARGV[2i-1] attempt of KEYS[i]  ARGV[2i] start time of KEYS[i] (ms)
--
-- Returns the number of jobs recorded.
for i = 1, #KEYS do
  local at = ARGV[2 * i]
  redis.call('HSET', KEYS[i], 'state', 'running', 'attempts', ARGV[2 * i - 1],
    'started_at', at, 'updated_at', at)
end
return #KEYS
