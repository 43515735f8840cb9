-- Takes tokens from rate limits, or pauses them: one token bucket per limit, kept as its
-- theoretical arrival time (GCRA): a job conforms at `now` when
-- `max(tat, now) - tolerance <= now`, and each job moves `tat` on by the limit's interval.
-- `tolerance` is `interval * (burst - 1)`, so `burst` jobs conform at once after an idle
-- time. A job that does not conform now is given the time it will, and that time is
-- reserved (tat moves on), so jobs told to wait come back one interval apart.
--
-- KEYS[1..k] the buckets (strings holding tat in ms; gone when idle)
-- ARGV[1] 'take' or 'pause'
-- take:  ARGV[2 .. 2k+1] per bucket, interval (ms) and tolerance (ms);
--        then classes, each: m, m bucket indexes (1-based), n (jobs of the class)
--        A job of a class needs a token of each of its buckets.
--        Returns, per class: how many of its jobs may start now (its first ones: waits
--        never decrease along a class), then the ms from now until each of the others
--        may.
-- pause: ARGV[2] ms from now before which no job may start; ARGV[3 .. 2k+2] per bucket,
--        interval and tolerance. Returns 1.
local now = clock_ms()
local nb = #KEYS
local interval, tolerance, tat = {}, {}, {}
local first = 2
if ARGV[1] == 'pause' then
  first = 3
end
for b = 1, nb do
  interval[b] = tonumber(ARGV[first + 2 * (b - 1)])
  tolerance[b] = tonumber(ARGV[first + 2 * (b - 1) + 1])
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

if ARGV[1] == 'pause' then
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

local out = {}
local i = first + 2 * nb
while i <= #ARGV do
  local m = tonumber(ARGV[i])
  local idx = {}
  for j = 1, m do
    idx[j] = tonumber(ARGV[i + j])
  end
  local n = tonumber(ARGV[i + m + 1])
  i = i + m + 2
  local head = #out + 1
  local now_n = 0
  out[head] = 0
  for _ = 1, n do
    local at = now
    for _, b in ipairs(idx) do
      local t = math.max(tat[b], now) - tolerance[b]
      if t > at then
        at = t
      end
    end
    for _, b in ipairs(idx) do
      tat[b] = math.max(tat[b], at) + interval[b]
    end
    local wait = math.ceil(at - now)
    if wait <= 0 and #out == head then
      now_n = now_n + 1
    else
      out[#out + 1] = wait
    end
  end
  out[head] = now_n
end
save()
return out
