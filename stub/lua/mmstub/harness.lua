-- The harness endpoint E of families §6: the URL custom slash commands
-- call (fixture urls "{E}" resolve to state.harness_url()). Served by the
-- stub itself under /__harness/ (not Mattermost; never rate limited). It
-- records every request it receives (GET /__stub/harness/requests) and
-- answers with the configured reply (PUT /__stub/harness/reply), by default
-- 200 application/json {"response_type":"in_channel","text":"ok from E"}.
local cjson = require "cjson.safe"
local api = require "mmstub.api"
local state = require "mmstub.state"

local M = {}

local DEFAULT_REPLY = {
  status = 200, content_type = "application/json",
  body = '{"response_type":"in_channel","text":"ok from E"}', unreachable = false,
}

--- The reply E gives now (reset: DEFAULT_REPLY).
function M.reply()
  local r = {}
  for k, v in pairs(DEFAULT_REPLY) do r[k] = v end
  for k, v in pairs(cjson.decode(state.dict():get("harness_reply") or "{}")) do r[k] = v end
  return r
end

local CHECKS = {
  status = function(v) return type(v) == "number" and v >= 200 and v <= 599 and v == math.floor(v) end,
  content_type = function(v) return type(v) == "string" and not v:find("[\r\n]") end,
  body = function(v) return type(v) == "string" end,
  unreachable = function(v) return type(v) == "boolean" end,
}

--- Merge a PUT /__stub/harness/reply patch: {status (200-599),
-- content_type ("" for none), body, unreachable (close the connection
-- without an answer)}. Every key is checked before any is applied.
-- Returns the new reply or nil, message.
function M.set_reply(patch)
  if type(patch) ~= "table" then return nil, "body must be a JSON object" end
  for k, v in pairs(patch) do
    if not CHECKS[k] then return nil, "unknown harness reply key: " .. tostring(k) end
    if not CHECKS[k](v) then
      return nil, "harness reply: bad " .. k .. " (status 200-599, content_type/body strings, unreachable boolean)"
    end
  end
  local stored = cjson.decode(state.dict():get("harness_reply") or "{}")
  for k, v in pairs(patch) do stored[k] = v end
  state.dict():set("harness_reply", cjson.encode(stored))
  return M.reply()
end

--- content_by_lua entry for location /__harness/.
function M.serve()
  state.log_push("harness", {
    method = ngx.req.get_method(), path = ngx.var.uri, query = ngx.var.args or "",
    headers = api.request_headers(), body = api.body(),
  })
  local r = M.reply()
  if r.unreachable then return ngx.exit(444) end -- close, no answer: a transport error for the caller
  ngx.status = r.status
  if r.content_type ~= "" then ngx.header["Content-Type"] = r.content_type end
  ngx.header["Content-Length"] = #r.body
  ngx.print(r.body)
end

return M
