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
  local ok, node, stop = pcall(parse_value, s, 1, 0)
  if ok then return node, nil, stop end
  if node ~= "eof" and node ~= "syntax" then error(node, 0) end
  return nil, node
end

--- Decode `s` as exactly one JSON value, like Go's json.Unmarshal: only
-- white space may follow it. Returns the tagged tree or nil, "eof"|"syntax".
function M.decode_all(s)
  local node, err, stop = M.decode_first(s)
  if not node then return nil, err end
  if not find(s, "^[ \t\n\r]*$", stop) then return nil, "syntax" end
  return node
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
local function field_for(key, fields)
  fields = fields or JOB_FIELDS
  for _, f in ipairs(fields) do if f[1] == key then return f end end
  local lk = key:lower()
  for _, f in ipairs(fields) do if f[1] == lk then return f end end
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

-- Does a node fit Go's interface{} (map[string]any, []any, float64...)?
-- Only a number beyond float64 fails.
local function fits_any(node)
  if node.kind == "number" then
    local f = tonumber(node.raw)
    return f > -math.huge and f < math.huge
  end
  for _, v in ipairs(node.vals or node.items or {}) do
    if not fits_any(v) then return false end
  end
  return true
end

-- Decode one field value of Go kind `kind`; nil, "bad" on a type error.
local function field_value(kind, v)
  if kind == "string" then
    if v.kind == "string" then return v.value end
  elseif kind == "int" then
    if v.kind == "number" and is_int64(v.raw) then return tonumber(v.raw) end
  elseif kind == "bool" then
    if v.kind == "bool" then return v.value end
  elseif kind == "object" then -- a map[string]any or a struct pointer: kept as the node
    if v.kind == "object" and fits_any(v) then return v end
  elseif kind == "array" then -- a slice of struct pointers: objects (or null) only
    if v.kind == "array" then
      for _, item in ipairs(v.items) do
        if item.kind ~= "object" and item.kind ~= "null" then return nil, "bad" end
      end
      if fits_any(v) then return v end
    end
  end
  return nil, "bad"
end

--- Decode a tagged tree into a Go struct the way json.Unmarshal would.
-- `fields` lists {json name, kind}: "string", "int" (int64), "bool",
-- "object", "array" (kept as tagged nodes). Returns name -> value for the
-- keys present (null keeps the zero value: the key is absent), or nil when
-- Go reports an error (a non-object, a type mismatch).
function M.to_struct(node, fields)
  local out = {}
  if node.kind == "null" then return out end
  if node.kind ~= "object" then return nil end
  local bad = false -- Go decodes on after a type error and reports it at the end
  for n, key in ipairs(node.keys) do
    local f, v = field_for(key, fields), node.vals[n]
    if f and v.kind ~= "null" then
      local value, err = field_value(f[2], v)
      if err then bad = true else out[f[1]] = value end
    end
  end
  if bad then return nil end
  return out
end

-- model.Command [command-model], in field order.
M.COMMAND_FIELDS = {
  { "id", "string" }, { "token", "string" }, { "create_at", "int" }, { "update_at", "int" },
  { "delete_at", "int" }, { "creator_id", "string" }, { "team_id", "string" }, { "trigger", "string" },
  { "method", "string" }, { "username", "string" }, { "icon_url", "string" }, { "auto_complete", "bool" },
  { "auto_complete_desc", "string" }, { "auto_complete_hint", "string" }, { "display_name", "string" },
  { "description", "string" }, { "url", "string" }, { "plugin_id", "string" },
  { "autocomplete_data", "object" }, { "autocomplete_icon_data", "string" },
}
-- model.CommandArgs [command-args]; SiteURL, T and the mention maps are json:"-".
M.COMMAND_ARGS_FIELDS = {
  { "user_id", "string" }, { "channel_id", "string" }, { "team_id", "string" }, { "root_id", "string" },
  { "parent_id", "string" }, { "trigger_id", "string" }, { "command", "string" },
}
-- model.CommandMoveRequest *(fork only: model/command_request.go)*.
M.COMMAND_MOVE_FIELDS = { { "team_id", "string" } }
-- model.CommandResponse [command-response].
M.COMMAND_RESPONSE_FIELDS = {
  { "response_type", "string" }, { "text", "string" }, { "username", "string" }, { "channel_id", "string" },
  { "icon_url", "string" }, { "type", "string" }, { "props", "object" }, { "goto_location", "string" },
  { "trigger_id", "string" }, { "skip_slack_parsing", "bool" }, { "attachments", "array" },
  { "extra_responses", "array" },
}

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

-- Go's strconv.FormatFloat(f, 'f' or 'e', -1, 64) as encoding/json uses
-- it for a float64: the shortest digits that read back as f; 'e' form
-- below 1e-6 or from 1e21 on, with "e-07" shortened to "e-7".
local function go_float(raw)
  local f = tonumber(raw)
  if f == 0 then return raw:sub(1, 1) == "-" and "-0" or "0" end
  local p = 1
  while p < 17 and tonumber(string.format("%." .. p .. "g", f)) ~= f do p = p + 1 end
  local sign, d, frac, e = string.format("%." .. (p - 1) .. "e", f):match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits, exp = (d .. frac):gsub("0+$", ""), tonumber(e)
  if digits == "" then digits = "0" end
  local abs = math.abs(f)
  if abs < 1e-6 or abs >= 1e21 then
    local m = digits:sub(1, 1) .. (#digits > 1 and ("." .. digits:sub(2)) or "")
    local es = string.format("%02d", math.abs(exp))
    if exp < 0 and es:sub(1, 1) == "0" then es = es:sub(2) end
    return sign .. m .. "e" .. (exp < 0 and "-" or "+") .. es
  end
  if exp < 0 then return sign .. "0." .. string.rep("0", -exp - 1) .. digits end
  if #digits <= exp + 1 then return sign .. digits .. string.rep("0", exp + 1 - #digits) end
  return sign .. digits:sub(1, exp + 1) .. "." .. digits:sub(exp + 2)
end

--- Encode a tagged tree as Go re-encodes an interface{} value it decoded:
-- objects as maps (keys sorted), numbers as float64.
function M.value(node)
  local k = node.kind
  if k == "string" then return M.string(node.value) end
  if k == "number" then return go_float(node.raw) end
  if k == "bool" then return tostring(node.value) end
  if k == "null" then return "null" end
  local out = {}
  if k == "array" then
    for n, v in ipairs(node.items) do out[n] = M.value(v) end
    return "[" .. concat(out, ",") .. "]"
  end
  local last, keys = {}, {} -- a repeated key: the last value wins
  for n, key in ipairs(node.keys) do
    if not last[key] then keys[#keys + 1] = key end
    last[key] = node.vals[n]
  end
  sort(keys)
  for n, key in ipairs(keys) do out[n] = M.string(key) .. ":" .. M.value(last[key]) end
  return "{" .. concat(out, ",") .. "}"
end

--- Encode a model.Command in field order [command-model]; autocomplete_data
-- and autocomplete_icon_data are omitempty and never stored, so left out.
function M.command(c)
  return concat({
    '{"id":', M.string(c.id), ',"token":', M.string(c.token), ',"create_at":', int(c.create_at),
    ',"update_at":', int(c.update_at), ',"delete_at":', int(c.delete_at),
    ',"creator_id":', M.string(c.creator_id), ',"team_id":', M.string(c.team_id),
    ',"trigger":', M.string(c.trigger), ',"method":', M.string(c.method),
    ',"username":', M.string(c.username), ',"icon_url":', M.string(c.icon_url),
    ',"auto_complete":', tostring(c.auto_complete == true),
    ',"auto_complete_desc":', M.string(c.auto_complete_desc), ',"auto_complete_hint":', M.string(c.auto_complete_hint),
    ',"display_name":', M.string(c.display_name), ',"description":', M.string(c.description),
    ',"url":', M.string(c.url), ',"plugin_id":', M.string(c.plugin_id), "}",
  })
end

--- Encode a list of commands ([] when empty).
function M.commands(list)
  local out = {}
  for n, c in ipairs(list) do out[n] = M.command(c) end
  return "[" .. concat(out, ",") .. "]"
end

local function node_or_null(node) return node and M.value(node) or "null" end

--- Encode a model.CommandResponse [command-response]: all 12 keys,
-- snake_case. props/attachments are tagged nodes (or nil: null);
-- extra_responses a list of responses (or nil).
function M.command_response(r)
  local extra = "null"
  if r.extra_responses then
    local out = {}
    for n, x in ipairs(r.extra_responses) do out[n] = M.command_response(x) end
    extra = "[" .. concat(out, ",") .. "]"
  end
  return concat({
    '{"response_type":', M.string(r.response_type or ""), ',"text":', M.string(r.text or ""),
    ',"username":', M.string(r.username or ""), ',"channel_id":', M.string(r.channel_id or ""),
    ',"icon_url":', M.string(r.icon_url or ""), ',"type":', M.string(r.type or ""),
    ',"props":', node_or_null(r.props), ',"goto_location":', M.string(r.goto_location or ""),
    ',"trigger_id":', M.string(r.trigger_id or ""), ',"skip_slack_parsing":', tostring(r.skip_slack_parsing == true),
    ',"attachments":', node_or_null(r.attachments), ',"extra_responses":', extra, "}",
  })
end

--- Encode []model.AutocompleteSuggestion: no json tags, so the Go field
-- names are the keys (families §3.5).
function M.suggestions(list)
  local out = {}
  for n, x in ipairs(list) do
    out[n] = concat({ '{"Complete":', M.string(x.complete), ',"Suggestion":', M.string(x.suggestion),
                      ',"Hint":', M.string(x.hint), ',"Description":', M.string(x.description),
                      ',"IconData":', M.string(x.icon_data or ""), "}" })
  end
  return "[" .. concat(out, ",") .. "]"
end

return M
