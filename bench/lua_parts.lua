-- bench/lua_parts.lua: what pieces of a call's Lua layer cost, each alone.
-- bench/run runs each part under callgrind at two repeat counts; the
-- difference / count is its instructions per execution.
--
-- The "was:" parts are copies of code the library had before the work in
-- bench/ANALYSIS.md (up to 377c27a); the "now:" parts are what replaced
-- them; the others are the unit costs that analysis counts in.
--
-- Usage: lua bench/lua_parts.lua list | INDEX COUNT   (from the repository root)
local build = "build/lua" .. _VERSION:match("%d+%.%d+")
package.cpath = build .. "/?.so;" .. package.cpath

local core = require "mm.core"
local json = require("cjson.safe").new()

local id = "bench000000000000000000042"
local body = '{"token":"benchfaketoken000000000000"}'
local JOB = '{"id":"job00000000000000000000200","type":"message_export","priority":0,"create_at":1700012000000,'
  .. '"start_at":1700012001500,"last_activity_at":1700012042000,"status":"success","progress":100,'
  .. '"data":{"batch_size":"10000","batch_start_timestamp":"1699925600000","export_type":"actiance",'
  .. '"is_downloadable":"true","messages_exported":"7400","warning_count":"0"}}'
local find, is_lower_alnum = string.find, core.is_lower_alnum
local Client = { __name = "mm.client" }
local client = setmetatable({}, Client)
local clients = setmetatable({ [client] = true }, { __mode = "k" })
local null, tointeger = json.null, math.tointeger or function(x) return x end

local function plain_was(v)
  if v == null then return nil end
  local t = type(v)
  if t == "number" then return tointeger(v) or v end
  if t == "table" then
    for k, x in pairs(v) do v[k] = plain_was(x) end
  end
  return v
end

local function plain_now(t)
  for k, x in pairs(t) do
    if x == null then
      t[k] = nil
    else
      local ty = type(x)
      if ty == "table" then
        plain_now(x)
      elseif ty == "number" then
        t[k] = tointeger(x) or x
      end
    end
  end
  return t
end

local function two(a, b) return a, b end

local PARTS = {
  { "baseline", "an empty function call (subtracted from the others)", function() end },
  { "was: id check", "`type(id)`, `#id == 26`, `find(id, \"^[a-z0-9]+$\")`", function()
    return type(id) == "string" and #id == 26 and find(id, "^[a-z0-9]+$")
  end },
  { "now: id check", "`core.is_lower_alnum(id, 26)`", function()
    return is_lower_alnum(id, 26)
  end },
  { "was: is it a client", "`getmetatable(c) == Client`", function()
    return getmetatable(client) == Client
  end },
  { "now: is it a client", "`clients[c]` (a weak-keyed table)", function()
    return clients[client]
  end },
  { "JSON: a token", "`json.decode` of `{\"token\":\"...\"}` (lua-cjson)", function()
    return json.decode(body)
  end },
  { "JSON: a job", "`json.decode` of one job (321 bytes)", function()
    return json.decode(JOB)
  end },
  { "was: a job, plain()", "`json.decode` of the job, then plain() with a call per value", function()
    return plain_was(json.decode(JOB))
  end },
  { "now: a job, plain()", "`json.decode` of the job, then plain() testing values in its loop", function()
    return plain_now(json.decode(JOB))
  end },
  { "a Lua call", "`two(1, 2)`, a Lua function of two arguments", function()
    return two(1, 2)
  end },
  { "a C call", "`type(id)`", function()
    return type(id)
  end },
  { "a URL", "`root .. \"/commands/\" .. id .. \"/regen_token\"`", function()
    return "http://127.0.0.1:8080/api/v4" .. "/commands/" .. id .. "/regen_token"
  end },
}

if arg[1] == "list" then
  for i, p in ipairs(PARTS) do print(i, p[1], p[2]) end
  return
end
local which, count = tonumber(arg[1]), math.tointeger(tonumber(arg[2] or ""))
assert(which and PARTS[which] and count and count > 0 and count <= 10000000, "usage: lua_parts.lua list | INDEX COUNT")
local f = PARTS[which][3]
for _ = 1, count do f() end
