-- wrk script for bench/imip-throughput.sh: POSTs one iTIP body to the
-- bridge, with a distinct iSchedule-Message-ID per request (so the bridge's
-- idempotency record never answers a repeat without sending mail), and
-- counts the HTTP codes and every <request-status> of the answers.
--
-- usage: wrk -s bench/imip-post.lua URL -- BODYFILE RECIPIENTFILE ORIGINATOR [ID_PREFIX]
--   RECIPIENTFILE holds the Recipient header value (one line);
--   ID_PREFIX empty or absent: no iSchedule-Message-ID header at all.
-- done() prints lines starting with "BENCH " for the calling script.

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local function slurp(path)
  local fh = assert(io.open(path, "rb"))
  local s = fh:read("*a")
  fh:close()
  return s
end

function init(args)
  body = slurp(args[1])
  recipients = slurp(args[2]):gsub("%s+$", "")
  originator = args[3]
  prefix = args[4] or ""
  counter = 0
  codes = {}
  statuses = {}
  headers = {
    ["Content-Type"] = "text/calendar; component=VEVENT; method=REQUEST",
    ["iSchedule-Version"] = "1.0",
    ["Originator"] = originator,
    ["Recipient"] = recipients,
    ["Cache-Control"] = "no-cache, no-transform",
  }
end

function request()
  counter = counter + 1
  if prefix ~= "" then
    headers["iSchedule-Message-ID"] = prefix .. "-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, resp)
  codes[status] = (codes[status] or 0) + 1
  if resp then
    for s in resp:gmatch("<request%-status>([^<]*)</request%-status>") do
      statuses[s] = (statuses[s] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local all_codes, all_statuses, sent = {}, {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes") or {}) do all_codes[k] = (all_codes[k] or 0) + v end
    for k, v in pairs(t:get("statuses") or {}) do all_statuses[k] = (all_statuses[k] or 0) + v end
    sent = sent + (t:get("counter") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH summary requests=%d sent=%d duration_us=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, sent, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
  for k, v in pairs(all_codes) do io.write(string.format("BENCH code %s %d\n", k, v)) end
  for k, v in pairs(all_statuses) do io.write(string.format("BENCH status %d %s\n", v, k)) end
end
