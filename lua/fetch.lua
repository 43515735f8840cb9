-- Reads new entries of one queue for a consumer, most urgent first, in one step: each
-- stream is asked for its share of the free slots (split by priority weight by the
-- caller); what a stream could not fill goes to the streams that still have entries, in
-- priority order. So a worker with one free slot takes its next job in one round trip,
-- whichever stream holds it, and never takes more entries than it has slots.
--
-- First, it acknowledges the entries the worker finished since its last fetch and
-- records their success, as ack.lua does: the job that freed a slot and the fetch of the
-- next share one command and one round trip.
--
-- KEYS[1..3] the queue's high, normal and low streams  KEYS[4..] record keys (ack.lua)
-- ARGV[1] group  ARGV[2] consumer  ARGV[3..5] the share of high, normal and low
-- ARGV[6] now (ms)  ARGV[7] k, then k sections of finished entries: the index of their
--         stream (1..3), then n, n entry ids, m, m records, as `ack_finished` reads them
--
-- Returns {high entries, normal entries, low entries, errors}: entries as XREADGROUP
-- gives them ({id, {field, value, ...}}), errors one per stream ('' when its read
-- worked), so one stream's failure (a lost group) does not hide what the others gave.
local at = 8
for _ = 1, tonumber(ARGV[7]) do
  local _, after = ack_finished(KEYS[tonumber(ARGV[at])], ARGV[1], ARGV[6], at + 1)
  at = after
end

local out, errors, open = {}, {}, {}
for i = 1, 3 do
  out[i], errors[i], open[i] = {}, '', true
end

local function read(i, n)
  local ok, reply = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n,
    'STREAMS', KEYS[i], '>')
  if not ok then
    errors[i] = (type(reply) == 'table' and reply.err) or tostring(reply)
    open[i] = false
    return 0
  end
  if not reply then
    open[i] = false
    return 0
  end
  local entries = reply[1][2]
  for _, e in ipairs(entries) do
    out[i][#out[i] + 1] = e
  end
  if #entries < n then
    open[i] = false
  end
  return #entries
end

local left = 0
for i = 1, 3 do
  local share = tonumber(ARGV[2 + i])
  if share > 0 then
    left = left + share - read(i, share)
  end
end
for i = 1, 3 do
  if left <= 0 then
    break
  end
  if open[i] then
    left = left - read(i, left)
  end
end
return { out[1], out[2], out[3], errors }
