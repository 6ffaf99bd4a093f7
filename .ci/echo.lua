-- wrk script for the http_gateway load test: every answer must be 200 with the
-- bytes asked for, or 503/504 (the backend busy or slow); anything else is bad.
-- Each wrk thread counts in its own Lua state; done() adds them up.
local size = 256
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, busy, bad = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 and #body == size and not body:find("[^x]") then
    ok = ok + 1
  elseif status == 503 or status == 504 then
    busy = busy + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local o, b, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("busy")
    x = x + t:get("bad")
  end
  io.write(string.format("answers: %d ok, %d busy (503/504), %d bad\n", o, b, x))
  io.write(string.format("latency: p50 %.1f ms, p99 %.1f ms; %.0f requests/s; socket errors %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
