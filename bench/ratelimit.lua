-- bench/ratelimit.lua: batches against the stub's rate limiter (issue 10's
-- targets), run by bench/run from the repository root under the stub:
--
--   bin/mm-stub run --no-tls -- lua5.4 bench/ratelimit.lua
--
-- Scenarios, each on a freshly reset stub (a full bucket, an empty log):
--   nolimit  2,000 calls, concurrency 16, no limiter (the reference)
--   fast     2,000 calls, concurrency 16, 100/s burst 50
--   default    300 calls, concurrency 16, 10/s burst 100 (Mattermost's default)
-- Each is one c:regen_tokens(ids, { concurrency = 16 }) on a new client with
-- the library's defaults, over the stub's fixture commands repeated. The
-- target: no call fails and the batch takes at most 1.15x the limiter's
-- own minimum, (calls - burst) / per_sec.
--
-- Prints key=value lines for bench/run (rl_<scenario>_<key>), a summary on
-- stderr. "attempts" are the batch's requests that reached the stub (its
-- request log), so attempts - ok is the number refused (429) or failed
-- otherwise. Tokens are never printed.
local build = "build/lua" .. _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local mm = require "mm"
local core = require "mm.core"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local URL = assert(os.getenv("MM_STUB_URL"), "run under bin/mm-stub run (MM_STUB_URL is not set)")

local SCENARIOS = {
  { name = "nolimit", n = 2000, conc = 16 },
  { name = "fast", n = 2000, conc = 16, per_sec = 100, burst = 50 },
  { name = "default", n = 300, conc = 16, per_sec = 10, burst = 100 },
}

-- The stub's control API, with LuaSocket: independent of mm.
local function control(method, path, value)
  local body = value ~= nil and cjson.encode(value) or nil
  local out = {}
  local ok, status, headers = http.request{
    url = URL .. path, method = method,
    headers = body and { ["content-type"] = "application/json", ["content-length"] = #body } or nil,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(out),
  }
  assert(ok, status)
  assert(status == 200, ("stub control %s %s: %s"):format(method, path, tostring(status)))
  return cjson.decode(table.concat(out)), headers
end

local function say(fmt, ...) io.stderr:write("bench: ratelimit: ", fmt:format(...), "\n") end

-- The fixture commands sysadmin can regenerate, found by trying each once
-- with the limiter off; and sysadmin's token.
local function setup()
  control("POST", "/__stub/reset")
  local fx = control("GET", "/__stub/fixtures")
  local token = fx.users.sysadmin.token
  local c = mm.new{ url = URL, token = token }
  local names, ids = {}, {}
  for name in pairs(fx.commands) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local id = fx.commands[name].id
    if type(c:regen_token(id)) == "string" then ids[#ids + 1] = id end
  end
  c:close()
  assert(#ids > 0, "no fixture command could be regenerated")
  return token, ids
end

-- The batch: one c:regen_tokens call.
local function batch(c, list, s)
  local t0 = core.monotime()
  local results, failed = c:regen_tokens(list, { concurrency = s.conc })
  return results, failed, core.monotime() - t0
end

local function run(s, token, ids)
  control("POST", "/__stub/reset")
  if s.per_sec then control("PUT", "/__stub/config", { rate_limit = { per_sec = s.per_sec, burst = s.burst } }) end
  local list = {}
  for i = 1, s.n do list[i] = ids[(i - 1) % #ids + 1] end
  local c = mm.new{ url = URL, token = token }
  local ran, results, failed, secs = pcall(batch, c, list, s)
  c:close()
  if not ran then
    print(("rl_%s_error=%s"):format(s.name, tostring(results):gsub("%s+", " ")))
    say("%s: %s", s.name, tostring(results))
    return
  end
  local ok, statuses = 0, {}
  for i = 1, s.n do
    local r = results[i]
    if type(r) == "string" then
      ok = ok + 1
    else
      local k = tostring(type(r) == "table" and (r.status or r.kind) or type(r))
      statuses[k] = (statuses[k] or 0) + 1
    end
  end
  local log, headers = control("GET", "/__stub/requests")
  local attempts = 0
  for _, e in ipairs(log) do
    if type(e) == "table" and type(e.uri) == "string" and e.uri:find("/regen_token", 1, true) then
      attempts = attempts + 1
    end
  end
  local kinds = {}
  for k, v in pairs(statuses) do kinds[#kinds + 1] = k .. ":" .. v end
  table.sort(kinds)
  local out = {
    n = s.n, conc = s.conc, per_sec = s.per_sec or 0, burst = s.burst or 0,
    seconds = ("%.3f"):format(secs), ok = ok, fail = s.n - ok, failed_reported = failed,
    attempts = attempts, refused = attempts - ok,
    -- entries the stub's log could not keep (then attempts is a lower bound)
    log_dropped = tonumber(headers["x-stub-dropped"]) or 0,
    fail_kinds = #kinds > 0 and table.concat(kinds, ",") or "-",
  }
  if s.per_sec then
    local minimum = (s.n - s.burst) / s.per_sec
    out.minimum_s = ("%.3f"):format(minimum)
    out.ratio = ("%.3f"):format(secs / minimum)
    out.pass = (out.fail == 0 and secs <= 1.15 * minimum) and "yes" or "no"
  end
  for _, k in ipairs{ "n", "conc", "per_sec", "burst", "seconds", "ok", "fail", "failed_reported", "attempts",
                      "refused", "log_dropped", "fail_kinds", "minimum_s", "ratio", "pass" } do
    if out[k] ~= nil then print(("rl_%s_%s=%s"):format(s.name, k, tostring(out[k]))) end
  end
  say("%-13s %4d calls c=%d %s: %.3f s, %d failed (%s), %d requests reached the stub%s", s.name, s.n, s.conc,
    s.per_sec and ("%g/s burst %d"):format(s.per_sec, s.burst) or "no limiter", secs, out.fail, out.fail_kinds,
    attempts, s.per_sec and (", target <= %.2f s: %s"):format(1.15 * out.minimum_s, out.pass) or "")
end

local token, ids = setup()
print("rl_commands=" .. #ids)
for _, s in ipairs(SCENARIOS) do run(s, token, ids) end
control("POST", "/__stub/reset")
