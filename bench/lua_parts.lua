-- bench/lua_parts.lua: what the per-call steps of mm.lua's regen_token
-- cost, and what cheaper forms of them would cost. bench/run runs each
-- part under callgrind at two repeat counts; the difference / count is its
-- instructions per call.
--
-- The "was:" parts are copies of code in lua/mm.lua up to commit 3d8d679
-- (the state bench/ANALYSIS.md analyses); the "alt:" parts are the cheaper
-- forms it proposes, several of which mm.lua has since adopted.
--
-- Usage: lua bench/lua_parts.lua list | NAME COUNT
local json = require("cjson.safe").new()

local id = "bench000000000000000000042"
local body = '{"token":"benchfaketoken000000000000"}'
local root = "http://127.0.0.1:8080/api/v4"
local headers = {
  server = "nginx", date = "Thu, 01 Jan 2026 00:00:00 GMT", ["content-type"] = "application/json",
  ["content-length"] = "38", connection = "keep-alive",
  ["x-request-id"] = "benchrequestid000000000000", ["x-version-id"] = "9.11.0.bench",
}
local header_names, header_values = {}, {}
for k, v in pairs(headers) do
  header_names[#header_names + 1] = k
  header_values[#header_values + 1] = v
end

local tointeger = math.tointeger
local function plain(v)
  if v == json.null then return nil end
  local t = type(v)
  if t == "number" then return tointeger(v) or v end
  if t == "table" then
    for k, x in pairs(v) do v[k] = plain(x) end
  end
  return v
end

local PARTS = {
  { "baseline", "an empty function call (subtracted from the others)", function() end },
  { "was: id check", "`type(id)`, `#id == 26`, `id:find(\"[^a-z0-9]\")`", function()
    if type(id) ~= "string" then return 1 end
    if #id ~= 26 then return 2 end
    if id:find("[^a-z0-9]") then return 3 end
  end },
  { "alt: id check, anchored", "the same with `not id:find(\"^[a-z0-9]+$\")`", function()
    if type(id) ~= "string" then return 1 end
    if #id ~= 26 then return 2 end
    if not id:find("^[a-z0-9]+$") then return 3 end
  end },
  { "was: request table", "3 concatenations and the `{method, path, url}` table", function()
    local path = "/commands/" .. id .. "/regen_token"
    return { method = "PUT", path = "/api/v4" .. path, url = root .. path }
  end },
  { "alt: URL only", "`root .. \"/commands/\" .. id .. \"/regen_token\"`, no table", function()
    return root .. "/commands/" .. id .. "/regen_token"
  end },
  { "was: is_json", "`ct:lower()`, then `match(\"^%s*application/json%s*$\")` (or `...%s*;`)", function()
    local ct = headers["content-type"]
    if ct == nil then return false end
    ct = ct:lower()
    return ct:match("^%s*application/json%s*$") ~= nil or ct:match("^%s*application/json%s*;") ~= nil
  end },
  { "alt: is_json fast path", "`ct == \"application/json\"` before the general match", function()
    local ct = headers["content-type"]
    if ct == "application/json" then return true end
    if ct == nil then return false end
    ct = ct:lower()
    return ct:match("^%s*application/json%s*$") ~= nil or ct:match("^%s*application/json%s*;") ~= nil
  end },
  { "was: decode + plain", "`json.decode(body)` and `plain()` over the result", function()
    return plain(json.decode(body))
  end },
  { "alt: decode only", "`json.decode(body)`, token read directly", function()
    local t = json.decode(body)
    return type(t) == "table" and t.token
  end },
  { "header table (Lua)", "a 7-entry table like the one mm.core built per response up to 3d8d679", function()
    local t = {}
    for i = 1, #header_names do t[header_names[i]] = header_values[i] end
    return t
  end },
  { "header table, presized", "the same, made with a preallocated hash part", function()
    local t = { server = false, date = false, ["content-type"] = false, ["content-length"] = false,
      connection = false, ["x-request-id"] = false, ["x-version-id"] = false }
    for i = 1, #header_names do t[header_names[i]] = header_values[i] end
    return t
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
