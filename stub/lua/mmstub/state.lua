-- Stub state: fixtures (read-only, loaded once in init_by_lua), the live
-- config and everything that changes (jobs, command tokens, role grants,
-- rate-limit buckets, logs) in lua_shared_dicts, so it survives across
-- requests and is fresh on every start. reset() puts it all back.
local cjson = require "cjson.safe"
local bit = require "bit"

local M = {}

local dict = ngx.shared.mm_state   -- config, tokens, grants, counters, rate buckets
local jobs = ngx.shared.mm_jobs    -- job id -> encoded job record
local conns = ngx.shared.mm_conns  -- connection number -> API requests on it
local logs = ngx.shared.mm_log     -- lists "requests" and "redirects"

local boot, fixtures        -- decoded boot.json / fixtures.json
local by_token = {}         -- token -> {user = name, kind = "pat"|"session"|"oauth"}
local users_by_id = {}      -- user id -> name

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return assert(cjson.decode(s))
end

--- Load boot options and fixtures from the nginx prefix (init_by_lua).
function M.init()
  local prefix = ngx.config.prefix()
  boot = read_json(prefix .. "boot.json")
  fixtures = read_json(prefix .. "fixtures.json")
  for name, u in pairs(fixtures.users) do
    u.name = name
    users_by_id[u.id] = name
    if u.token then by_token[u.token] = { user = name, kind = "pat" } end
    if u.session_token then by_token[u.session_token] = { user = name, kind = "session" } end
    if u.oauth_token then by_token[u.oauth_token] = { user = name, kind = "oauth" } end
  end
  M.reset()
end

function M.boot() return boot end
function M.fixtures() return fixtures end

-- Config as set at start by bin/mm-stub options; reset returns to it.
local function default_config()
  return {
    rate_limit = boot.rate_limit or false,  -- false or {per_sec=, burst=}
    enable_commands = boot.enable_commands ~= false,
    developer = boot.developer == true,
    enterprise = boot.enterprise == true,
    enable_user_access_tokens = true,        -- PATs must work (§7 fixtures)
    strict_csrf = false,                     -- ExperimentalStrictCSRFEnforcement (§1.2)
    job_outcome = "success",
    job_steps = 1,                           -- GETs that see in_progress before the terminal one
  }
end

function M.reset()
  dict:flush_all(); jobs:flush_all(); conns:flush_all(); logs:flush_all()
  dict:flush_expired(); jobs:flush_expired(); conns:flush_expired(); logs:flush_expired()
  dict:set("config", cjson.encode(default_config()))
  dict:set("version_hash", ngx.md5(tostring(ngx.now()) .. tostring(math.random())))
  ngx.update_time()
  dict:set("reset_at", ngx.now())
end

function M.config()
  return cjson.decode(dict:get("config"))
end

local OUTCOMES = { success = true, error = true, warning = true, canceled = true, never = true }

--- Apply a PUT /__stub/config patch. Returns the new config or nil, message.
function M.set_config(patch)
  if type(patch) ~= "table" then return nil, "body must be a JSON object" end
  local c = M.config()
  for k, v in pairs(patch) do
    if k == "rate_limit" then
      if v == false then c.rate_limit = false
      elseif type(v) == "table" and tonumber(v.per_sec) and tonumber(v.burst)
             and v.per_sec > 0 and v.burst >= 0 then
        c.rate_limit = { per_sec = v.per_sec, burst = math.floor(v.burst) }
        for _, key in ipairs(dict:get_keys(0)) do -- fresh buckets for a new quota
          if key:sub(1, 3) == "rl:" then dict:delete(key) end
        end
      else return nil, "rate_limit must be false or {per_sec>0, burst>=0}" end
    elseif k == "enable_commands" or k == "developer" or k == "enterprise"
        or k == "enable_user_access_tokens" or k == "strict_csrf" then
      if type(v) ~= "boolean" then return nil, k .. " must be a boolean" end
      c[k] = v
    elseif k == "job_outcome" then
      if not OUTCOMES[v] then return nil, "job_outcome must be success|error|warning|canceled|never" end
      c.job_outcome = v
    elseif k == "job_steps" then
      if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then return nil, "job_steps must be an integer >= 0" end
      c.job_steps = v
    elseif k == "grant" then
      if type(v) ~= "table" or type(v.role) ~= "string" or type(v.permissions) ~= "table" then
        return nil, 'grant must be {"role":..., "permissions":[...]}'
      end
      local key = "grant:" .. v.role
      local have = cjson.decode(dict:get(key) or "[]")
      for _, p in ipairs(v.permissions) do have[#have + 1] = tostring(p) end
      dict:set(key, cjson.encode(have))
    else
      return nil, "unknown config key: " .. tostring(k)
    end
  end
  dict:set("config", cjson.encode(c))
  return c
end

function M.grants()
  local out = {}
  for _, key in ipairs(dict:get_keys(0)) do
    local role = key:match("^grant:(.*)$")
    if role then out[role] = cjson.decode(dict:get(key)) end
  end
  return out
end

-- ---------------------------------------------------------------- ids, time

local ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
local urandom

--- model.NewId() (§1.5): base32 of 16 random bytes with Mattermost's
-- alphabet, no padding, 26 characters.
function M.new_id()
  urandom = urandom or assert(io.open("/dev/urandom", "rb"))
  local b = { urandom:read(16):byte(1, 16) }
  b[17] = 0 -- padding byte: the last char carries 3 data bits + 2 zero bits
  local out, acc, nbits = {}, 0, 0
  for i = 1, 17 do
    acc = bit.bor(bit.lshift(bit.band(acc, 0xFF), 8), b[i])
    nbits = nbits + 8
    while nbits >= 5 and #out < 26 do
      nbits = nbits - 5
      local v = bit.band(bit.rshift(acc, nbits), 31)
      out[#out + 1] = ALPHABET:sub(v + 1, v + 1)
    end
  end
  return table.concat(out)
end

--- model.GetMillis(): epoch milliseconds.
function M.now_ms()
  ngx.update_time()
  return math.floor(ngx.now() * 1000)
end

function M.version_id(cfg)
  -- CurrentVersion.BuildNumber.ClientConfigHash.licensed (§1.3)
  return "9.11.0.9.11.0." .. dict:get("version_hash") .. "." .. tostring(cfg.enterprise == true)
end

-- ---------------------------------------------------------------- sessions and permissions

--- Session for a token, or nil (GetSession fails: unknown/revoked).
function M.session(token)
  local t = by_token[token]
  if not t then return nil end
  local u = fixtures.users[t.user]
  return {
    user_id = u.id, username = t.user, roles = u.roles,
    is_oauth = t.kind == "oauth", is_pat = t.kind == "pat",
    -- Only cookie sessions carry a CSRF token; others get a value nobody
    -- knows so an absent header never "matches" an empty one *(inferred)*.
    csrf = (t.kind == "session" and u.csrf_token) or ("nocsrf-" .. token),
  }
end

local function role_has(role, perm)
  local perms = fixtures.roles[role]
  if perms then
    for _, p in ipairs(perms) do if p == "*" or p == perm then return true end end
  end
  local g = dict:get("grant:" .. role)
  if g then
    for _, p in ipairs(cjson.decode(g)) do if p == perm then return true end end
  end
  return false
end

local function roles_have(roles, perm)
  for role in (roles or ""):gmatch("%S+") do
    if role_has(role, perm) then return true end
  end
  return false
end

--- SessionHasPermissionTo: system roles only.
function M.has_permission(session, perm)
  return roles_have(session.roles, perm)
end

--- SessionHasPermissionToTeam: system roles pass everywhere, then the
-- member's roles on that team *(fork only: app/authorization.go)*.
function M.has_team_permission(session, team_id, perm)
  if roles_have(session.roles, perm) then return true end
  for _, team in pairs(fixtures.teams) do
    if team.id == team_id then
      return roles_have(team.members[session.username], perm)
    end
  end
  return false
end

-- ---------------------------------------------------------------- commands

--- Command by id with its live token, or nil.
function M.command(id)
  for name, c in pairs(fixtures.commands) do
    if c.id == id then
      return {
        name = name, id = c.id, token = dict:get("cmdtoken:" .. c.id) or c.token,
        creator = c.creator, creator_id = fixtures.users[c.creator].id,
        team = c.team, team_id = fixtures.teams[c.team].id,
        trigger = c.trigger, deleted = c.deleted == true,
      }
    end
  end
end

function M.set_command_token(id, token) dict:set("cmdtoken:" .. id, token) end

function M.user_name(id) return users_by_id[id] end

-- ---------------------------------------------------------------- jobs

function M.save_job(job) return jobs:set(job.id, cjson.encode(job)) end

function M.get_job(id)
  local s = jobs:get(id)
  if not s then return nil end
  local job = cjson.decode(s)
  if job.data == cjson.null then job.data = nil end
  return job
end

-- ---------------------------------------------------------------- logs and counters

--- Count one API request on this connection (log_by_lua), so keep-alive
-- reuse is observable through GET /__stub/connections.
-- A request that started before the last reset is not counted: a slow
-- fault handler whose client gave up long ago still reaches its log phase,
-- and must not show up in the counts of a later test.
function M.count_connection()
  if ngx.req.start_time() < (dict:get("reset_at") or 0) then return end
  conns:incr(ngx.var.connection, 1, 0)
end

function M.connections()
  local out = {}
  for _, k in ipairs(conns:get_keys(0)) do
    out[#out + 1] = { connection = tonumber(k), requests = conns:get(k) }
  end
  table.sort(out, function(a, b) return a.connection < b.connection end)
  return out
end

-- Logs are numbered keys "<list>:<n>" plus a counter "<list>", so they can
-- be read in order without consuming them (shared-dict lists cannot).
function M.log_push(list, entry)
  local n = logs:incr(list, 1, 0)
  local ok, err = logs:set(list .. ":" .. n, cjson.encode(entry))
  if not ok then ngx.log(ngx.WARN, "stub log ", list, " full: ", err) end
end

function M.log_list(list)
  local out = {}
  for i = 1, logs:get(list) or 0 do
    out[#out + 1] = cjson.decode(logs:get(list .. ":" .. i) or "null")
  end
  return out
end

--- Increment a named counter (fault modes), returning the new value.
function M.incr(key) return dict:incr("ctr:" .. key, 1, 0) end

function M.dict() return dict end

return M
