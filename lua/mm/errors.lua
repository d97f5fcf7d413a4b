--- The error type of `mm`: what a failed call returns after `nil`.
--
-- An error is a table with stable fields and a one-line `tostring`. It is
-- made from an HTTP answer (`kind = "http"`), from what libcurl reports, or
-- by the library itself (`"canceled"`, `"wait_timeout"`, `"job"`). Every
-- text a server or libcurl put into it is scrubbed of the client's token
-- in one place (`scrub_fields`).
-- @module mm.errors
local codec = require "mm.codec"

local concat = table.concat
local tointeger = codec.tointeger

local M = {}

local Error = { __name = "mm.error" }
Error.__index = Error
M.Error = Error

--- The fields an error may carry, in the order tools print them.
M.FIELDS = { "kind", "status", "id", "message", "detailed_error", "request_id", "status_code",
             "curl_code", "attempts", "method", "path", "retry_after", "location", "body", "job" }

-- One line: what failed, the HTTP status, Mattermost's error id and
-- message, and where.
function Error.__tostring(e)
  local out = { "mm:" }
  if e.kind == "http" then
    out[#out + 1] = "HTTP " .. tostring(e.status)
    if e.id and e.id ~= "" then out[#out + 1] = e.id end
  else
    out[#out + 1] = tostring(e.kind)
    if e.status then out[#out + 1] = "(HTTP " .. tostring(e.status) .. ")" end
  end
  out[#out] = out[#out] .. ":"
  if e.message and e.message ~= "" then out[#out + 1] = tostring(e.message) end
  local where = {}
  if e.method and e.path then where[#where + 1] = e.method .. " " .. e.path end
  if e.request_id and e.request_id ~= "" then where[#where + 1] = "request_id " .. e.request_id end
  if type(e.attempts) == "number" and e.attempts > 1 then where[#where + 1] = e.attempts .. " attempts" end
  if #where > 0 then out[#out + 1] = "(" .. concat(where, ", ") .. ")" end
  return (concat(out, " "):gsub("%c+", " "))
end

--- Makes an error object of a table of fields (taken over, not copied).
function M.new(fields) return setmetatable(fields, Error) end

function M.is_error(v) return getmetatable(v) == Error end

--- An error object with the fields of `t` (a plain table, e.g. one that
-- crossed from another Lua state); other keys are dropped.
function M.from(t)
  local e = {}
  if type(t) == "table" then
    for _, k in ipairs(M.FIELDS) do e[k] = t[k] end
  end
  return setmetatable(e, Error)
end

--- A plain copy of an error's fields (for JSON, or another Lua state).
function M.fields(e)
  local t = {}
  for _, k in ipairs(M.FIELDS) do t[k] = e[k] end
  return t
end

-- Text of a non-JSON body for a message: an HTML page's title, otherwise
-- the first line, cut short.
local function body_text(body)
  local title = body:match("<[Tt][Ii][Tt][Ll][Ee]>%s*(.-)%s*</")
  local text = title or body:match("^%s*([^\r\n]*)") or ""
  if #text > 200 then text = text:sub(1, 200) .. "..." end
  return text
end

local function str(v) if type(v) == "string" then return v end end

-- A header's number of seconds, if it is a sane one (a server can send
-- anything: "-1", "1e999", a date).
local function seconds(v)
  local n = tonumber(v)
  if n and n >= 0 and n <= 86400 then return n end
end
M.seconds = seconds

--- The error for an answer with a status >= 300 (a response table of
-- `mm.core`). The body is an AppError when the server made it; the 429
-- of the rate limiter and proxies' pages are not.
function M.http(resp)
  local status, body = resp.status, resp.body or ""
  local headers = codec.parse_headers(resp.head)
  local e = { kind = "http", status = status, request_id = headers["x-request-id"] }
  local app = codec.is_json(resp.content_type) and codec.decode(body)
  if type(app) == "table" and type(app.id) == "string" then
    e.id = app.id
    e.message = str(app.message)
    e.detailed_error = str(app.detailed_error)
    e.request_id = str(app.request_id) or e.request_id
    e.status_code = tointeger(tonumber(app.status_code))
  else
    e.body = body:sub(1, 1024)
    local text = body_text(body)
    e.message = text ~= "" and text or nil
  end
  local location = headers.location
  if status >= 300 and status < 400 and location then
    e.location = location
    e.message = "redirect to " .. location .. " not followed"
  end
  if status == 429 or status == 503 then
    e.retry_after = seconds(headers["retry-after"]) or seconds(headers["x-ratelimit-reset"])
  end
  return setmetatable(e, Error)
end

--- The error for a 2xx answer that is not what the operation returns.
function M.decode(resp, why)
  return setmetatable({
    kind = "decode", status = resp.status, request_id = codec.parse_headers(resp.head)["x-request-id"],
    message = why, body = (resp.body or ""):sub(1, 1024),
  }, Error)
end

--- A function that replaces the token in a string by "[redacted]".
-- A token of 16 characters or more is replaced wherever it occurs (a
-- server echoes requests in odd places); a shorter one only where it
-- stands alone (not touching a letter or digit), so that scrubbing a
-- short test token never garbles other text ("api.context..." with a
-- token "c").
function M.scrubber(token)
  local whole_only = #token < 16
  local find, sub = string.find, string.sub
  return function(s)
    if type(s) ~= "string" then return s end
    local i, j = find(s, token, 1, true)
    while i do
      if whole_only and (find(sub(s, i - 1, i - 1), "^%w") or find(sub(s, j + 1, j + 1), "^%w")) then
        i, j = find(s, token, i + 1, true)
      else
        s = sub(s, 1, i - 1) .. "[redacted]" .. sub(s, j + 1)
        i, j = find(s, token, i + 10, true)
      end
    end
    return s
  end
end

local SCRUBBED = { "id", "message", "detailed_error", "body", "location", "request_id", "path" }

--- Scrubs every text field of an error that a server or libcurl filled.
function M.scrub_fields(e, scrub)
  for _, k in ipairs(SCRUBBED) do e[k] = scrub(e[k]) end
  return e
end

return M
