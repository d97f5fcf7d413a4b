-- Stub state: fixtures (read-only, loaded once in init_by_lua), the live
-- config and everything that changes (jobs, commands, role grants,
-- rate-limit buckets, logs) in lua_shared_dicts, so it survives across
-- requests and is fresh on every start. reset() puts it all back.
local cjson = require "cjson.safe"
local bit = require "bit"
local files = require "mmstub.files"
local fixtures_file = require "mmstub.fixtures"

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

-- A command record's fields and their defaults (model.Command); a fixture
-- command may set any of them but creator_id and team_id (creator, team).
local COMMAND_DEFAULTS = {
  token = "", create_at = 0, update_at = 0, delete_at = 0, creator_id = "", team_id = "", trigger = "",
  method = "", username = "", icon_url = "", auto_complete = false, auto_complete_desc = "",
  auto_complete_hint = "", display_name = "", description = "", url = "", plugin_id = "",
}
local FIXTURE_COMMAND_FIELDS = {}
for k, v in pairs(COMMAND_DEFAULTS) do
  if k ~= "creator_id" and k ~= "team_id" then FIXTURE_COMMAND_FIELDS[k] = v end
end

--- Load boot options and fixtures from the nginx prefix (init_by_lua). A
-- bad fixtures file fails the start with "mm-stub fixtures: <what>", which
-- bin/mm-stub shows on its own line.
function M.init()
  local prefix = ngx.config.prefix()
  boot = read_json(prefix .. "boot.json")
  local err
  fixtures, err = fixtures_file.load(prefix .. "fixtures.json", FIXTURE_COMMAND_FIELDS)
  if not fixtures then error("mm-stub fixtures: " .. err, 0) end
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

local OUTCOMES = { success = true, error = true, warning = true, canceled = true, never = true }
local BOOLEANS = { enable_commands = true, developer = true, enterprise = true,
                   enable_user_access_tokens = true, strict_csrf = true }
BOOLEANS.download_export_results = true -- MessageExportSettings.DownloadExportResults (jobs)

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

--- A rate_limit value (PUT /__stub/config or bin/mm-stub --rate-limit):
-- false, or {per_sec > 0, burst a whole number >= 0}. Returns the value to
-- store or nil, message.
local function check_rate_limit(v)
  if v == false then return false end
  if type(v) == "table" and finite(v.per_sec) and v.per_sec > 0
     and finite(v.burst) and v.burst >= 0 and v.burst == math.floor(v.burst) then
    return { per_sec = v.per_sec, burst = v.burst }
  end
  return nil, "rate_limit must be false or {per_sec: number > 0, burst: whole number >= 0}"
end

-- Config as set at start by bin/mm-stub options; reset returns to it.
local function default_config()
  -- boot.json's, checked as a PUT's would be
  local rl, err = check_rate_limit(boot.rate_limit or false)
  if err then error("boot.json: " .. err) end
  return {
    rate_limit = rl,                         -- false or {per_sec=, burst=}
    enable_commands = boot.enable_commands ~= false,
    developer = boot.developer == true,
    enterprise = boot.enterprise == true,
    download_export_results = boot.download_export_results == true, -- default false *(fork only)*
    enable_user_access_tokens = true,        -- PATs must work (§7 fixtures)
    site_url = "http://mm.test",             -- ServiceSettings.SiteURL (families §6)
    strict_csrf = false,                     -- ExperimentalStrictCSRFEnforcement (§1.2)
    job_outcome = "success",
    job_steps = 1,                           -- GETs that see in_progress before the terminal one
  }
end

local load_fixture_jobs -- jobs section

function M.reset()
  M.clear_jobs() -- before mm_state is flushed: it lists the generated export files
  dict:flush_all(); jobs:flush_all(); conns:flush_all(); logs:flush_all()
  dict:flush_expired(); jobs:flush_expired(); conns:flush_expired(); logs:flush_expired()
  M.reset_commands()
  dict:set("config", cjson.encode(default_config()))
  dict:set("version_hash", ngx.md5(tostring(ngx.now()) .. tostring(math.random())))
  ngx.update_time()
  dict:set("reset_at", ngx.now())
  load_fixture_jobs()
end

function M.config()
  return cjson.decode(dict:get("config"))
end

-- check_patch: nil if every key of a PUT /__stub/config patch is valid,
-- else the message of the first bad one.
local function check_patch(patch)
  for k, v in pairs(patch) do
    if k == "rate_limit" then
      local _, err = check_rate_limit(v)
      if err then return err end
    elseif BOOLEANS[k] then
      if type(v) ~= "boolean" then return k .. " must be a boolean" end
    elseif k == "site_url" then
      if type(v) ~= "string" then return "site_url must be a string" end
    elseif k == "job_outcome" then
      if not OUTCOMES[v] then return "job_outcome must be success|error|warning|canceled|never" end
    elseif k == "job_steps" then
      if not finite(v) or v < 0 or v ~= math.floor(v) then return "job_steps must be an integer >= 0" end
    elseif k == "grant" then
      local ok = type(v) == "table" and type(v.role) == "string" and type(v.permissions) == "table"
      if ok then -- an array of strings: keys 1..n only ({} reads as [])
        local n = 0
        for _ in pairs(v.permissions) do n = n + 1 end
        for i = 1, n do if type(v.permissions[i]) ~= "string" then ok = false end end
      end
      if not ok then return 'grant must be {"role":"...", "permissions":["...", ...]}' end
    else
      return "unknown config key: " .. tostring(k)
    end
  end
end

--- Apply a PUT /__stub/config patch: every key is checked first, so a
-- rejected patch changes nothing. Returns the new config or nil, message.
function M.set_config(patch)
  if type(patch) ~= "table" then return nil, "body must be a JSON object" end
  local err = check_patch(patch)
  if err then return nil, err end
  local c = M.config()
  for k, v in pairs(patch) do
    if k == "rate_limit" then
      c.rate_limit = check_rate_limit(v)
      if v then
        for _, key in ipairs(dict:get_keys(0)) do -- fresh buckets for a new quota
          if key:sub(1, 3) == "rl:" then dict:delete(key) end
        end
      end
    elseif k == "grant" then
      local key = "grant:" .. v.role
      local have = cjson.decode(dict:get(key) or "[]")
      for _, p in ipairs(v.permissions) do have[#have + 1] = p end
      dict:set(key, cjson.encode(have))
    else
      c[k] = v
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

--- `n` random bytes.
function M.random_bytes(n)
  urandom = urandom or assert(io.open("/dev/urandom", "rb"))
  return urandom:read(n)
end

--- model.NewId() (§1.5): base32 of 16 random bytes with Mattermost's
-- alphabet, no padding, 26 characters.
function M.new_id()
  local b = { M.random_bytes(16):byte(1, 16) }
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

--- model.IsValidId (§1.5): 26 letters or digits (the stub: ASCII ones;
-- route patterns admit nothing else anyway).
function M.is_valid_id(v)
  return #v == 26 and not v:find("[^%w]")
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

--- SessionHasPermissionToTeam *(fork only: app/authorization.go)*: never
-- for team "" (not even a system admin); else the member's roles on that
-- team, then the system roles.
function M.has_team_permission(session, team_id, perm)
  if team_id == "" then return false end
  local team = M.team(team_id)
  if team and roles_have(team.members[session.username], perm) then return true end
  return roles_have(session.roles, perm)
end

-- ---------------------------------------------------------------- users, teams, channels

local function user_view(name)
  local u = fixtures.users[name]
  return u and { id = u.id, username = name, roles = u.roles }
end

--- A fixture user by id: {id, username, roles}, or nil.
function M.user(id)
  local name = users_by_id[id]
  return name and user_view(name)
end

--- A fixture team by id: {id, key, name, members = {username = roles}}, or nil.
function M.team(id)
  for key, t in pairs(fixtures.teams) do
    if t.id == id then return { id = t.id, key = key, name = t.name or key, members = t.members } end
  end
end

--- A fixture channel by id: {id, key, team_id ("" for DM/GM), type, name,
-- delete_at, members = {username = roles}}, or nil.
function M.channel(id)
  for key, c in pairs(fixtures.channels or {}) do
    if c.id == id then
      return { id = c.id, key = key, team_id = c.team and fixtures.teams[c.team].id or "", type = c.type,
               name = c.name, delete_at = c.delete_at or 0, members = c.members or {} }
    end
  end
end

--- Channels of a team, in no particular order.
function M.team_channels(team_id)
  local out = {}
  for key in pairs(fixtures.channels or {}) do
    local c = M.channel(fixtures.channels[key].id)
    if c.team_id == team_id then out[#out + 1] = c end
  end
  return out
end

--- SessionHasPermissionToChannel *(fork only: app/authorization.go)*: an
-- unknown channel is refused to everyone; then the channel roles of a
-- member, manage_system, the team check (team channels) or system roles.
function M.has_channel_permission(session, channel_id, perm)
  local ch = M.channel(channel_id)
  if not ch then return false end
  if roles_have(ch.members[session.username], perm) then return true end
  if roles_have(session.roles, "manage_system") then return true end
  if ch.team_id ~= "" then return M.has_team_permission(session, ch.team_id, perm) end
  return roles_have(session.roles, perm)
end

-- ---------------------------------------------------------------- commands
-- The command store (families §3): every command, live or soft-deleted, as
-- a model.Command record under "cmd:<id>", and "cmd_ids" (creation order:
-- the order of a store query without ORDER BY *(inferred)*).
-- COMMAND_DEFAULTS (above, at the fixtures) are a record's fields.

--- The URL of the harness endpoint E (served by the stub, harness.lua).
function M.harness_url()
  return "http://127.0.0.1:" .. tostring(boot.port) .. "/__harness/E"
end

--- Command record by id (deleted ones too), or nil.
function M.command(id)
  local s = dict:get("cmd:" .. id)
  return s and cjson.decode(s)
end

--- Insert or replace a command record.
function M.save_command(cmd)
  local key = "cmd:" .. cmd.id
  if not dict:get(key) then
    local ids = cjson.decode(dict:get("cmd_ids") or "[]")
    ids[#ids + 1] = cmd.id
    dict:set("cmd_ids", cjson.encode(ids))
  end
  assert(dict:set(key, cjson.encode(cmd)))
end

--- Every stored command, in creation order.
function M.all_commands()
  local out = {}
  for _, id in ipairs(cjson.decode(dict:get("cmd_ids") or "[]")) do out[#out + 1] = M.command(id) end
  return out
end

--- CommandStore.GetByTeam: the team's live commands (delete_at 0).
function M.team_commands(team_id)
  local out = {}
  for _, c in ipairs(M.all_commands()) do
    if c.team_id == team_id and c.delete_at == 0 then out[#out + 1] = c end
  end
  return out
end

-- Fixture commands into the store (reset); "{E}" in a url is the harness.
function M.reset_commands()
  dict:delete("cmd_ids")
  local names = {}
  for name in pairs(fixtures.commands) do names[#names + 1] = name end
  local function created(name) return fixtures.commands[name].create_at or 0 end
  table.sort(names, function(a, b) return created(a) < created(b) or (created(a) == created(b) and a < b) end)
  local now = M.now_ms()
  for _, name in ipairs(names) do
    local f, cmd = fixtures.commands[name], { id = fixtures.commands[name].id }
    for k, v in pairs(COMMAND_DEFAULTS) do
      if f[k] ~= nil then cmd[k] = f[k] else cmd[k] = v end
    end
    if cmd.create_at == 0 then cmd.create_at = now end
    if cmd.update_at == 0 then cmd.update_at = cmd.create_at end
    if f.deleted and cmd.delete_at == 0 then cmd.delete_at = cmd.update_at end
    cmd.creator_id, cmd.team_id = fixtures.users[f.creator].id, fixtures.teams[f.team].id
    cmd.url = cmd.url:gsub("{E}", M.harness_url())
    M.save_command(cmd)
  end
end

--- Record a post made by an executed command (GET /__stub/posts): `post`
-- has channel_id, user_id, message and optionally root_id, type, props,
-- ephemeral (sent to the caller only, SendEphemeralPost).
function M.add_post(post)
  M.log_push("posts", {
    id = M.new_id(), create_at = M.now_ms(), channel_id = post.channel_id, root_id = post.root_id or "",
    user_id = post.user_id, message = post.message, type = post.type or "",
    props = post.props or {},
    ephemeral = post.ephemeral == true,
  })
end

function M.user_name(id) return users_by_id[id] end

--- The id of the fixture user `name`, or nil.
function M.user_id_by_name(name)
  local u = fixtures.users[name]
  return u and u.id
end

-- ---------------------------------------------------------------- jobs

-- Each stored job gets a sequence number: lists are ordered by create_at,
-- newest first, and by seq between jobs of the same millisecond (a stub
-- choice: SQL leaves that order open).
function M.save_job(job)
  job.seq = job.seq or dict:incr("job_seq", 1, 0)
  return jobs:set(job.id, cjson.encode(job))
end

function M.get_job(id)
  local s = jobs:get(id)
  if not s then return nil end
  local job = cjson.decode(s)
  if job.data == cjson.null then job.data = nil end
  return job
end

--- Every stored job, in no particular order.
function M.all_jobs()
  local out = {}
  for _, id in ipairs(jobs:get_keys(0)) do out[#out + 1] = M.get_job(id) end
  return out
end

--- Record that a job's export file was generated (POST /__stub/jobs), so
-- emptying the store removes it.
function M.note_export_file(id) dict:set("expfile:" .. id, true) end

--- Empty the job store (DELETE /__stub/jobs, reset). Generated export
-- files go with their jobs; fixture files stay in the file store.
function M.clear_jobs()
  for _, key in ipairs(dict:get_keys(0)) do
    local id = key:match("^expfile:(.*)$")
    if id then
      local _, path = files.export_path(id)
      os.remove(path)
      dict:delete(key)
    end
  end
  jobs:flush_all()
  jobs:flush_expired()
end

-- The fixture jobs (fixtures.json "jobs", api-contract-families.md §6),
-- oldest first, as stored: {name = , job = , file = {bytes = } | nil}.
local fixture_jobs

local function fixture_list()
  if fixture_jobs then return fixture_jobs end
  fixture_jobs = {}
  for name, j in pairs(fixtures.jobs or {}) do
    if name:sub(1, 1) ~= "_" then
      local data = j.data ~= cjson.null and j.data or nil
      local entry = { name = name, job = {
        id = j.id, type = j.type, priority = j.priority or 0, create_at = j.create_at,
        start_at = j.start_at or 0, last_activity_at = j.last_activity_at or 0,
        status = j.status, progress = j.progress or 0, data = data,
      } }
      if j.file then entry.file = { name = j.file.name, bytes = files.zip(j.file.name, j.file.content) } end
      fixture_jobs[#fixture_jobs + 1] = entry
    end
  end
  table.sort(fixture_jobs, function(a, b) return a.job.create_at < b.job.create_at end)
  return fixture_jobs
end

-- Store the fixture jobs (they never advance: no pacing) and (re)write
-- their export files, modified at the job's last_activity_at.
load_fixture_jobs = function()
  for _, f in ipairs(fixture_list()) do
    local job = {}
    for k, v in pairs(f.job) do job[k] = v end
    M.save_job(job)
    if f.file then
      local _, path = files.export_path(job.id)
      assert(files.write(path, f.file.bytes))
      files.set_mtime(path, math.floor(job.last_activity_at / 1000))
    end
  end
end

--- The fixture jobs for GET /__stub/fixtures: name -> the job as stored at
-- reset, with its export file (path in the file store, size, sha256, the
-- bytes in base64).
function M.fixture_jobs_view()
  local out = {}
  for _, f in ipairs(fixture_list()) do
    local v = {}
    for k, val in pairs(f.job) do v[k] = val end
    v.data = v.data or cjson.null
    if f.file then
      local rel = files.export_path(v.id)
      v.file = { path = rel, name = f.file.name, size = #f.file.bytes,
                 sha256 = files.sha256_hex(f.file.bytes), base64 = ngx.encode_base64(f.file.bytes) }
    end
    out[f.name] = v
  end
  return out
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
-- safe_set: a full log never evicts older entries. An entry that does not
-- fit is counted in mm_state's "log_dropped:<list>" (X-Stub-Dropped on the
-- list's GET) and a small marker {"dropped":true,...} takes its place, kept
-- in mm_state (the full mm_log may have no room even for that); if that
-- fails too, the entry reads as null.
function M.log_push(list, entry)
  local n = logs:incr(list, 1, 0)
  local ok, err = logs:safe_set(list .. ":" .. n, cjson.encode(entry))
  if ok then return end
  ngx.log(ngx.WARN, "stub log ", list, " full: ", err)
  dict:incr("log_dropped:" .. list, 1, 0)
  dict:safe_set("log_marker:" .. list .. ":" .. n, cjson.encode({
    dropped = true, method = entry.method, uri = entry.uri, body_length = entry.body_length }))
end

--- Entries of a log that did not fit (see log_push).
function M.log_dropped(list) return dict:get("log_dropped:" .. list) or 0 end

function M.log_list(list)
  local out = {}
  for i = 1, logs:get(list) or 0 do
    local key = list .. ":" .. i
    out[#out + 1] = cjson.decode(logs:get(key) or dict:get("log_marker:" .. key) or "null")
  end
  return out
end

--- Increment a named counter (fault modes), returning the new value.
function M.incr(key) return dict:incr("ctr:" .. key, 1, 0) end

function M.dict() return dict end

return M
