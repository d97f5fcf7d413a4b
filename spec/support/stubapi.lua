--- Black-box helpers for the stub's API specs, over support.rawhttp (not
-- `mm`, so a bug in the client cannot hide one in the stub): control
-- calls, authenticated requests and exact AppError checks.
--
-- @usage
-- local S = require "support.stubapi"
-- before_each(S.reset)                 -- fresh state; S.fx holds the fixtures
-- S.assert_error(S.call("GET", "/api/v4/jobs", { as = "basic" }), 403, "api.context.permissions.app_error")
local assert = require "luassert" -- busted gives it to specs only, not to modules
local rawhttp = require "support.rawhttp"
local cjson = require "cjson"

local M = {}

M.URL = assert(os.getenv("MM_STUB_URL"), "run under bin/mm-stub run (MM_STUB_URL unset)")

local ALPHA = "[ybndrfg8ejkmcpqxot1uwisza345h769]"
--- A model.NewId(): 26 characters of Mattermost's base32 alphabet.
M.ID_PATTERN = "^" .. ALPHA:rep(25) .. "[yrecowah]$"

--- A control-API call (/__stub/...) that must answer 200; the decoded body.
function M.control(method, path, body)
  local r = assert(rawhttp.request(M.URL, { method = method, path = path, body = body }))
  assert(r.status == 200, "control " .. method .. " " .. path .. ": " .. tostring(r.status) .. " " .. r.body)
  return cjson.decode(r.body)
end

--- PUT /__stub/config with a table.
function M.config(tbl) return M.control("PUT", "/__stub/config", cjson.encode(tbl)) end

--- Adds permissions (a list) to a role (families §6: +own, +others on team_user).
function M.grant(role, permissions) return M.config{ grant = { role = role, permissions = permissions } } end

--- Back to the fixture state; M.fx is GET /__stub/fixtures afterwards.
function M.reset()
  M.control("POST", "/__stub/reset")
  M.fx = M.control("GET", "/__stub/fixtures")
  return M.fx
end

--- The personal access token of fixture user `user`.
function M.token(user) return M.fx.users[user].token end

--- A header list that authenticates as fixture user `user` (Bearer PAT).
function M.auth(user) return { { "Authorization", "Bearer " .. M.token(user) } } end

--- An API request. opts: as = fixture user (Bearer PAT), headers = list of
-- {name, value}, body, timeout.
function M.call(method, path, opts)
  opts = opts or {}
  local headers = opts.as and M.auth(opts.as) or {}
  for _, h in ipairs(opts.headers or {}) do headers[#headers + 1] = h end
  local r, err = rawhttp.request(M.URL, { method = method, path = path, headers = headers, body = opts.body,
                                          timeout = opts.timeout })
  assert(r and not err, "request failed: " .. tostring(err))
  return r
end

--- Assert an AppError answer (api-contract.md §1.4): status, id, exact key
-- order, no trailing newline, request_id equal to the X-Request-Id header,
-- detailed_error empty (developer mode off) unless `detail` is given.
-- Returns the message.
function M.assert_error(r, status, id, message, detail)
  assert.are.equal(status, r.status, r.body)
  assert.are.equal("application/json", r.h["content-type"])
  local rid = r.h["x-request-id"]
  assert.is_truthy(rid and rid:match(M.ID_PATTERN), "X-Request-Id: " .. tostring(rid))
  -- the message may hold escaped quotes: matched loosely, compared decoded
  local pat = '^{"id":"([^"]*)","message":".*","detailed_error":"([^"]*)",'
    .. '"request_id":"([^"]*)","status_code":(%d+)}$'
  local gid, gdetail, grid, gstatus = r.body:match(pat)
  assert.is_truthy(gid, "not an AppError body: " .. r.body)
  assert.are.equal(id, gid)
  local gmsg = cjson.decode(r.body).message
  if message then assert.are.equal(message, gmsg) end
  assert.are.equal(detail or "", gdetail)
  assert.are.equal(rid, grid)
  assert.are.equal(status, tonumber(gstatus))
  assert.is_truthy(r.h["x-version-id"])
  return gmsg
end

--- Assert ReturnStatusOK's answer: 200, JSON, {"status":"OK"} upper-case
-- with no trailing newline (families §1.3).
function M.assert_status_ok(r)
  assert.are.equal(200, r.status, r.body)
  assert.are.equal("application/json", r.h["content-type"])
  assert.are.equal('{"status":"OK"}', r.body)
end

--- Assert the router's catch-all 404 for `path` (api-contract.md §1.1).
function M.assert_404_route(r, path)
  assert.are.equal(404, r.status)
  local body = cjson.decode(r.body)
  assert.are.equal("api.context.404.app_error", body.id)
  assert.are.equal("Sorry, we could not find the page.", body.message)
  assert.are.equal(404, body.status_code)
  assert.are.equal("There doesn't appear to be an api call for the url='" .. path
    .. "'.  Typo? are you missing a team_id or user_id as part of the url?", body.detailed_error)
  assert.is_nil(body.request_id)
end

--- A random id of NewId's shape.
function M.random_id()
  local chars = "ybndrfg8ejkmcpqxot1uwisza345h769"
  local t = {}
  for i = 1, 25 do local n = math.random(#chars); t[i] = chars:sub(n, n) end
  return table.concat(t) .. "y"
end

--- A job (as GET /__stub/fixtures or the API decode it) encoded as the
-- server encodes model.Job: struct field order, data keys sorted. Only for
-- plain values (no characters that need escaping).
function M.job_json(j)
  local data = "null"
  if type(j.data) == "table" then
    local keys = {}
    for k in pairs(j.data) do keys[#keys + 1] = k end
    table.sort(keys)
    for n, k in ipairs(keys) do keys[n] = ('"%s":"%s"'):format(k, j.data[k]) end
    data = "{" .. table.concat(keys, ",") .. "}"
  end
  return ('{"id":"%s","type":"%s","priority":%d,"create_at":%d,"start_at":%d,"last_activity_at":%d,'
    .. '"status":"%s","progress":%d,"data":%s}'):format(j.id, j.type, j.priority, j.create_at, j.start_at,
      j.last_activity_at, j.status, j.progress, data)
end

--- The JSON array the list routes write for these jobs (no trailing newline).
function M.list_json(jobs)
  local parts = {}
  for n, j in ipairs(jobs) do parts[n] = M.job_json(j) end
  return "[" .. table.concat(parts, ",") .. "]"
end

--- Epoch milliseconds, as the stub's create_at.
function M.now_ms() return math.floor(require("socket").gettime() * 1000) end

--- The keys of the JSON object `body` (top level only), in order.
function M.keys(body)
  local out, depth, i = {}, 0, 1
  while i <= #body do
    local c = body:sub(i, i)
    if c == '"' then
      local j = i + 1
      while j <= #body and body:sub(j, j) ~= '"' do j = j + (body:sub(j, j) == "\\" and 2 or 1) end
      if depth == 1 and body:sub(j + 1, j + 1) == ":" then out[#out + 1] = body:sub(i + 1, j - 1) end
      i = j
    elseif c == "{" or c == "[" then depth = depth + 1
    elseif c == "}" or c == "]" then depth = depth - 1 end
    i = i + 1
  end
  return out
end

--- Decode an application/x-www-form-urlencoded string: name -> list of
-- values, in order.
function M.form(s)
  local out = {}
  local function unescape(v)
    return (v:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  for pair in (s or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    out[k] = out[k] or {}
    table.insert(out[k], unescape(v))
  end
  return out
end

--- The value of header `name` (any case) in a list of {name, value}.
function M.header(headers, name)
  for _, h in ipairs(headers) do
    if h[1]:lower() == name:lower() then return h[2] end
  end
end

return M
