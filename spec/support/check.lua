-- Assertions shared by the client specs, and what they compare with.
local assert = require "luassert" -- busted gives it to specs only, not to modules

local M = {}

-- f(...) must raise a string error matching `pattern` (Lua pattern).
function M.raises(pattern, f, ...)
  local ok, msg = pcall(f, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_string(msg)
  assert.matches(pattern, msg)
end

-- The keys of table t, sorted: a result's fields, for assert.same.
function M.keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- A string of Mattermost's id alphabet only (model.NewId's base32).
M.ALPHABET = "^[ybndrfg8ejkmcpqxot1uwisza345h769]+$"

-- err must be an `mm` error of kind "http" with this status and (when
-- given) Mattermost error id and message; an AppError's request_id is a
-- NewId() and its status_code the status (the router's catch-all 404 has
-- no request_id, contract §1.1).
function M.http_error(err, status, id, message)
  local mm = require "mm"
  assert.is_true(mm.is_error(err), "expected an mm error, got " .. tostring(err))
  assert.equal("http", err.kind)
  assert.equal(status, err.status)
  assert.equal(id, err.id)
  if id then assert.equal(status, err.status_code) end
  if id and id ~= "api.context.404.app_error" then
    assert.matches(M.ALPHABET, err.request_id)
    assert.equal(26, #err.request_id)
  end
  if message then assert.equal(message, err.message) end
end

-- The request `r` (an entry of the stub's request log) is exactly what
-- `mm` sends: `want.method`, `want.uri`, `want.body` (default none), and
-- the whole header list in wire order for a client with token
-- `want.token` and default options (`want.gzip = false`: made with
-- compression = false).
function M.sent(r, want)
  local mm = require "mm"
  local core = require "mm.core"
  local host = assert(os.getenv("MM_STUB_URL")):match("^https?://([^/]+)")
  local headers = { { "Host", host } }
  if want.gzip ~= false then headers[#headers + 1] = { "Accept-Encoding", "gzip" } end
  headers[#headers + 1] = { "Authorization", "Bearer " .. want.token }
  headers[#headers + 1] = { "Accept", "application/json" }
  headers[#headers + 1] = { "User-Agent", "lua-mattermost/" .. mm._VERSION .. " (libcurl/" .. core.curl_version .. ")" }
  local body = want.body or ""
  if want.body then headers[#headers + 1] = { "Content-Type", "application/json" } end
  if want.body or want.method == "POST" or want.method == "PUT" or want.method == "PATCH" then
    headers[#headers + 1] = { "Content-Length", tostring(#body) }
  end
  assert.equal(want.method, r.method)
  assert.equal(want.uri, r.uri)
  assert.same(headers, r.headers)
  assert.equal(body, r.body)
  assert.equal(1.1, r.http_version)
end

return M
