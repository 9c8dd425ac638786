-- Shared by every scenario: per-thread counts of answers by status, a data file reader, and a
-- JSON summary from done() (the orchestrator reads the line that starts with BENCH_JSON).

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

statuses = {}
replays = 0

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  assert(#lines > 0, "no lines in " .. path)
  return lines
end

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    local parts = {}
    for key, item in pairs(value) do
      parts[#parts + 1] = string.format("%q:%s", tostring(key), encode(item))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "number" then
    return string.format("%.17g", value)
  elseif kind == "string" then
    return string.format("%q", value)
  end
  return "null"
end

function done(summary, latency, requests)
  local totals, sent_replays = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      local key = tostring(status)
      totals[key] = (totals[key] or 0) + count
    end
    sent_replays = sent_replays + (thread:get("replays") or 0)
  end
  local percentiles = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.9}) do
    percentiles[tostring(p)] = latency:percentile(p) / 1000.0
  end
  io.write("BENCH_JSON " .. encode({
    duration_s = summary.duration / 1e6,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = summary.errors,
    statuses = totals,
    replays = sent_replays,
    latency_ms = {
      min = latency.min / 1000.0,
      max = latency.max / 1000.0,
      mean = latency.mean / 1000.0,
      stdev = latency.stdev / 1000.0,
      percentiles = percentiles,
    },
  }) .. "\n")
end
