-- Assertions shared by the client specs.
local assert = require "luassert" -- busted gives it to specs only, not to modules

local M = {}

-- f(...) must raise a string error matching `pattern` (Lua pattern).
function M.raises(pattern, f, ...)
  local ok, msg = pcall(f, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_string(msg)
  assert.matches(pattern, msg)
end

local ID = "^[ybndrfg8ejkmcpqxot1uwisza345h769]+$"

--- An error of an HTTP answer (api-contract.md 1.4): kind "http", the
-- status; with `id`, the AppError's id, its status_code and a request_id
-- of NewId's shape; with `message`, its message.
function M.http_error(err, status, id, message)
  assert.is_true(require("mm").is_error(err), "expected an mm error, got " .. tostring(err))
  assert.equal("http", err.kind)
  assert.equal(status, err.status)
  assert.equal(id, err.id)
  if id then
    assert.equal(status, err.status_code)
    assert.equal(26, #err.request_id)
    assert.matches(ID, err.request_id)
  end
  if message then assert.equal(message, err.message) end
end

--- A request as the stub recorded it (GET /__stub/requests) is exactly
-- what a client made by mm.new with default options and `token` sends:
-- method, URI, body, and the headers in wire order (HTTP/1.1): Host,
-- Accept-Encoding, Authorization, Accept, User-Agent, and with a body
-- Content-Type and Content-Length; a POST, PUT or PATCH without one says
-- Content-Length: 0, as Go's client does.
function M.sent(r, method, uri, body, token)
  assert.equal(method, r.method)
  assert.equal(uri, r.uri)
  assert.equal(body or "", r.body)
  local want = { "Host", "Accept-Encoding", "Authorization", "Accept", "User-Agent" }
  if body then
    want[#want + 1] = "Content-Type"
    want[#want + 1] = "Content-Length"
  elseif method == "POST" or method == "PUT" or method == "PATCH" then
    want[#want + 1] = "Content-Length"
  end
  local names, h = {}, {}
  for i, kv in ipairs(r.headers) do
    names[i] = kv[1]
    h[kv[1]] = kv[2]
  end
  assert.same(want, names)
  assert.equal("gzip", h["Accept-Encoding"])
  assert.equal("Bearer " .. token, h.Authorization)
  assert.equal("application/json", h.Accept)
  assert.matches("^lua%-mattermost/%d+%.%d+%.%d+ %(libcurl/[%d.]+%)$", h["User-Agent"])
  if body then assert.equal("application/json", h["Content-Type"]) end
  if h["Content-Length"] then assert.equal(tostring(#(body or "")), h["Content-Length"]) end
end

return M
