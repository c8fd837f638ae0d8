-- wrk script: request the paths listed in the file $BENCH_PATHS, in order, wrapping around;
-- with $BENCH_MAX > 0, stop after that many responses (printing BENCH_STOP). Prints one JSON line (BENCH_JSON ...)
-- with the totals and latency percentiles, which bench/load.py reads.
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  paths[#paths + 1] = line
end
local count = 0
local max = tonumber(os.getenv("BENCH_MAX") or "0")

function request()
  count = count + 1
  return wrk.format("GET", paths[((count - 1) % #paths) + 1])
end

if max > 0 then
  -- wrk's main thread sleeps for the whole --duration whatever its threads do, so a run
  -- bounded by a response count reports and ends the process itself.
  local responses, bad, started = 0, 0, os.time()
  function response(status, headers, body)
    responses = responses + 1
    if status >= 400 then
      bad = bad + 1
    end
    if responses >= max then
      io.write(string.format('BENCH_STOP {"responses": %d, "bad": %d, "seconds": %d}\n',
        responses, bad, os.time() - started))
      io.stdout:flush()
      os.exit(0)
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "paths": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, #paths,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
