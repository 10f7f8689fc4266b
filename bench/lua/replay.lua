-- Replays requests listed in a file, one per line: METHOD <tab> PATH [<tab> JSON BODY
-- [<tab> HEADER: VALUE]].
-- Arguments: the file, an Authorization header value (or ""), the number of wrk threads, and
-- the most responses a thread waits for before it stops (wrk's --duration bounds the time).
-- Thread n takes every line whose index modulo the thread count is n, cycling through them.
-- At the end one line "WRK_JSON {...}" carries the figures the kit reads.

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  local threads = tonumber(args[3]) or 1
  local plain = {}
  local json = { ["Content-Type"] = "application/json" }
  if args[2] and args[2] ~= "" then
    plain["Authorization"] = args[2]
    json["Authorization"] = args[2]
  end
  prepared = {}
  local index = 0
  for line in io.lines(args[1]) do
    if index % threads == id then
      local method, path, rest = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
      local body, header = rest:match("^([^\t]*)\t(.+)$")
      if body == nil then
        body = rest
      end
      local headers = body == "" and plain or json
      if header then
        local name, value = header:match("^([^:]+):%s*(.*)$")
        headers = {}
        for k, v in pairs(body == "" and plain or json) do
          headers[k] = v
        end
        headers[name] = value
      end
      prepared[#prepared + 1] = wrk.format(method, path, headers, body ~= "" and body or nil)
    end
    index = index + 1
  end
  position = 0
  answered = 0
  limit = tonumber(args[4]) or math.huge
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
