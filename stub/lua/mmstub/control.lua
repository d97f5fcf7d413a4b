-- Control API under /__stub/ (not part of Mattermost; never rate limited):
-- lets specs reset state, read fixtures, switch behaviour and inspect what
-- clients actually sent. Documented in `bin/mm-stub --help`.
local cjson = require "cjson.safe"
local state = require "mmstub.state"
local api = require "mmstub.api"

local M = {}

local enc = cjson.new()
if enc.encode_empty_table_as_object then enc.encode_empty_table_as_object(false) end -- [] for empty lists

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(enc.encode(value))
  return ngx.exit(status)
end

-- A JSON array: this cjson has no switch for empty tables, which it
-- writes as {}.
local function reply_list(list)
  if #list > 0 then return reply(200, list) end
  ngx.header["Content-Type"] = "application/json"
  return ngx.print("[]")
end

local function fixtures_view()
  local fx = state.fixtures()
  local out = { users = {}, teams = {}, commands = {} }
  for name, u in pairs(fx.users) do
    local teams = setmetatable({}, { __jsontype = "object" })
    for tname, t in pairs(fx.teams) do teams[tname] = t.members[name] end
    out.users[name] = { id = u.id, username = name, roles = u.roles, token = u.token,
                        session_token = u.session_token, csrf_token = u.csrf_token,
                        oauth_token = u.oauth_token, teams = next(teams) and teams or nil }
  end
  for tname, t in pairs(fx.teams) do out.teams[tname] = { id = t.id, name = t.name or tname, members = t.members } end
  -- commands family: live commands (with creator/team fixture names), channels, E
  for cname, c in pairs(fx.commands) do
    local live = state.command(c.id)
    live.creator, live.team = state.user_name(live.creator_id), c.team
    for tname, t in pairs(fx.teams) do if t.id == live.team_id then live.team = tname end end
    live.deleted = live.delete_at ~= 0
    out.commands[cname] = live
  end
  out.channels = {}
  for chname, c in pairs(fx.channels or {}) do
    local ch = state.channel(c.id)
    out.channels[chname] = { id = ch.id, name = ch.name, type = ch.type, team = c.team, team_id = ch.team_id,
                             archived = ch.delete_at ~= 0, members = ch.members }
  end
  out.harness_url = state.harness_url()
  out.roles = fx.roles
  out.jobs = state.fixture_jobs_view()
  return out
end

-- /__stub/jobs: GET lists the stored jobs (newest first, API encoding),
-- DELETE empties the store, POST stores a job directly (jobs.store).
local function jobs_control(method)
  local jobs = require "mmstub.jobs"
  if method == "GET" then
    ngx.header["Content-Type"] = "application/json"
    return ngx.print(jobs.list_all())
  elseif method == "DELETE" then
    state.clear_jobs()
    return reply(200, { ok = true })
  elseif method == "POST" then
    local body, status, err = jobs.store(cjson.decode(api.body()))
    if not body then return reply(status, { error = err }) end
    ngx.header["Content-Type"] = "application/json"
    return ngx.print(body)
  end
  return reply(404, { error = "unknown control route: " .. method .. " /__stub/jobs" })
end

local function handle(method, path)
  if path == "/__stub/ping" then return reply(200, { ok = true }) end
  if path == "/__stub/reset" and method == "POST" then
    state.reset()
    return reply(200, { ok = true })
  end
  if path == "/__stub/fixtures" and method == "GET" then return reply(200, fixtures_view()) end
  if path == "/__stub/config" then
    if method == "GET" then
      local c = state.config()
      c.grants = state.grants()
      return reply(200, c)
    end
    if method == "PUT" or method == "POST" then
      local patch = cjson.decode(api.body())
      local c, err = state.set_config(patch)
      if not c then return reply(400, { error = err }) end
      c.grants = state.grants()
      return reply(200, c)
    end
  end
  -- commands family: the command store, posts made by executed commands,
  -- the harness endpoint E (harness.lua)
  if path == "/__stub/commands" and method == "GET" then return reply_list(state.all_commands()) end
  if path == "/__stub/posts" and method == "GET" then
    -- props are objects even when empty: the default encoder, and [] by hand
    local posts = state.log_list("posts")
    ngx.header["Content-Type"] = "application/json"
    ngx.header["X-Stub-Dropped"] = state.log_dropped("posts")
    for n, p in ipairs(posts) do posts[n] = cjson.encode(p) end
    return ngx.print("[" .. table.concat(posts, ",") .. "]")
  end
  if path == "/__stub/harness/requests" and method == "GET" then
    ngx.header["X-Stub-Dropped"] = state.log_dropped("harness")
    return reply_list(state.log_list("harness"))
  end
  if path == "/__stub/harness/reply" then
    local harness = require "mmstub.harness"
    if method == "GET" then return reply(200, harness.reply()) end
    if method == "PUT" or method == "POST" then
      local r, err = harness.set_reply(cjson.decode(api.body()))
      if not r then return reply(400, { error = err }) end
      return reply(200, r)
    end
  end
  if path == "/__stub/connections" and method == "GET" then return reply_list(state.connections()) end
  if path == "/__stub/requests" and method == "GET" then
    ngx.header["X-Stub-Dropped"] = state.log_dropped("requests")
    return reply_list(state.log_list("requests"))
  end
  if path == "/__stub/redirect_log" and method == "GET" then
    ngx.header["X-Stub-Dropped"] = state.log_dropped("redirects")
    return reply_list(state.log_list("redirects"))
  end
  if path == "/__stub/jobs" then return jobs_control(method) end
  local id = path:match("^/__stub/jobs/([^/]+)$")
  if id and method == "GET" then
    local job = state.get_job(id)
    if not job then return reply(404, { error = "no such job" }) end
    -- the stored job in API field order, without advancing it
    ngx.header["Content-Type"] = "application/json"
    return ngx.print(require("mmstub.json").job(job))
  end
  return reply(404, { error = "unknown control route: " .. method .. " " .. path })
end

function M.serve()
  return handle(ngx.req.get_method(), ngx.var.uri)
end

return M
