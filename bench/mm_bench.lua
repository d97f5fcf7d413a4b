-- bench/mm_bench.lua: the `mm` side of the benchmarks (run by bench/run
-- from the repository root).
--
--   seq   BASE_URL N [WARMUP]   N sequential c:regen_token(id) on one client
--   batch BASE_URL N CONC       one c:regen_tokens(ids, {concurrency=CONC})
--   mem   BASE_URL N            VmRSS before and after N calls on one client
--   lua   N [WARMUP]            the Lua layer alone: the client's C handle is
--                               replaced by a stub returning a canned answer
--   jobs  BASE_URL N [WARMUP]   N sequential c:get_jobs{per_page = 200}
--   shape FILE N                N times what get_jobs does with a 200 answer
--                               whose body is FILE (decoding, checks, plain)
--   jobs_body                   prints the canned answer of 200 jobs
--   download BASE_URL ID FILE   one c:download_job(ID, FILE); seconds, bytes
--                               and VmRSS/VmHWM before and after
--   ua                          the User-Agent value mm sends
--
-- Each prints one line of key=value pairs. The bearer token is
-- BENCH_TOKEN (a fake fixed string); tokens are never printed.
-- Ids are "bench" .. 21 digits of (i % 1000), as in bench/floor.c.
local build = "build/lua" .. _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local mm = require "mm"
local core = require "mm.core"

local mode = arg[1]
local now = core.monotime

local function id(i)
  return ("bench%021d"):format(i % 1000)
end

local IDS = {}
for i = 0, 999 do IDS[i + 1] = id(i) end

local function client(base)
  local token = os.getenv("BENCH_TOKEN")
  assert(token and token ~= "", "BENCH_TOKEN must be set")
  return mm.new{ url = base, token = token, retries = 0 }
end

local function count(n)
  local v = math.tointeger(tonumber(n))
  assert(v and v >= 0 and v <= 100000000, "bad count: " .. tostring(n))
  return v
end

-- N calls after WARMUP untimed ones; a call is ok when it returns a string.
local function sequential(c, n, warmup)
  for i = 1, warmup do c:regen_token(IDS[(i - 1) % 1000 + 1]) end
  local ok, fail = 0, 0
  local t0 = now()
  for i = 1, n do
    local token = c:regen_token(IDS[(i - 1) % 1000 + 1])
    if type(token) == "string" then ok = ok + 1 else fail = fail + 1 end
  end
  return ok, fail, now() - t0
end

-- N calls of f after WARMUP untimed ones; a call is ok when ok(value).
local function calls(f, n, warmup, ok_value)
  for _ = 1, warmup do f() end
  local ok, fail = 0, 0
  local t0 = now()
  for _ = 1, n do
    if ok_value(f()) then ok = ok + 1 else fail = fail + 1 end
  end
  return ok, fail, now() - t0
end

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end

if mode == "seq" then
  local c = client(arg[2])
  local ok, fail, secs = sequential(c, count(arg[3]), count(arg[4] or 0))
  print(("ok=%d fail=%d seconds=%.6f"):format(ok, fail, secs))
  c:close()
elseif mode == "batch" then
  local n, conc = count(arg[3]), count(arg[4])
  local ids = {}
  for i = 1, n do ids[i] = IDS[(i - 1) % 1000 + 1] end
  local c = client(arg[2])
  local t0 = now()
  local results, failed = c:regen_tokens(ids, { concurrency = conc })
  local secs = now() - t0
  local ok = 0
  for i = 1, n do
    if type(results[i]) == "string" then ok = ok + 1 end
  end
  print(("ok=%d fail=%d seconds=%.6f failed_reported=%d"):format(ok, n - ok, secs, failed))
  c:close()
elseif mode == "mem" then
  local n = count(arg[3])
  local c = client(arg[2])
  -- Warm up: the connection, the slot's buffers, the Lua heap's working set.
  sequential(c, 1000, 0)
  local before = rss_kib()
  local heap_before = collectgarbage("count")
  local ok, fail, secs = sequential(c, n, 0)
  local after, hwm = rss_kib()
  local heap_after = collectgarbage("count")
  print(("ok=%d fail=%d seconds=%.6f rss_before_kib=%d rss_after_kib=%d hwm_kib=%d "
    .. "lua_heap_before_kib=%.0f lua_heap_after_kib=%.0f"):format(
    ok, fail, secs, before, after, hwm, heap_before, heap_after))
  c:close()
elseif mode == "lua" then
  -- A stand-in for the C handle, answering what nginx answers. It follows
  -- the private interface of mm.core's client:request(method, url, body,
  -- headers, opts) -> response table {status, body, content_type, head}
  -- (bench/README.md); one table, made once, so that only the Lua layer
  -- is measured. If that interface changes, this mode fails and bench/run
  -- reports it as n/a.
  local body = '{"token":"' .. ("x"):rep(26) .. '"}'
  local resp = {
    status = 200, body = body, content_type = "application/json",
    head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
      .. "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\nConnection: keep-alive\r\n"
      .. "X-Request-Id: benchrequestid000000000000\r\nX-Version-Id: 9.11.0.bench\r\n\r\n",
  }
  local stub = {}
  function stub.request(_, method, url)
    assert(method and url, "mm.core interface changed")
    return resp
  end
  function stub.close() end
  local c = mm.new{ url = "http://127.0.0.1:9", token = "benchfaketoken", retries = 0 }
  c._core:close()
  c._core = stub -- the bench only: a private field, to take the C core out
  local ok, fail, secs = sequential(c, count(arg[2]), count(arg[3] or 0))
  print(("ok=%d fail=%d seconds=%.6f"):format(ok, fail, secs))
elseif mode == "jobs" then
  local c = client(arg[2])
  local ok, fail, secs = calls(function() return c:get_jobs{ per_page = 200 } end, count(arg[3]), count(arg[4] or 0),
    function(jobs) return type(jobs) == "table" and #jobs == 200 end)
  print(("ok=%d fail=%d seconds=%.6f"):format(ok, fail, secs))
  c:close()
elseif mode == "shape" then
  -- The reader get_jobs applies to a 2xx answer, on a response table like
  -- mm.core's: the JSON part of get_jobs's cost, which the floor does not pay.
  local f = assert(io.open(arg[2], "rb"))
  local resp = { status = 200, body = f:read("a"), content_type = "application/json", head = "" }
  f:close()
  local read = require("mm.endpoints").by_name.get_jobs.read
  local ok, fail, secs = calls(function() return read(resp) end, count(arg[3]), 0,
    function(jobs) return type(jobs) == "table" and #jobs == 200 end)
  print(("ok=%d fail=%d seconds=%.6f"):format(ok, fail, secs))
elseif mode == "jobs_body" then
  -- 200 jobs as the server lists them (newest first), each like a
  -- finished compliance export; deterministic, about 330 bytes each.
  local out = {}
  for i = 200, 1, -1 do
    local t = 1700000000000 + i * 60000
    out[#out + 1] = ('{"id":"%s","type":"message_export","priority":0,"create_at":%d,"start_at":%d,'
      .. '"last_activity_at":%d,"status":"success","progress":100,"data":{"batch_size":"10000",'
      .. '"batch_start_timestamp":"%d","export_type":"actiance","is_downloadable":"true",'
      .. '"messages_exported":"%d","warning_count":"0"}}'):format(("job%023d"):format(i), t, t + 1500, t + 42000,
      t - 86400000, i * 37)
  end
  io.write("[", table.concat(out, ","), "]")
elseif mode == "download" then
  local c = client(arg[2])
  -- warm: the connection and the slot, so that only the download is measured
  assert(c:regen_token(IDS[1]), "the target did not answer")
  local rss0, hwm0 = rss_kib()
  local t0 = now()
  local bytes, err = c:download_job(arg[3], arg[4]) -- err: the content type when it worked
  local secs = now() - t0
  local rss1, hwm1 = rss_kib()
  print(("ok=%d fail=%d seconds=%.6f bytes=%s rss_before_kib=%d rss_after_kib=%d hwm_before_kib=%d hwm_after_kib=%d%s")
    :format(bytes and 1 or 0, bytes and 0 or 1, secs, tostring(bytes), rss0, rss1, hwm0, hwm1,
      bytes and "" or (" error=" .. tostring(err.kind))))
  c:close()
elseif mode == "ua" then
  -- As mm.lua builds it; bench/run checks it against the captured request.
  print("lua-mattermost/" .. mm._VERSION .. " (libcurl/" .. core.curl_version .. ")")
else
  io.stderr:write("usage: mm_bench.lua seq|batch|mem|lua|ua ...\n")
  os.exit(2)
end
