-- Talks to the stub server's control API (/__stub/...) for the client
-- specs: reset, configure, read fixtures and what the client really sent.
-- Independent of mm: luasocket's socket.http, so a bug in mm cannot hide
-- a bug in a check.
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local M = {}

M.url = assert(os.getenv("MM_STUB_URL"), "run the specs under bin/mm-stub run (MM_STUB_URL is not set)")

local function call(method, path, value)
  local body = value ~= nil and cjson.encode(value) or nil
  local out = {}
  local ok, status = http.request{
    url = M.url .. path, method = method,
    headers = body and { ["content-type"] = "application/json", ["content-length"] = #body } or nil,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(out),
  }
  assert(ok, status)
  assert(status == 200, ("stub control %s %s: %s %s"):format(method, path, tostring(status), table.concat(out)))
  return cjson.decode(table.concat(out))
end

function M.reset() return call("POST", "/__stub/reset") end
function M.config(patch) return call("PUT", "/__stub/config", patch) end
function M.fixtures() return call("GET", "/__stub/fixtures") end
function M.requests() return call("GET", "/__stub/requests") end
function M.connections() return call("GET", "/__stub/connections") end
function M.redirect_log() return call("GET", "/__stub/redirect_log") end
function M.job(id) return call("GET", "/__stub/jobs/" .. id) end
-- Commands as stored (deleted ones too), in creation order.
function M.commands() return call("GET", "/__stub/commands") end
-- Posts made by executed commands; what the harness endpoint E received;
-- E's next answers ({status=, content_type=, body=, unreachable=}).
function M.posts() return call("GET", "/__stub/posts") end
function M.harness_requests() return call("GET", "/__stub/harness/requests") end
function M.harness_reply(patch) return call("PUT", "/__stub/harness/reply", patch) end
-- Adds permissions to a role (families §6: +own, +others on team_user).
function M.grant(role, permissions) return M.config{ grant = { role = role, permissions = permissions } } end

-- The stored command with this id, or nil.
function M.command(id)
  for _, c in ipairs(M.commands()) do
    if c.id == id then return c end
  end
end
-- POST /__stub/jobs: a job stored directly, never advanced (with `file`,
-- a downloadable export of that size); returns {job = ..., file = ...}.
function M.store_job(spec) return call("POST", "/__stub/jobs", spec or {}) end
-- DELETE /__stub/jobs: an empty job store.
function M.clear_jobs() return call("DELETE", "/__stub/jobs") end

-- The value of a header in a recorded request (names compared without case).
function M.header(req, name)
  name = name:lower()
  for _, h in ipairs(req.headers) do
    if h[1]:lower() == name then return h[2] end
  end
end

return M
