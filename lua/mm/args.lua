--- Argument checks: one function per kind of value an endpoint takes, and
-- the object schemas of query tables and JSON bodies.
--
-- A check returns the value to send (a string for path and query values)
-- or nil and a message saying what is wrong ("id must be 26 characters,
-- got 4"). Callers turn the message into an error naming the argument;
-- the CLI calls the same checks, so it refuses exactly what the library
-- refuses. Values are checked as the server's own validation would reject
-- them, so a bad request is never sent.
-- @module mm.args
local codec = require "mm.codec"
local core = require "mm.core"

local M = {}

local find = string.find
local floor = math.floor
local is_utf8, number_text = codec.is_utf8, codec.number_text

local function typename(v) return v == nil and "no value" or type(v) end
M.typename = typename

local function text(what, v, min, max)
  if type(v) ~= "string" then return nil, what .. " must be a string, got " .. typename(v) end
  if #v < min then return nil, what .. (min == 1 and " must not be empty" or " is too short") end
  if max and #v > max then return nil, ("%s must be at most %d bytes, got %d"):format(what, max, #v) end
  if find(v, "\0", 1, true) then return nil, what .. " must not contain NUL bytes" end
  if not is_utf8(v) then return nil, what .. " must be valid UTF-8" end
  return v
end

--- Kinds of values (each `check(v) -> value | nil, why`).
local T = {}
M.types = T

-- Ids are Mattermost NewId()s: 26 characters, lower-case letters and
-- digits (contract 1.5). Checked strictly, an id never needs escaping
-- in a URL path.
-- The bytes are checked in C: the pattern "^[a-z0-9]+$" cost 2.5k
-- instructions per id, a fifth of a call's Lua layer (bench/ANALYSIS.md).
local is_lower_alnum = core.is_lower_alnum
local ID_LENGTH = 26
M.ID_LENGTH = ID_LENGTH

function T.id(v)
  if is_lower_alnum(v, ID_LENGTH) then return v end
  if type(v) ~= "string" then return nil, "id expected, got " .. typename(v) end
  if #v ~= ID_LENGTH then return nil, ("id must be %d characters, got %d"):format(ID_LENGTH, #v) end
  return nil, "id must contain only lower-case letters and digits"
end

-- The router's pattern for /jobs/type/{job_type}, and RequireJobType's
-- limit of 32 characters (contract families 1.1, 2.3).
function T.job_type(v)
  if type(v) ~= "string" then return nil, "job type must be a string, got " .. typename(v) end
  if not find(v, "^[A-Za-z0-9_%-]+$") then
    return nil, "job type must be letters, digits, '_' or '-', got '" .. v:sub(1, 40) .. "'"
  end
  if #v > 32 then return nil, "job type must be at most 32 characters, got " .. #v end
  return v
end

local STATUSES = { pending = true, in_progress = true, success = true, error = true,
                   cancel_requested = true, canceled = true, warning = true }
M.JOB_STATUSES = { "pending", "in_progress", "success", "error", "cancel_requested", "canceled", "warning" }

-- The seven statuses the server knows; anything else garbles its answer
-- (contract families 2.2.1).
function T.job_status(v)
  if STATUSES[v] then return v end
  return nil, "job status must be one of " .. table.concat(M.JOB_STATUSES, ", ") .. ", got "
    .. (type(v) == "string" and ("'" .. v:sub(1, 40) .. "'") or typename(v))
end

local function whole(what, v, max)
  if type(v) ~= "number" or v ~= v or v < 0 or v > max or floor(v) ~= v then
    return nil, ("%s must be a whole number from 0 to %d, got %s"):format(what, max, tostring(v))
  end
  return number_text(v)
end

function T.page(v) return whole("page", v, 2 ^ 31 - 1) end
-- The server caps per_page at 200 (contract families 1.2): asking for
-- more would quietly return fewer.
function T.per_page(v) return whole("per_page", v, 200) end

function T.boolean(v)
  if type(v) == "boolean" then return v and "true" or "false" end
  return nil, "boolean expected, got " .. typename(v)
end

function T.string(v) return text("value", v, 0) end
function T.nonempty(v) return text("value", v, 1) end

-- Command fields, as Command.IsValid checks them (contract families 3.1).
-- The trigger rule is the newest server's, ^[A-Za-z0-9_./-]+$ (fork
-- only); older servers refused only a space, so against them this also
-- refuses triggers (accents, '?', tabs) they would take.
function T.trigger(v)
  local s, why = text("trigger", v, 1, 128)
  if not s then return nil, why end
  if s:sub(1, 1) == "/" then return nil, "trigger must not start with '/'" end
  if find(s, "[^A-Za-z0-9_./%-]") then
    return nil, "trigger must be ASCII letters, digits, '_', '.', '/' or '-'"
  end
  return s
end

function T.method(v)
  if v == "P" or v == "G" then return v end
  return nil, "method must be \"P\" (POST) or \"G\" (GET), got "
    .. (type(v) == "string" and ("'" .. v .. "'") or typename(v))
end

-- IsValidHTTPURL [utils.go]: the prefix "http://" or "https://" exactly
-- (compared case-sensitively), then what url.ParseRequestURI needs: a
-- host once any userinfo is taken off, a numeric port, %-escapes that
-- decode before the query.
function T.url(v)
  local s, why = text("url", v, 1, 1024)
  if not s then return nil, why end
  local authority = s:match("^https?://([^/?#]*)")
  local hostport = authority and authority:gsub("^.*@", "")
  local port = hostport and (hostport:match("^%[.*%](.*)$") or hostport:match("^[^:]*(.*)$"))
  if not hostport or hostport == "" or not port:find("^:?%d*$") or find(s, "[%s%c]")
     or find(s:match("^[^?]*"):gsub("%%%x%x", ""), "%", 1, true) then
    return nil, "url must start with http:// or https:// and name a host, got '" .. s:sub(1, 60) .. "'"
  end
  return s
end

function T.display_name(v) return text("display_name", v, 0, 64) end
function T.description(v) return text("description", v, 0, 128) end

-- A command token: the server refuses any other length (contract
-- families 3.1, IsValid).
function T.token(v)
  if type(v) == "string" and #v == 26 and find(v, "^[%w]+$") then return v end
  return nil, "token must be 26 letters and digits"
end

function T.time(v)
  if type(v) == "number" and v >= 0 and v < 2 ^ 53 and floor(v) == v then return number_text(v) end
  return nil, "time must be a whole number of milliseconds, got " .. tostring(v)
end

-- "/trigger text": what ExecuteCommand refuses otherwise (contract
-- families 3.10 step 2).
function T.command_line(v)
  local s, why = text("command", v, 2)
  if not s then return nil, why end
  if s:sub(1, 1) ~= "/" then return nil, "command must start with '/', got '" .. s:sub(1, 40) .. "'" end
  return s
end

T["function"] = function(v)
  if type(v) == "function" then return v end
  return nil, "function expected, got " .. typename(v)
end

-- A file to write: a name the file system can take.
function T.file(v)
  if type(v) ~= "string" or v == "" then return nil, "file name expected, got " .. typename(v) end
  if find(v, "\0", 1, true) then return nil, "file name must not contain NUL bytes" end
  return v
end

--- Object schemas: ordered fields {name, kind, required}. `body` schemas
-- become JSON objects (fields in this order, present ones only), `query`
-- schemas query strings.
local S = {}
M.schemas = S

local function schema(fields)
  local by_name, names = {}, {}
  for i, f in ipairs(fields) do
    by_name[f[1]] = f
    names[i] = f[1]
  end
  fields.by_name, fields.names = by_name, names
  return fields
end

S.jobs_query = schema{ { "page", "page" }, { "per_page", "per_page" }, { "job_type", "job_type" },
                       { "status", "job_status" } }
S.page_query = schema{ { "page", "page" }, { "per_page", "per_page" } }
S.commands_query = schema{ { "team_id", "id", true }, { "custom_only", "boolean" } }
S.suggestions_query = schema{ { "user_input", "nonempty", true }, { "channel_id", "id" }, { "root_id", "id" } }
S.status_options = schema{ { "force", "boolean" } }
-- Options of the call itself, never sent.
S.download_options = schema{ { "on_progress", "function" } }

-- The Command object's fields in the server's order (contract families
-- 3.1). A new command needs team, trigger, method and url.
local COMMAND = {
  { "id", "id" }, { "token", "token" }, { "create_at", "time" }, { "update_at", "time" },
  { "delete_at", "time" }, { "creator_id", "id" }, { "team_id", "id" }, { "trigger", "trigger" },
  { "method", "method" }, { "username", "string" }, { "icon_url", "string" },
  { "auto_complete", "boolean" }, { "auto_complete_desc", "string" }, { "auto_complete_hint", "string" },
  { "display_name", "display_name" }, { "description", "description" }, { "url", "url" },
  { "plugin_id", "string" },
}
local function command_schema(required, without)
  local fields = {}
  for _, f in ipairs(COMMAND) do
    if not (without and without[f[1]]) then fields[#fields + 1] = { f[1], f[2], required[f[1]] or nil } end
  end
  return schema(fields)
end
-- A new command has no id (the server fails with 500 on one, families
-- 3.2 step 6), no times (the server's; a delete_at would make it deleted
-- at once) and no plugin_id (refused beside the creator the server sets).
S.new_command = command_schema({ team_id = true, trigger = true, method = true, url = true },
  { id = true, create_at = true, update_at = true, delete_at = true, plugin_id = true })
-- PUT replaces the whole command (contract families 3.7): every field
-- the server takes from the body must be there, or it would be blanked.
S.command = command_schema{
  id = true, team_id = true, trigger = true, method = true, url = true, username = true, icon_url = true,
  auto_complete = true, auto_complete_desc = true, auto_complete_hint = true, display_name = true,
  description = true,
}
S.command_args = schema{ { "channel_id", "id", true }, { "command", "command_line", true },
                         { "team_id", "id" }, { "root_id", "id" }, { "parent_id", "id" } }

-- The `data` of a job: string keys to string values (the server decodes
-- a map[string]string, contract 2.1); numbers and booleans are sent as
-- strings. Returns the JSON object text.
local function job_data(data)
  if type(data) ~= "table" then return nil, "field 'data' must be a table, got " .. type(data) end
  local keys, values = {}, {}
  for k, v in pairs(data) do
    if type(k) ~= "string" then
      return nil, "field 'data' must have string keys, got a " .. type(k) .. " key"
    end
    local tv = type(v)
    if tv == "number" then
      v = number_text(v)
      if not v then return nil, "field 'data." .. k .. "' must be a finite number" end
    elseif tv == "boolean" then
      v = tostring(v)
    elseif tv ~= "string" then
      return nil, "field 'data." .. k .. "' must be a string, number or boolean, got " .. tv
    end
    if not is_utf8(k) or not is_utf8(v) then return nil, "field 'data." .. k .. "' must be valid UTF-8" end
    keys[#keys + 1] = k
    values[k] = v
  end
  table.sort(keys) -- a stable body: the same table always encodes the same way
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = codec.string(k) .. ":" .. codec.string(values[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- A new job, `{type = , data = }`, as its JSON body.
function M.job(job)
  if type(job) ~= "table" then return nil, "table expected, got " .. typename(job) end
  for k in pairs(job) do
    if k ~= "type" and k ~= "data" then
      return nil, "unknown field '" .. tostring(k) .. "' (expected 'type' and 'data')"
    end
  end
  if type(job.type) ~= "string" or job.type == "" then return nil, "field 'type' must be a non-empty string" end
  local jtype, why = text("field 'type'", job.type, 1)
  if not jtype then return nil, why end
  local data = "{}"
  if job.data ~= nil then
    data, why = job_data(job.data)
    if not data then return nil, why end
  end
  return '{"type":' .. codec.string(jtype) .. ',"data":' .. data .. "}"
end

local function list_names(names)
  return "'" .. table.concat(names, "', '") .. "'"
end

--- Checks table `t` against schema `s`: the list of {name, value} pairs
-- (values converted by their kind), or nil and why.
function M.fields(s, t, what)
  if type(t) ~= "table" then return nil, (what or "table") .. " expected, got " .. typename(t) end
  for k in pairs(t) do
    if not s.by_name[k] then
      return nil, ("unknown field '%s' (expected %s)"):format(tostring(k), list_names(s.names))
    end
  end
  local out = {}
  for _, f in ipairs(s) do
    local name, v = f[1], t[f[1]]
    if v == nil then
      if f[3] then return nil, "field '" .. name .. "' is required" end
    else
      local value, why = T[f[2]](v)
      if value == nil then
        return nil, "field '" .. name .. "': " .. why
      end
      out[#out + 1] = { name, value, f[2] }
    end
  end
  return out
end

-- Kinds whose checked value is JSON text as it is (numbers, booleans);
-- the others are strings to quote.
local RAW = { boolean = true, time = true, page = true, per_page = true }

--- A list of checked fields as a JSON object.
function M.object(list)
  local parts = {}
  for i, f in ipairs(list) do
    local v = f[2]
    parts[i] = codec.string(f[1]) .. ":" .. (RAW[f[3]] and v or codec.string(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

return M
