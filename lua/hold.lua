-- Writes jobs that wait for others (README, "Chains, dependencies, batches"), of one queue,
-- in one step: each gets a status hash in state `blocked` holding what its entry will be
-- (`member`, as a scheduled member: MessagePack of {priority, field, value, ...}), how many
-- jobs it waits for (`needs`), and when it may run at the earliest (`due`, ms; 0: at
-- once). Jobs that others wait for get their dependents recorded here too, before anything
-- can run. Nothing is visible to workers until resolve.lua releases a job.
--
-- Each job also records what it waits for (`waits_for`, one `<kind> <queue> <id> <policy>`
-- a line, kind `job` or `batch`) and joins the queue's `held` set (scored by now) until
-- the client that writes its flow has finished: a janitor finishes, or undoes, the flows
-- of a client that stopped half-way (src/flow/settle.rs, `repair_flows`).
--
-- KEYS[1] any key of the queue (its totals)  KEYS[2] the queue's `held` set
-- ARGV[1] the queue  ARGV[2] how many jobs; then per job: id, needs, due mode ('' none,
--   'in' ms from now, 'at' ms since the epoch), due value, priority, type, max attempts,
--   field count f, f field/value pairs of its entry, dependent count d, d dependents
--   (`<queue> <id> <policy>`), parent count p, p parents (`<kind> <queue> <id> <policy>`)
-- Returns Redis' now in ms.
local base = queue_base(KEYS[1])
local now = clock_ms()
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local id, needs, mode, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]) or 0
  local priority, job_type, max_attempts = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local f = tonumber(ARGV[i + 7])
  local member = { priority }
  for j = i + 8, i + 7 + 2 * f do
    member[#member + 1] = ARGV[j]
  end
  i = i + 8 + 2 * f
  local due = 0
  if mode == 'in' then
    due = now + value
  elseif mode == 'at' then
    due = value
  end
  local key = base .. 'job:' .. id
  -- First: should it fail (a key of the wrong type), nothing of this job is written.
  redis.call('ZADD', KEYS[2], now, 'j ' .. id)
  redis.call('HSET', key, 'state', 'blocked', 'type', job_type, 'queue', ARGV[1],
    'attempts', '0', 'max_attempts', max_attempts, 'enqueued_at', tostring(now),
    'updated_at', tostring(now), 'needs', needs, 'due', tostring(due),
    'member', cmsgpack.pack(member))
  local d = tonumber(ARGV[i])
  if d > 0 then
    -- A new dependents set: counted in `has_deps` (the live sets of the queue) until its
    -- job's end is told (outbox_done.lua), so settling scripts look for dependents only
    -- while some wait.
    redis.call('SADD', base .. 'dependents:' .. id, unpack(ARGV, i + 1, i + d))
    redis.call('INCR', base .. 'has_deps')
  end
  i = i + 1 + d
  local p = tonumber(ARGV[i])
  if p > 0 then
    redis.call('HSET', key, 'waits_for', table.concat({ unpack(ARGV, i + 1, i + p) }, '\n'))
  end
  i = i + 1 + p
end
return now
