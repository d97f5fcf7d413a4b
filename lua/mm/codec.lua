--- Encoding and decoding: JSON, numbers as the server reads them,
-- percent-encoding and query strings.
-- @module mm.codec
local core = require "mm.core"
local json = require("cjson.safe").new() -- our own settings, never the caller's

local M = {}

local floor, huge = math.floor, math.huge
local concat, format, byte = table.concat, string.format, string.byte
local tointeger = math.tointeger or function(x) return x end
M.tointeger = tointeger
M.parse_headers = core.parse_headers

local null = json.null

--- Decodes JSON text: the value, or nil and why.
-- @function decode
M.decode = json.decode

local integers = math.tointeger ~= nil -- Lua 5.3+: whole numbers have a type of their own

-- plain() of a table, in place. Each value is tested here rather than by
-- a call of plain per value: a page of 200 jobs holds some 3,000 values,
-- most of them strings that need nothing (bench/ANALYSIS.md).
local function plain_table(t)
  for k, x in pairs(t) do
    if x == null then
      t[k] = nil
    else
      local ty = type(x)
      if ty == "table" then
        plain_table(x)
      elseif integers and ty == "number" then
        t[k] = tointeger(x) or x
      end
    end
  end
end

--- A decoded JSON value as plain Lua: null becomes nil (no cjson.null
-- reaches users) and whole numbers become integers on Lua 5.3+ (cjson
-- decodes floats). Changes tables in place.
local function plain(v)
  if v == null then return nil end
  local t = type(v)
  if t == "number" then return tointeger(v) or v end
  if t == "table" then plain_table(v) end
  return v
end
M.plain = plain
M.null = null

--- application/json, with or without parameters (the real server sends
-- none; a proxy may add a charset), but not application/json-seq and such.
function M.is_json(ctype)
  if ctype == "application/json" then return true end -- the usual case, cheaply
  if ctype == nil then return false end
  ctype = ctype:lower()
  return ctype:match("^%s*application/json%s*$") ~= nil or ctype:match("^%s*application/json%s*;") ~= nil
end

--- A finite number as the server should read it: whole numbers without
-- exponent or ".0" (also on Lua 5.1, where all numbers are floats),
-- others in the fewest digits that read back the same. nil for NaN and
-- infinities.
function M.number_text(v)
  if v ~= v or v == huge or v == -huge then return nil end
  local i = tointeger(v)
  if i and math.type then return tostring(i) end
  if v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then return format("%.0f", v) end
  for digits = 15, 17 do
    local text = format("%." .. digits .. "g", v)
    if tonumber(text) == v then return text end
  end
end

-- JSON string escapes: quote, backslash and control characters. "/" is
-- left alone (cjson would send "\/"; Go's encoder does not).
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for c = 0, 31 do
  local ch = string.char(c)
  ESCAPES[ch] = ESCAPES[ch] or format("\\u%04x", c)
end
ESCAPES["\127"] = "\\u007f"

--- A string as a JSON string literal.
function M.string(s)
  return '"' .. s:gsub('[%c"\\]', ESCAPES) .. '"'
end

--- Whether s is valid UTF-8 (the server's JSON decoder would replace
-- anything else with U+FFFD).
function M.is_utf8(s)
  if not s:find("[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
                or (c >= 0xF0 and c <= 0xF4) and 4 or nil
    if not len or i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local cc = byte(s, k)
      if cc < 0x80 or cc > 0xBF then return false end
    end
    local c2 = byte(s, i + 1)
    if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F) or (c == 0xF0 and c2 < 0x90)
       or (c == 0xF4 and c2 > 0x8F) then
      return false -- overlong, surrogate, or above U+10FFFF
    end
    i = i + len
  end
  return true
end

--- A JSON value of Lua's for a general request body (`client:request`):
-- cjson's encoding (tables with keys 1..n are arrays). nil and why when
-- it cannot be encoded.
function M.encode(v) return json.encode(v) end

-- RFC 3986 unreserved characters stay as they are; everything else is
-- %XX.
local function pct(c) return format("%%%02X", byte(c)) end

function M.percent(s)
  return (s:gsub("[^%w%-%._~]", pct))
end

--- A query string (without "?") from an ordered list of {name, value}
-- pairs whose values are already strings.
function M.query(pairs_list)
  local parts = {}
  for i, p in ipairs(pairs_list) do
    parts[i] = M.percent(p[1]) .. "=" .. M.percent(p[2])
  end
  return concat(parts, "&")
end

return M
