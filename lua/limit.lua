-- Rate limits and concurrency limits of one queue's jobs, for a fetched batch.
--
-- A rate limit is a token bucket kept as its theoretical arrival time (GCRA): a job
-- conforms at `now` when `max(tat, now) - tolerance <= now`, and each job moves `tat` on by
-- the limit's interval; `tolerance` is `interval * (burst - 1)`, so `burst` jobs conform at
-- once after an idle time. A job that does not conform now is given the time it will, and
-- that time is reserved (tat moves on), so jobs told to wait come back one interval apart.
--
-- A concurrency limit is a sorted set of the jobs running under it (member: job locator
-- and consumer), scored by when the entry's lease runs out on Redis' clock: members past
-- it (their worker died) are dropped before counting, so no slot leaks. Workers renew the
-- scores with their leases and remove a member when its job ends.
--
-- KEYS: the buckets, then the running sets.
-- ARGV[1] mode.
-- 'take':  ARGV[2] buckets (nb)  ARGV[3] sets (ns)  ARGV[4] lease (ms)
--          ARGV[5] longest wait (ms) a job may spend holding its worker's slot
--          then per bucket its interval and tolerance (ms), per set its capacity;
--          then classes, each: mb, mb bucket indexes, ms, ms set indexes (1-based, among
--          the sets), n, and when ms > 0 the n jobs' members.
--          A job of a class needs a free place in each of its sets and a token of each of
--          its buckets. Per job, the ms from now until it may start: -1 when a set is full
--          (nothing taken); otherwise its tokens are taken (reserved when later), and its
--          places too when the wait is at most ARGV[5] (a longer wait takes none: the job
--          waits elsewhere, then asks for places again).
--          Returns, per class: how many of its first jobs start now, then the others' values.
-- 'pause': ARGV[2] ms from now before which no job may start; then per bucket interval and
--          tolerance. Returns 1.
-- 'renew': ARGV[2] lease (ms); then per set: count, members. Members still there get a
--          fresh lease. Returns 1.
-- 'release': per set: count, members, removed. Returns 1.
local now = clock_ms()
local mode = ARGV[1]

if mode == 'renew' or mode == 'release' then
  local i = 2
  local lease = 0
  if mode == 'renew' then
    lease = tonumber(ARGV[2])
    i = 3
  end
  for s = 1, #KEYS do
    local n = tonumber(ARGV[i])
    for j = i + 1, i + n do
      if mode == 'renew' then
        redis.call('ZADD', KEYS[s], 'XX', now + lease, ARGV[j])
      else
        redis.call('ZREM', KEYS[s], ARGV[j])
      end
    end
    i = i + n + 1
  end
  return 1
end

local nb, ns, lease, sleep_max, at_arg
if mode == 'pause' then
  nb, ns, at_arg = #KEYS, 0, 3
else
  nb, ns = tonumber(ARGV[2]), tonumber(ARGV[3])
  lease, sleep_max, at_arg = tonumber(ARGV[4]), tonumber(ARGV[5]), 6
end
local interval, tolerance, tat = {}, {}, {}
for b = 1, nb do
  interval[b] = tonumber(ARGV[at_arg + 2 * (b - 1)])
  tolerance[b] = tonumber(ARGV[at_arg + 2 * (b - 1) + 1])
  tat[b] = tonumber(redis.call('GET', KEYS[b]) or '0') or 0
end

local function save()
  for b = 1, nb do
    local ttl = math.ceil(tat[b] - now + interval[b])
    if ttl > 0 then
      redis.call('SET', KEYS[b], string.format('%.3f', tat[b]), 'PX', ttl)
    end
  end
end

if mode == 'pause' then
  local want_from = now + tonumber(ARGV[2])
  for b = 1, nb do
    local t = want_from + tolerance[b]
    if t > tat[b] then
      tat[b] = t
    end
  end
  save()
  return 1
end

local capacity, running = {}, {}
local i = at_arg + 2 * nb
for s = 1, ns do
  local key = KEYS[nb + s]
  capacity[s] = tonumber(ARGV[i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  running[s] = redis.call('ZCARD', key)
  i = i + 1
end

local out = {}
while i <= #ARGV do
  local mb = tonumber(ARGV[i])
  local bidx = {}
  for j = 1, mb do
    bidx[j] = tonumber(ARGV[i + j])
  end
  i = i + mb + 1
  local ms = tonumber(ARGV[i])
  local sidx = {}
  for j = 1, ms do
    sidx[j] = tonumber(ARGV[i + j])
  end
  i = i + ms + 1
  local n = tonumber(ARGV[i])
  i = i + 1
  local head = #out + 1
  local now_n = 0
  out[head] = 0
  for job = 1, n do
    local value = 0
    for _, s in ipairs(sidx) do
      if running[s] >= capacity[s] then
        value = -1
      end
    end
    if value == 0 then
      local at = now
      for _, b in ipairs(bidx) do
        local t = math.max(tat[b], now) - tolerance[b]
        if t > at then
          at = t
        end
      end
      for _, b in ipairs(bidx) do
        tat[b] = math.max(tat[b], at) + interval[b]
      end
      value = math.ceil(at - now)
      if value <= sleep_max then
        for _, s in ipairs(sidx) do
          redis.call('ZADD', KEYS[nb + s], now + lease, ARGV[i + job - 1])
          running[s] = running[s] + 1
        end
      end
    end
    if value <= 0 and value ~= -1 and #out == head then
      now_n = now_n + 1
    else
      out[#out + 1] = value
    end
  end
  out[head] = now_n
  if ms > 0 then
    i = i + n
  end
end
save()
return out
