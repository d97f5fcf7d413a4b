-- The fixtures file (stub/fixtures.json, or bin/mm-stub --fixtures FILE):
-- read, checked and stripped of its comments before the stub uses it, so
-- that a wrong file stops the start with one line naming what is wrong
-- instead of a Lua error in some request later. stub/README.md
-- ("Fixtures") documents the format checked here.
local cjson = require "cjson.safe"

local M = {}

-- The fields of a record in each section: kind, "!" when required. Kinds:
-- id (26 letters or digits: model.IsValidId, as the routes check),
-- string, number, boolean, user and team (the name of a fixture user or
-- team), members (user name -> roles), data (string -> string, or null),
-- file ({name, content}).
local SECTIONS = {
  users = { id = "id!", roles = "string!", token = "string", session_token = "string", csrf_token = "string",
            oauth_token = "string" },
  teams = { id = "id!", name = "string", members = "members!" },
  channels = { id = "id!", type = "string!", name = "string!", team = "team", delete_at = "number",
               members = "members" },
  commands = { id = "id!", creator = "user!", team = "team!", deleted = "boolean" }, -- + M.load's command_fields
  jobs = { id = "id!", type = "string!", status = "string!", create_at = "number!", start_at = "number",
           last_activity_at = "number", priority = "number", progress = "number", data = "data", file = "file" },
}
-- Checked in this order: later sections name users and teams.
local ORDER = { "users", "teams", "channels", "commands", "roles", "jobs" }

local function comment(k) return type(k) == "string" and k:sub(1, 1) == "_" end

-- `v` if it is a JSON object, with its comments removed unless `map` (a
-- map's keys are data). cjson reads [] and {} alike: an empty array passes
-- as an empty object.
local function object(v, map)
  if type(v) ~= "table" then return nil end
  for k in pairs(v) do
    if type(k) ~= "string" then return nil end
    if comment(k) and not map then v[k] = nil end
  end
  return v
end

local function strings(v) -- an array of strings
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  for i = 1, n do
    if type(v[i]) ~= "string" then return false end
  end
  return true
end

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

-- nil if `v` is of `kind`, else what it must be.
local function check_value(fx, kind, v)
  if kind == "id" then
    if type(v) ~= "string" or #v ~= 26 or v:find("%W") then return "must be 26 letters or digits (an id)" end
  elseif kind == "string" or kind == "boolean" then
    if type(v) ~= kind then return "must be a " .. kind end
  elseif kind == "number" then
    if not finite(v) then return "must be a number" end
  elseif kind == "user" or kind == "team" then
    if type(v) ~= "string" then return "must be a string: the name of one of the fixtures' " .. kind .. "s" end
    if not fx[kind .. "s"][v] then return "'" .. v .. "' is not one of the fixtures' " .. kind .. "s" end
  elseif kind == "members" then
    if not object(v, true) then return "must be an object: user name -> roles" end
    for name, roles in pairs(v) do
      if not fx.users[name] then return "names '" .. name .. "', not one of the fixtures' users" end
      if type(roles) ~= "string" then return "." .. name .. " must be a string of roles" end
    end
  elseif kind == "data" then
    if v == cjson.null then return nil end
    if not object(v, true) then return "must be null or an object of strings" end
    for k, s in pairs(v) do
      if type(s) ~= "string" then return "." .. k .. " must be a string" end
    end
  elseif kind == "file" then
    if not object(v) or type(v.name) ~= "string" or type(v.content) ~= "string" then
      return 'must be {"name": string, "content": string}'
    end
  end
end

-- nil if the record `r` at `where` fits `fields`, else the message.
local function check_record(fx, fields, where, r)
  if not object(r) then return where .. " must be an object" end
  for k in pairs(r) do
    if not fields[k] then return where .. " has an unknown field " .. k end
  end
  for k, spec in pairs(fields) do
    local kind, required = spec:match("^(%a+)(!?)$")
    if r[k] == nil then
      if required == "!" then return where .. "." .. k .. " is missing" end
    else
      local why = check_value(fx, kind, r[k])
      if why then return where .. "." .. k .. (why:sub(1, 1) == "." and why or " " .. why) end
    end
  end
end

-- nil if `fx` (decoded) is a valid fixtures world, else the message.
-- Comments go; missing optional sections become empty.
local function check(fx, command_fields)
  if not object(fx) then return "not a JSON object" end
  for k in pairs(fx) do
    if not SECTIONS[k] and k ~= "roles" then
      return "unknown section " .. k .. " (users, teams, channels, commands, roles, jobs; keys starting"
        .. " with _ are comments)"
    end
  end
  if fx.users == nil then return "users is missing (user name -> {id, roles, token, ...})" end
  local fields = {}
  for k, v in pairs(SECTIONS.commands) do fields[k] = v end
  for k, default in pairs(command_fields) do fields[k] = fields[k] or type(default) end
  local used = {} -- tokens of any kind: each names one session
  for _, section in ipairs(ORDER) do
    fx[section] = fx[section] or {}
    if not object(fx[section]) then return section .. " must be an object" end
    local ids = {}
    for name, r in pairs(fx[section]) do
      local where = section .. "." .. name
      if section == "roles" then
        if not strings(r) then return where .. " must be an array of permission names" end
      else
        local why = check_record(fx, section == "commands" and fields or SECTIONS[section], where, r)
        if why then return why end
        if ids[r.id] then return where .. ".id is also " .. section .. "." .. ids[r.id] .. "'s" end
        ids[r.id] = name
        if section == "users" then
          for _, kind in ipairs({ "token", "session_token", "oauth_token" }) do
            local t = r[kind]
            if t then
              if used[t] then return where .. "." .. kind .. " is also " .. used[t] end
              used[t] = where .. "." .. kind
            end
          end
        end
      end
    end
  end
end

--- Reads and checks the fixtures file at `path`. `command_fields`: the
-- fields a fixture command may set besides id, creator, team and deleted,
-- each with a default of its type. Returns the fixtures (comments
-- removed, every section present) or nil and a one-line message.
function M.load(path, command_fields)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  local fx
  fx, err = cjson.decode(text)
  if fx == nil then return nil, "not valid JSON: " .. tostring(err) end
  err = check(fx, command_fields)
  if err then return nil, err end
  return fx
end

return M
