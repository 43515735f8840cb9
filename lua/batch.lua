-- Creates a batch (README, "Chains, dependencies, batches") in one step: its hash, the
-- callbacks that wait for it (a dependents set, counted in `has_deps`), and its place in
-- the queue's `held` set until the client has released its jobs and sealed it (a janitor
-- does both for a client that stopped half-way: src/flow/settle.rs, `repair_flows`). Creating a
-- batch that exists changes nothing.
--
-- KEYS[1] the batch's hash  KEYS[2] its dependents set  KEYS[3] the queue's `has_deps`
-- KEYS[4] the queue's `held` set
-- ARGV[1] the batch id  ARGV[2] how many jobs  ARGV[3..] the callbacks (`<queue> <id>
-- <policy>`)
-- Returns 1 when created, 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = clock_ms()
-- First: should it fail (a key of the wrong type), nothing of the batch is written.
redis.call('ZADD', KEYS[4], now, 'b ' .. ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'open', 'total', ARGV[2], 'succeeded', '0', 'failed', '0',
  'created_at', tostring(now))
if #ARGV > 2 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 3))
  redis.call('INCR', KEYS[3])
end
return 1
