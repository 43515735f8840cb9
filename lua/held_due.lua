-- The held jobs and batches of a queue written `grace` ms ago or more (Redis' clock) whose
-- flow's client has not marked them finished (hold.lua, batch.lua): what a janitor
-- finishes or undoes (src/flow/settle.rs, `repair_flows`).
--
-- KEYS[1] the queue's `held` set  ARGV[1] grace (ms)  ARGV[2] how many at most
-- Returns the members (`j <id>`, `b <id>`), oldest first.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', clock_ms() - tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
