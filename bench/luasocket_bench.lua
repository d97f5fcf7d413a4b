-- bench/luasocket_bench.lua: the same regen_token call with LuaSocket's
-- socket.http, the peer people reach for. socket.http opens a connection
-- per request (no keep-alive); that is part of what is measured.
--
-- Usage: lua bench/luasocket_bench.lua BASE_URL N [WARMUP]
-- Prints "ok=N fail=N seconds=S". Bearer token from BENCH_TOKEN, never printed.
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson.safe"

local base, n, warmup = arg[1], math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3] or "0"))
assert(base and n and n >= 0 and n <= 100000000 and warmup and warmup >= 0 and warmup <= 100000000,
  "usage: luasocket_bench.lua BASE_URL N [WARMUP]")
local token = assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN must be set")
local ua = os.getenv("BENCH_UA") or "bench"

local headers = {
  ["authorization"] = "Bearer " .. token,
  ["accept"] = "application/json",
  ["user-agent"] = ua,
  ["content-length"] = "0",
}

local function call(i)
  local parts = {}
  local url = ("%s/api/v4/commands/bench%021d/regen_token"):format(base, i % 1000)
  local ok, status = http.request{
    url = url, method = "PUT", headers = headers, sink = ltn12.sink.table(parts),
  }
  if not ok or status ~= 200 then return nil end
  -- What a caller has to do to get the token: decode the body.
  local t = cjson.decode(table.concat(parts))
  return type(t) == "table" and type(t.token) == "string"
end

for i = 1, warmup do call(i) end
local good, bad = 0, 0
local t0 = socket.gettime()
for i = 1, n do
  if call(i) then good = good + 1 else bad = bad + 1 end
end
print(("ok=%d fail=%d seconds=%.6f"):format(good, bad, socket.gettime() - t0))
