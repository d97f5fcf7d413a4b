-- Go-faithful JSON for the stub (contract §1.4, §2.1, §2.5).
--
-- Why not cjson alone: Go's json.Decoder reads only the first value and
-- ignores trailing bytes, matches struct fields case-insensitively, keeps
-- integer literals exact, and replaces invalid UTF-8 by U+FFFD; Go's encoder
-- keeps struct field order, sorts map keys, HTML-escapes <>& and does not
-- escape '/'. cjson does none of that, so this module parses into a small
-- tagged tree and encodes by hand.
local byte, char, sub, find = string.byte, string.char, string.sub, string.find
local concat, sort = table.concat, table.sort

local M = {}

-- ---------------------------------------------------------------- decoding

-- Replace invalid UTF-8 sequences by U+FFFD, one per bad byte, like Go's
-- utf8.DecodeRune loop in encoding/json unquote (rejects overlongs,
-- surrogates and code points above U+10FFFF).
local function sanitize_utf8(s)
  if not find(s, "[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  local function cont(j, lo, hi)
    local b = byte(s, j)
    return b and b >= (lo or 0x80) and b <= (hi or 0xBF)
  end
  while i <= n do
    local c, len = byte(s, i), 0
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = cont(i + 1) and 2 or 0
    elseif c >= 0xE0 and c <= 0xEF then
      local lo, hi = (c == 0xE0) and 0xA0 or 0x80, (c == 0xED) and 0x9F or 0xBF
      len = (cont(i + 1, lo, hi) and cont(i + 2)) and 3 or 0
    elseif c >= 0xF0 and c <= 0xF4 then
      local lo, hi = (c == 0xF0) and 0x90 or 0x80, (c == 0xF4) and 0x8F or 0xBF
      len = (cont(i + 1, lo, hi) and cont(i + 2) and cont(i + 3)) and 4 or 0
    end
    if len == 0 then out[#out + 1] = "\239\191\189"; i = i + 1
    else out[#out + 1] = sub(s, i, i + len - 1); i = i + len end
  end
  return concat(out)
end
M.sanitize_utf8 = sanitize_utf8

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
              0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local ESC = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

-- Parser state is passed explicitly; errors are thrown as the strings
-- "eof" (input ended inside the value) or "syntax" and caught in decode_first.
local parse_value

local function skip_ws(s, i)
  local _, e = find(s, "^[ \t\n\r]*", i)
  return e + 1
end

local function parse_string(s, i) -- s[i] == '"'
  local parts, j = {}, i + 1
  while true do
    local a, _, c = find(s, '(["\\%z\1-\31])', j)
    if not a then error("eof", 0) end
    parts[#parts + 1] = sub(s, j, a - 1)
    if c == '"' then return sanitize_utf8(concat(parts)), a + 1 end
    if c ~= "\\" then error("syntax", 0) end -- raw control character
    local e = sub(s, a + 1, a + 1)
    if e == "" then error("eof", 0) end
    if e == "u" then
      local hex = sub(s, a + 2, a + 5)
      if #hex < 4 and find(hex, "^%x*$") then error("eof", 0) end
      if not find(hex, "^%x%x%x%x$") then error("syntax", 0) end
      local cp, nxt = tonumber(hex, 16), a + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = sub(s, nxt, nxt + 5):match("^\\u(%x%x%x%x)$")
        lo = lo and tonumber(lo, 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp, nxt = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00), nxt + 6
        else cp = 0xFFFD end
      elseif cp >= 0xDC00 and cp <= 0xDFFF then cp = 0xFFFD end
      parts[#parts + 1] = utf8_char(cp)
      j = nxt
    else
      if not ESC[e] then error("syntax", 0) end
      parts[#parts + 1] = ESC[e]
      j = a + 2
    end
  end
end

-- Number grammar of RFC 8259, as Go's scanner checks it. Hitting the end
-- of the input where a digit must follow means the value is incomplete.
local function parse_number(s, i)
  local j = i
  local function digits(required)
    local a, e = find(s, "^%d+", j)
    if not a then
      if required then error(j > #s and "eof" or "syntax", 0) end
      return
    end
    j = e + 1
  end
  if sub(s, j, j) == "-" then j = j + 1 end
  if sub(s, j, j) == "0" then j = j + 1 else digits(true) end
  if sub(s, j, j) == "." then j = j + 1; digits(true) end
  if find(s, "^[eE]", j) then
    j = j + 1
    if find(s, "^[-+]", j) then j = j + 1 end
    digits(true)
  end
  -- A top-level number needs one more byte to be known complete; at the end
  -- of a size-truncated input it is incomplete (see M.decode_first callers).
  if j > #s then error("eof", 0) end
  return { kind = "number", raw = sub(s, i, j - 1) }, j
end

parse_value = function(s, i, depth)
  i = skip_ws(s, i)
  local c = sub(s, i, i)
  if c == "" then error("eof", 0) end
  if depth > 10000 then error("syntax", 0) end -- Go's maxNestingDepth
  if c == "{" then
    local node = { kind = "object", keys = {}, vals = {} }
    i = skip_ws(s, i + 1)
    if sub(s, i, i) == "}" then return node, i + 1 end
    while true do
      if sub(s, i, i) == "" then error("eof", 0) end
      if sub(s, i, i) ~= '"' then error("syntax", 0) end
      local key
      key, i = parse_string(s, i)
      i = skip_ws(s, i)
      local d = sub(s, i, i)
      if d == "" then error("eof", 0) end
      if d ~= ":" then error("syntax", 0) end
      local v
      v, i = parse_value(s, i + 1, depth + 1)
      node.keys[#node.keys + 1], node.vals[#node.vals + 1] = key, v
      i = skip_ws(s, i)
      d = sub(s, i, i)
      if d == "}" then return node, i + 1 end
      if d == "" then error("eof", 0) end
      if d ~= "," then error("syntax", 0) end
      i = skip_ws(s, i + 1)
    end
  elseif c == "[" then
    local node = { kind = "array", items = {} }
    i = skip_ws(s, i + 1)
    if sub(s, i, i) == "]" then return node, i + 1 end
    while true do
      local v
      v, i = parse_value(s, i, depth + 1)
      node.items[#node.items + 1] = v
      i = skip_ws(s, i)
      local d = sub(s, i, i)
      if d == "]" then return node, i + 1 end
      if d == "" then error("eof", 0) end
      if d ~= "," then error("syntax", 0) end
      i = i + 1
    end
  elseif c == '"' then
    local v
    v, i = parse_string(s, i)
    return { kind = "string", value = v }, i
  elseif c == "-" or find(c, "%d") then
    return parse_number(s, i)
  end
  for word, kind in pairs({ ["true"] = "bool", ["false"] = "bool", null = "null" }) do
    local got = sub(s, i, i + #word - 1)
    if got == word then return { kind = kind, value = (word == "true") }, i + #word end
    if #got < #word and sub(word, 1, #got) == got and i + #got - 1 == #s then error("eof", 0) end
  end
  error("syntax", 0)
end

--- Decode the first JSON value of `s`, like Go's json.Decoder.Decode.
-- Returns the tagged tree, or nil and "eof" (input ended before the value
-- did) or "syntax". Trailing bytes after the value are ignored (§2.1).
function M.decode_first(s)
  local ok, node = pcall(parse_value, s, 1, 0)
  if ok then return node end
  if node ~= "eof" and node ~= "syntax" then error(node, 0) end
  return nil, node
end

-- Is a number literal a valid Go int64 (strconv.ParseInt base 10)?
local function is_int64(raw)
  local neg, digits = raw:match("^(-?)(%d+)$")
  if not digits then return false end
  if #digits < 19 then return true end
  if #digits > 19 then return false end
  return digits <= (neg == "-" and "9223372036854775808" or "9223372036854775807")
end

-- The model.Job struct fields and their Go kinds [model-job].
local JOB_FIELDS = {
  { "id", "string" }, { "type", "string" }, { "priority", "int" }, { "create_at", "int" },
  { "start_at", "int" }, { "last_activity_at", "int" }, { "status", "string" },
  { "progress", "int" }, { "data", "map" },
}

-- Go matches a key to a field exactly first, then case-insensitively.
local function field_for(key)
  for _, f in ipairs(JOB_FIELDS) do if f[1] == key then return f end end
  local lk = key:lower()
  for _, f in ipairs(JOB_FIELDS) do if f[1] == lk then return f end end
end

--- Decode a tagged tree into a Job the way json.Unmarshal(&model.Job) would.
-- Returns {type=..., data=map|nil} or nil when Go would report an error
-- (type mismatch, int overflow, non-object top level). `null` anywhere is
-- a no-op, as in Go.
function M.to_job(node)
  local job = { type = "", data = nil }
  if node.kind == "null" then return job end
  if node.kind ~= "object" then return nil end
  local bad = false -- Go keeps decoding after a type error and reports it at the end
  for n, key in ipairs(node.keys) do
    local f, v = field_for(key), node.vals[n]
    if f and v.kind ~= "null" then
      if f[2] == "string" then
        if v.kind ~= "string" then bad = true elseif f[1] == "type" then job.type = v.value end
      elseif f[2] == "int" then
        if v.kind ~= "number" or not is_int64(v.raw) then bad = true end
      elseif v.kind ~= "object" then
        bad = true
      else
        job.data = job.data or {} -- a second "data" key merges into the first map
        for m, k in ipairs(v.keys) do
          local e = v.vals[m]
          if e.kind == "string" then job.data[k] = e.value
          elseif e.kind == "null" then job.data[k] = "" -- null into a string is a no-op on the zero value
          else bad = true end
        end
      end
    elseif f and f[1] == "data" then
      job.data = nil -- "data":null sets the map to nil
    end
  end
  if bad then return nil end
  return job
end

-- ---------------------------------------------------------------- encoding

local ESCAPE = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
  ['\b'] = '\\b', ['\f'] = '\\f', -- short forms since Go 1.22 *(inferred: 9.x builds use Go >= 1.22)*
  ['<'] = '\\u003c', ['>'] = '\\u003e', ['&'] = '\\u0026',
}

--- Encode a Lua string as Go's encoding/json does (HTML-safe, '/' kept).
function M.string(s)
  s = s:gsub('[%z\1-\31"\\<>&]', function(c)
    return ESCAPE[c] or string.format("\\u%04x", byte(c))
  end)
  s = s:gsub("\226\128\168", "\\u2028"):gsub("\226\128\169", "\\u2029")
  return '"' .. s .. '"'
end

local function int(n) return string.format("%d", n) end

--- Encode a map[string]string (sorted keys, as Go does) or nil as null.
function M.string_map(m)
  if m == nil then return "null" end
  local keys = {}
  for k in pairs(m) do keys[#keys + 1] = k end
  sort(keys)
  for n, k in ipairs(keys) do keys[n] = M.string(k) .. ":" .. M.string(m[k]) end
  return "{" .. concat(keys, ",") .. "}"
end

--- Encode a job in model.Job field order (§2.5).
function M.job(j)
  return concat({
    '{"id":', M.string(j.id), ',"type":', M.string(j.type), ',"priority":', int(j.priority),
    ',"create_at":', int(j.create_at), ',"start_at":', int(j.start_at),
    ',"last_activity_at":', int(j.last_activity_at), ',"status":', M.string(j.status),
    ',"progress":', int(j.progress), ',"data":', M.string_map(j.data), "}",
  })
end

--- Encode an AppError (§1.4): request_id and status_code are omitempty.
function M.app_error(id, message, detail, request_id, status)
  local out = { '{"id":', M.string(id), ',"message":', M.string(message),
                ',"detailed_error":', M.string(detail or "") }
  if request_id and request_id ~= "" then out[#out + 1] = ',"request_id":' .. M.string(request_id) end
  if status and status ~= 0 then out[#out + 1] = ',"status_code":' .. int(status) end
  out[#out + 1] = "}"
  return concat(out)
end

return M
