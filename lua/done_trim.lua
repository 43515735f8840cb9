-- Keeps one queue's success records within a memory budget (docs/architecture.md, "Data
-- model"): its done buckets, newest first, are summed with MEMORY USAGE (sampled, as
-- Redis estimates a hash), and from the first that passes the budget, it and every older
-- one are deleted whole. Buckets that expired meanwhile leave the index. Buckets written
-- before the index existed are not listed: their TTL ends them.
--
-- KEYS[1] the queue's done index (`<prefix>:{q}:done`: member and score = bucket minute)
-- ARGV[1] the budget (bytes)  ARGV[2] the buckets' key prefix (`<prefix>:{q}:done:`)
--
-- Returns {buckets deleted, their bytes, bytes kept}.
local budget = tonumber(ARGV[1])
local minutes = redis.call('ZRANGE', KEYS[1], 0, -1)
local kept, deleted, freed, over = 0, 0, 0, false
for i = #minutes, 1, -1 do
  local key = ARGV[2] .. minutes[i]
  local size = redis.call('MEMORY', 'USAGE', key)
  if not size then
    redis.call('ZREM', KEYS[1], minutes[i])
  else
    if not over and kept + size > budget then
      over = true
    end
    if over then
      redis.call('UNLINK', key)
      redis.call('ZREM', KEYS[1], minutes[i])
      deleted = deleted + 1
      freed = freed + size
    else
      kept = kept + size
    end
  end
end
return { deleted, freed, kept }
