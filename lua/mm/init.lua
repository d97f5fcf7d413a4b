--- A client for the Mattermost REST API v4.
--
-- `mm` knows Mattermost: endpoints, URLs, JSON, argument checks, retries
-- and the shape of results and errors. The HTTP work is done in C by
-- `mm.core` over libcurl.
--
-- Bad arguments raise at once and send nothing. Everything the world does
-- wrong (an HTTP error, a timeout, a refused connection, a body that is
-- not JSON) returns `nil, err`, where `err` is an error object (see
-- `mm.is_error`) with stable fields and a one-line `tostring`.
--
-- @module mm
-- @usage
-- local mm = require "mm"
-- local job = assert(mm.create_job{ type = "active_users" })
-- print(job.id, job.status)
local core = require "mm.core"
local json = require("cjson.safe").new() -- our own settings, never the caller's

local mm = {
  _VERSION = "0.1.0",
}

local tointeger = math.tointeger or function(x) return x end
local concat, sort = table.concat, table.sort
local floor, random, huge = math.floor, math.random, math.huge
local getenv = os.getenv

local USER_AGENT = "lua-mattermost/" .. mm._VERSION .. " (libcurl/" .. core.curl_version .. ")"
local JSON_BODY_HEADERS = { "Content-Type: application/json" }
local TERMINAL = { success = true, error = true, canceled = true, warning = true }

-- Ids are Mattermost NewId()s: 26 characters, lower-case letters and
-- digits (contract 1.5). Validating them strictly also means an id never
-- needs escaping when it becomes a URL path segment.
local function id_problem(id)
  if type(id) ~= "string" then
    return "id expected, got " .. (id == nil and "no value" or type(id))
  end
  if #id ~= 26 then
    return "id must be 26 characters, got " .. #id
  end
  if id:find("[^a-z0-9]") then
    return "id must contain only lower-case letters and digits"
  end
end

local find = string.find

-- The usual case in one call; id_problem says what is wrong otherwise.
local function is_id(id)
  return type(id) == "string" and #id == 26 and find(id, "^[a-z0-9]+$") ~= nil
end

-- Argument problems are found by functions that return a message; only
-- the public function raises it (error level 2), so the message points at
-- the caller's line however deep the check was made.
local function argmsg(fname, n, msg)
  return ("bad argument #%d to '%s' (%s)"):format(n, fname, msg)
end

-- ------------------------------------------------------------------------
-- Errors

local Error = { __name = "mm.error" }
Error.__index = Error

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
  local text = out[#out] .. ":"
  out[#out] = text
  if e.message and e.message ~= "" then out[#out + 1] = e.message end
  local where = {}
  if e.method and e.path then where[#where + 1] = e.method .. " " .. e.path end
  if e.request_id and e.request_id ~= "" then where[#where + 1] = "request_id " .. e.request_id end
  if e.attempts and e.attempts > 1 then where[#where + 1] = e.attempts .. " attempts" end
  if #where > 0 then out[#out + 1] = "(" .. concat(where, ", ") .. ")" end
  return (concat(out, " "):gsub("[%c]+", " "))
end

local function new_error(fields)
  return setmetatable(fields, Error)
end

--- Tells whether a value is an `mm` error object.
-- Error objects have these fields, any of which may be nil:
-- `kind` (`"http"`, `"timeout"`, `"connect_timeout"`, `"connect"`, `"tls"`,
-- `"network"`, `"too_large"`, `"decode"`, `"protocol"`, `"url"`, `"job"`,
-- `"curl"`), `status` (HTTP status), `id`, `message`, `detailed_error`,
-- `request_id`, `status_code` (from Mattermost's error body), `body` (a
-- non-JSON error body, cut to 1 KiB), `curl_code`, `attempts`, `method`,
-- `path`, `retry_after` (seconds), `location` (of a 3xx), `job`.
-- @param v any value
-- @treturn boolean
-- @usage
-- local token, err = c:regen_token(id)
-- if mm.is_error(err) and err.status == 404 then print("no such command") end
function mm.is_error(v)
  return getmetatable(v) == Error
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

-- ------------------------------------------------------------------------
-- Responses

-- JSON values to plain Lua: null becomes nil (no cjson.null reaches users)
-- and whole numbers become integers on Lua 5.3+ (cjson 2.1 decodes floats).
local function plain(v)
  if v == json.null then return nil end
  local t = type(v)
  if t == "number" then return tointeger(v) or v end
  if t == "table" then
    for k, x in pairs(v) do v[k] = plain(x) end
  end
  return v
end

-- application/json, with or without parameters (the real server sends
-- none; a proxy may add a charset), but not application/json-seq and such.
local function is_json(ctype)
  if ctype == "application/json" then return true end -- the usual case, cheaply
  if ctype == nil then return false end
  ctype = ctype:lower()
  return ctype:match("^%s*application/json%s*$") ~= nil or ctype:match("^%s*application/json%s*;") ~= nil
end

-- A response is status, body, content type and the raw header block; the
-- header table is made only when an error or a debug line needs it.
local parse_headers = core.parse_headers

-- The error for an HTTP status >= 300. The body is an AppError when the
-- server made it; the 429 of the rate limiter and proxies' pages are not.
local function http_error(status, body, ctype, head)
  local headers = parse_headers(head)
  local e = { kind = "http", status = status, request_id = headers["x-request-id"] }
  local app = is_json(ctype) and json.decode(body)
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
  return new_error(e)
end

local function decode_error(status, body, head, why)
  return new_error{
    kind = "decode", status = status, request_id = parse_headers(head)["x-request-id"],
    message = why, body = body:sub(1, 1024),
  }
end

-- A 2xx body as a JSON object (still with cjson's nulls and floats), or
-- nil and a decode error.
local function success_object(status, body, ctype, head)
  if not is_json(ctype) then
    return nil, decode_error(status, body, head, "expected application/json, got " .. tostring(ctype))
  end
  local v, why = json.decode(body)
  if type(v) ~= "table" or v[1] ~= nil then
    return nil, decode_error(status, body, head, "invalid JSON object: " .. tostring(why or "not an object"))
  end
  return v
end

-- ------------------------------------------------------------------------
-- Operations: how each endpoint builds its request and reads its answer.
-- Single calls and batches share these.

local function job_result(status, body, ctype, head)
  local job, err = success_object(status, body, ctype, head)
  if job and type(job.id) ~= "string" then
    return nil, decode_error(status, body, head, "response is not a job")
  end
  return plain(job), err
end

-- A number as the server should see it: whole numbers without exponent or
-- ".0" (also on Lua 5.1, where all numbers are floats), others in the
-- fewest digits that read back the same.
local function number_text(v)
  local i = tointeger(v)
  if i and math.type then return tostring(i) end
  if v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then return ("%.0f"):format(v) end
  for digits = 15, 17 do
    local text = ("%." .. digits .. "g"):format(v)
    if tonumber(text) == v then return text end
  end
end

-- The `data` of a job as JSON: string keys to string values (the server
-- decodes a map[string]string, contract 2.1); numbers and booleans are
-- converted, anything else is the caller's mistake. Returns JSON or nil, why.
local function encode_data(data)
  if type(data) ~= "table" then
    return nil, "field 'data' must be a table, got " .. type(data)
  end
  local keys, values, parts = {}, {}, {}
  for k, v in pairs(data) do
    if type(k) ~= "string" then
      return nil, "field 'data' must have string keys, got a " .. type(k) .. " key"
    end
    local tv = type(v)
    if tv == "number" then
      if v ~= v or v == huge or v == -huge then
        return nil, "field 'data." .. k .. "' must be a finite number"
      end
      v = number_text(v)
    elseif tv == "boolean" then
      v = tostring(v)
    elseif tv ~= "string" then
      return nil, "field 'data." .. k .. "' must be a string, number or boolean, got " .. tv
    end
    keys[#keys + 1] = k
    values[k] = v
  end
  sort(keys) -- a stable body: the same table always encodes the same way
  for i, k in ipairs(keys) do
    parts[i] = json.encode(k) .. ":" .. json.encode(values[k])
  end
  return "{" .. concat(parts, ",") .. "}"
end

local function typename(v)
  return v == nil and "no value" or type(v)
end

-- Each operation: `build(root, arg)` returns the URL and body (or nil,
-- why) and `result(status, body, ctype, head)` reads a 2xx answer into the
-- value, or nil and an error.
local OPS = {
  create_job = {
    method = "POST", idempotent = false,
    build = function(root, job)
      if type(job) ~= "table" then
        return nil, "table expected, got " .. typename(job)
      end
      for k in pairs(job) do
        if k ~= "type" and k ~= "data" then
          return nil, "unknown field '" .. tostring(k) .. "' (expected 'type' and 'data')"
        end
      end
      if type(job.type) ~= "string" or job.type == "" then
        return nil, "field 'type' must be a non-empty string"
      end
      local data, why = "{}"
      if job.data ~= nil then
        data, why = encode_data(job.data)
        if not data then return nil, why end
      end
      return root .. "/jobs", '{"type":' .. json.encode(job.type) .. ',"data":' .. data .. "}"
    end,
    result = job_result,
  },
  get_job = {
    method = "GET", idempotent = true,
    build = function(root, id)
      if not is_id(id) then return nil, id_problem(id) end
      return root .. "/jobs/" .. id
    end,
    result = job_result,
  },
  regen_token = {
    -- PUT is idempotent in HTTP's sense: a retry after a lost answer
    -- regenerates again, and the token returned is the one in force.
    method = "PUT", idempotent = true,
    build = function(root, id)
      if not is_id(id) then return nil, id_problem(id) end
      return root .. "/commands/" .. id .. "/regen_token"
    end,
    result = function(status, body, ctype, head)
      local t, err = success_object(status, body, ctype, head)
      if t and type(t.token) ~= "string" then
        return nil, decode_error(status, body, head, "response has no token")
      end
      return t and t.token, err
    end,
  },
}

-- ------------------------------------------------------------------------
-- Clients

local Client = { __name = "mm.client" }
Client.__index = Client

local OPTIONS = {
  url = "string", token = "string", timeout = "number", connect_timeout = "number",
  user_agent = "string", max_body = "number", retries = "number", max_retry_wait = "number",
  cafile = "string", capath = "string", sslcert = "string", sslkey = "string",
  insecure = "boolean", proxy = "string", noproxy = "string", debug = "function|boolean",
}

--- Default option values, documented in the README.
-- @table defaults
mm.defaults = {
  timeout = 30,          -- seconds for a whole request
  connect_timeout = 10,  -- seconds to connect
  retries = 2,           -- further attempts after a retryable failure
  max_retry_wait = 30,   -- seconds, the longest wait before a retry
  max_body = 8 * 1024 * 1024, -- bytes, the largest response accepted
}

-- The API root: the server URL plus /api/v4, from any of the accepted
-- forms (trailing slash, sub-path, already ending in /api/v4).
local function api_root(url)
  if url:find("[%c%s]") then return nil, "option 'url' must not contain white space or control characters" end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "option 'url' must start with http:// or https://"
  end
  local authority = rest:match("^[^/?#]*")
  if authority == "" then return nil, "option 'url' has no host" end
  if authority:find("@", 1, true) then
    return nil, "option 'url' must not carry credentials (use option 'token')"
  end
  if rest:find("[?#]") then return nil, "option 'url' must not have a query or a fragment" end
  url = url:gsub("/+$", "")
  if not url:find("/api/v4$") then url = url .. "/api/v4" end
  return url
end

local function check_options(opts)
  if type(opts) ~= "table" then return nil, "options table expected, got " .. typename(opts) end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then return nil, "unknown option '" .. tostring(k) .. "'" end
    if not want:find(type(v), 1, true) then
      return nil, ("option '%s' must be a %s, got %s"):format(k, want:gsub("|", " or "), type(v))
    end
  end
  if opts.url == nil then return nil, "option 'url' is required" end
  if opts.token == nil then return nil, "option 'token' is required" end
  if opts.token == "" then return nil, "option 'token' is empty" end
  -- The token goes into a header: a CR or LF would split the request.
  if opts.token:find("[%c%s]") then
    return nil, "option 'token' must not contain white space or control characters"
  end
  if opts.user_agent and opts.user_agent:find("%c") then
    return nil, "option 'user_agent' must not contain control characters"
  end
  for _, k in ipairs{ "timeout", "connect_timeout" } do
    local v = opts[k]
    if v ~= nil and not (v > 0 and v <= 86400) then
      return nil, "option '" .. k .. "' must be a number of seconds above 0 (at most 86400)"
    end
  end
  local r = opts.retries
  if r ~= nil and not (r >= 0 and r <= 10 and floor(r) == r) then
    return nil, "option 'retries' must be a whole number from 0 to 10"
  end
  local w = opts.max_retry_wait
  if w ~= nil and not (w >= 0 and w <= 3600) then
    return nil, "option 'max_retry_wait' must be a number of seconds from 0 to 3600"
  end
  local m = opts.max_body
  if m ~= nil and not (m >= 1 and m <= core.max_body_limit and floor(m) == m) then
    return nil, ("option 'max_body' must be a whole number of bytes from 1 to %.0f"):format(core.max_body_limit)
  end
  return api_root(opts.url)
end

-- Replaces the token wherever a server echoes it (a developer-mode 401
-- carries "token=<t>" in detailed_error), so no error can show it.
local function scrubber(token)
  return function(s)
    if type(s) ~= "string" then return s end
    local i, j = s:find(token, 1, true)
    while i do
      s = s:sub(1, i - 1) .. "[redacted]" .. s:sub(j + 1)
      i, j = s:find(token, i + 10, true)
    end
    return s
  end
end

local function stderr_log(line)
  io.stderr:write("mm: ", line, "\n")
end

local function env(name)
  local v = getenv(name)
  if v ~= "" then return v end
end

-- The proxy libcurl would take from the environment for this server, read
-- once here rather than by libcurl at every transfer: "" means none. As in
-- libcurl, plain http ignores HTTP_PROXY (a CGI program's environment can
-- set it from a request header).
local function env_proxy(root)
  local p
  if root:sub(1, 6):lower() == "https:" then
    p = env("https_proxy") or env("HTTPS_PROXY")
  else
    p = env("http_proxy")
  end
  return p or env("all_proxy") or env("ALL_PROXY") or "", env("no_proxy") or env("NO_PROXY")
end

local function new_client(opts)
  local root, why = check_options(opts)
  if not root then return nil, why end
  local proxy, noproxy = env_proxy(root)
  local d = mm.defaults
  local ua = opts.user_agent or USER_AGENT
  local handle = core.new{
    headers = { "Authorization: Bearer " .. opts.token, "Accept: application/json", "User-Agent: " .. ua },
    body_headers = JSON_BODY_HEADERS,
    timeout = opts.timeout or d.timeout,
    connect_timeout = opts.connect_timeout or d.connect_timeout,
    max_body = opts.max_body or d.max_body,
    cafile = opts.cafile, capath = opts.capath, sslcert = opts.sslcert, sslkey = opts.sslkey,
    insecure = opts.insecure, proxy = opts.proxy or proxy, noproxy = opts.noproxy or noproxy,
  }
  local log = opts.debug
  if log == true or (log == nil and getenv("MM_DEBUG") == "1") then log = stderr_log end
  return setmetatable({
    _core = handle,
    _root = root,
    _retries = opts.retries or d.retries,
    _max_retry_wait = opts.max_retry_wait or d.max_retry_wait,
    _insecure = opts.insecure == true,
    _log = log or nil,
    _shown_headers = { "Authorization: Bearer [redacted]", "Accept: application/json", "User-Agent: " .. ua },
    _scrub = scrubber(opts.token),
  }, Client)
end

--- Creates a client.
-- @tparam table opts options:
--
-- * `url` (string, required): the server root, e.g. `https://chat.example.com`;
--   a trailing slash, a sub-path and a URL ending in `/api/v4` are accepted.
-- * `token` (string, required): a personal access token or session token.
-- * `timeout`, `connect_timeout` (seconds; defaults 30 and 10).
-- * `retries` (default 2), `max_retry_wait` (seconds, default 30).
-- * `max_body` (bytes, default 8 MiB): larger responses fail with kind `too_large`.
-- * `user_agent` (string): replaces the default `lua-mattermost/<version> ...`.
-- * `cafile`, `capath`: CA certificates to trust; `sslcert`, `sslkey`: a client certificate.
-- * `insecure` (boolean): turns TLS verification off. Never the default; says so in `tostring(client)`.
-- * `proxy`, `noproxy`: as libcurl's; without them, libcurl's variables
--   (`http_proxy`, `https_proxy`, `all_proxy`, `no_proxy`) are read when the client is made.
-- * `debug` (function or `true`): receives each request and response line,
--   `Authorization` redacted; `MM_DEBUG=1` in the environment logs to stderr.
--
-- Unknown options, wrong types and a token with white space or control
-- characters raise an error.
-- @treturn client
-- @usage
-- local c = mm.new{ url = "https://chat.example.com", token = os.getenv("MM_TOKEN") }
-- local job = assert(c:create_job{ type = "active_users" })
-- c:close()
function mm.new(opts)
  local c, why = new_client(opts)
  if not c then error(argmsg("new", 1, why), 2) end
  return c
end

-- ------------------------------------------------------------------------
-- The default client, for the module-level functions.

local default_client

--- Sets up the default client used by the module-level functions.
-- Without it, the default client is made on first use from the
-- environment variables `MM_URL` and `MM_TOKEN`.
-- @tparam table opts as for `mm.new`
-- @usage
-- mm.configure{ url = "https://chat.example.com", token = token, retries = 3 }
-- local token = assert(mm.regen_token(command_id))
function mm.configure(opts)
  local c, why = new_client(opts)
  if not c then error(argmsg("configure", 1, why), 2) end
  if default_client then default_client:close() end
  default_client = c
end

local function default()
  if default_client and not default_client._closed then return default_client end
  local url, token = getenv("MM_URL"), getenv("MM_TOKEN")
  if url == nil or url == "" then
    error("mm: no server configured: set MM_URL and MM_TOKEN, or call mm.configure{ url = ..., token = ... }", 3)
  end
  if token == nil or token == "" then
    error("mm: no token configured: set MM_TOKEN, or call mm.configure{ url = ..., token = ... }", 3)
  end
  local c, why = new_client{ url = url, token = token }
  if not c then
    why = why:gsub("option 'url'", "MM_URL"):gsub("option 'token'", "MM_TOKEN")
    error("mm: " .. why, 3)
  end
  default_client = c
  return c
end

--- `create_job` on the default client.
-- @usage local job, err = mm.create_job{ type = "active_users", data = { thing = "stuff" } }
function mm.create_job(job) return default():create_job(job) end

--- `get_job` on the default client.
-- @usage local job = assert(mm.get_job(id))
function mm.get_job(id) return default():get_job(id) end

--- `wait_job` on the default client.
-- @usage local job, err = mm.wait_job(id, { timeout = 60 })
function mm.wait_job(id, opts) return default():wait_job(id, opts) end

--- `regen_token` on the default client.
-- @usage local token, err = mm.regen_token("4xp9fdt7pbgium38k8k9kdzdwe")
function mm.regen_token(id) return default():regen_token(id) end

--- `regen_tokens` on the default client.
-- @usage local tokens, failed = mm.regen_tokens(ids, { concurrency = 16 })
function mm.regen_tokens(ids, opts) return default():regen_tokens(ids, opts) end

--- `create_jobs` on the default client.
-- @usage local jobs, failed = mm.create_jobs({ { type = "active_users" } })
function mm.create_jobs(jobs, opts) return default():create_jobs(jobs, opts) end

--- `batch` on the default client.
-- @usage local results = mm.batch({ { "regen_token", id } })
function mm.batch(calls, opts) return default():batch(calls, opts) end

--- A client, made by `mm.new`: its own URL, token, options and connections.
-- @type Client

function Client:__tostring()
  if self._closed then return "mm.client (closed)" end
  local s = "mm.client (" .. self._root .. ")"
  if self._insecure then s = s .. " INSECURE: TLS verification is off" end
  return s
end

--- Closes the client and its connections. Idempotent; also done by the
-- garbage collector and by `<close>` variables (Lua 5.4).
-- @usage
-- local c <close> = mm.new{ url = url, token = token }
function Client:close()
  if getmetatable(self) ~= Client then error("mm: use c:close(), not c.close()", 2) end
  self._closed = true
  self._core:close()
end
Client.__close = Client.close

-- A method called with a dot gets no client: say so plainly.
local function check_self(self, name)
  if getmetatable(self) ~= Client then
    return ("mm: call %s with a colon: client:%s(...), not client.%s(...)"):format(name, name, name)
  end
  if self._closed then return "mm: attempt to use a closed client" end
end

-- ------------------------------------------------------------------------
-- Running requests: one attempt, its outcome, and the retry policy.

local function log_request(self, method, url, body)
  local log = self._log
  -- scrubbed: an id is token-shaped, and a token passed as an id must not show
  log("> " .. method .. " " .. self._scrub(url))
  for _, h in ipairs(self._shown_headers) do log("> " .. h) end
  if body then
    log("> " .. JSON_BODY_HEADERS[1])
    log("> [" .. #body .. " bytes of body]")
  end
end

local function log_response(self, status, head, kind, message, elapsed)
  local log = self._log
  -- a batch's transfers overlap: no time of their own to show
  local ms = elapsed and (" (%.1f ms)"):format(elapsed * 1000) or ""
  if not status then
    log("< " .. kind .. ": " .. tostring(self._scrub(message)) .. ms)
    return
  end
  log("< HTTP " .. status .. ms)
  local headers, names = parse_headers(head), {}
  for k in pairs(headers) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do log("< " .. k .. ": " .. self._scrub(headers[k])) end
end

-- The value or error of one attempt: an answer (status, body, ctype,
-- head) or a failure (nil, and kind, message, code in their place).
local SCRUBBED = { "id", "message", "detailed_error", "body", "location", "request_id" }

local function outcome(self, op, method, url, status, body, ctype, head)
  local value, err
  if status and status >= 200 and status < 300 then
    value, err = op.result(status, body, ctype, head)
  elseif status then
    err = http_error(status, body, ctype, head)
  else
    err = new_error{ kind = body, message = ctype, curl_code = head }
  end
  if err then
    -- Everything a server or libcurl put into the error, scrubbed of the
    -- token in one place: servers echo requests in odd places.
    local scrub = self._scrub
    for _, k in ipairs(SCRUBBED) do err[k] = scrub(err[k]) end
    err.method = method
    err.path = scrub("/api/v4" .. url:sub(#self._root + 1))
  end
  return value, err
end

-- Seconds to wait before retrying after err on attempt n, or nil when err
-- is final. 429 is retried on any method; 502/503/504, timeouts and broken
-- connections only when the request is idempotent; a failure to connect
-- always, since such a request never reached the server.
local function retry_wait(self, op, err, n)
  if n > self._retries then return nil end
  local kind, status, retry = err.kind, err.status, false
  if kind == "http" then
    retry = status == 429 or (op.idempotent and (status == 502 or status == 503 or status == 504))
  elseif kind == "connect" or kind == "connect_timeout" then
    retry = true
  elseif kind == "timeout" or kind == "network" then
    retry = op.idempotent
  end
  if not retry then return nil end
  local wait = err.retry_after
  if not wait then
    -- Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s ... each in [1/2, 1] of that.
    local base = 0.25 * 2 ^ (n - 1)
    wait = base / 2 + random() * base / 2
  end
  if wait > self._max_retry_wait then wait = self._max_retry_wait end
  return wait
end

-- One call, with retries: value or nil, err.
local function perform(self, op, url, body)
  local handle, method, n = self._core, op.method, 0
  while true do
    n = n + 1
    local log, t0 = self._log
    if log then
      log_request(self, method, url, body)
      t0 = core.monotime()
    end
    local status, a, b, c = handle:request(method, url, nil, body)
    if log then log_response(self, status, c, a, b, core.monotime() - t0) end
    local value, err = outcome(self, op, method, url, status, a, b, c)
    if not err then return value end
    err.attempts = n
    local wait = retry_wait(self, op, err, n)
    if not wait then return nil, err end
    if log then log(("retrying in %.2f s after %s"):format(wait, tostring(err))) end
    core.sleep(wait)
  end
end

-- A single call: true, value, err; or nil and the message to raise.
local function call(self, name, arg)
  if getmetatable(self) ~= Client or self._closed then return nil, check_self(self, name) end
  local op = OPS[name]
  local url, body = op.build(self._root, arg)
  if not url then return nil, argmsg(name, 1, body) end
  return true, perform(self, op, url, body)
end

--- Creates a job: `POST /api/v4/jobs`.
-- @tparam table job `type` (non-empty string) and optional `data` (string
-- keys; string, number or boolean values, sent as strings).
-- @return the job (`id, type, priority, create_at, start_at,
-- last_activity_at, status, progress, data`), or nil and an error
-- @usage
-- local job, err = c:create_job{ type = "active_users", data = { thing = "stuff" } }
-- if not job then print(err) end
function Client:create_job(job)
  local ok, value, err = call(self, "create_job", job)
  if ok == nil then error(value, 2) end
  return value, err
end

--- Gets a job: `GET /api/v4/jobs/{id}`.
-- @tparam string id the job id (26 characters)
-- @return the job, or nil and an error
-- @usage
-- local job = assert(c:get_job(id))
-- print(job.status, job.progress)
function Client:get_job(id)
  local ok, value, err = call(self, "get_job", id)
  if ok == nil then error(value, 2) end
  return value, err
end

--- Regenerates a slash command's token:
-- `PUT /api/v4/commands/{id}/regen_token`.
-- @tparam string id the command id (26 characters, lower-case letters and digits)
-- @return the new token, or nil and an error
-- @usage
-- local token, err = c:regen_token("4xp9fdt7pbgium38k8k9kdzdwe")
function Client:regen_token(id)
  local ok, value, err = call(self, "regen_token", id)
  if ok == nil then error(value, 2) end
  return value, err
end

local WAIT_OPTIONS = { timeout = true, interval = true }

--- Polls a job until it reaches a terminal status (`success`, `error`,
-- `canceled`, `warning`) or the timeout passes.
-- @tparam string id the job id
-- @tparam[opt] table opts `timeout` (seconds, default 60) and `interval`
-- (seconds between polls, default 1)
-- @return the final job; or nil and an error: kind `"job"` when the job
-- ended in `error` (the job is `err.job`), kind `"timeout"` when it did not
-- finish in time (the last job seen is `err.job`), or the error of a poll
-- @usage
-- local job = assert(c:create_job{ type = "active_users" })
-- local done, err = c:wait_job(job.id, { timeout = 120, interval = 2 })
function Client:wait_job(id, opts)
  local why = check_self(self, "wait_job")
  if why then error(why, 2) end
  why = id_problem(id)
  if why then error(argmsg("wait_job", 1, why), 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error(argmsg("wait_job", 2, "options table expected, got " .. type(opts)), 2) end
  for k, v in pairs(opts) do
    if not WAIT_OPTIONS[k] then error(argmsg("wait_job", 2, "unknown option '" .. tostring(k) .. "'"), 2) end
    -- an interval of 0 would poll the server in a tight loop
    local low = k == "interval" and 0.001 or 0
    if type(v) ~= "number" or not (v >= low and v <= 86400) then
      error(argmsg("wait_job", 2, ("option '%s' must be a number of seconds from %g to 86400"):format(k, low)), 2)
    end
  end
  local timeout, interval = opts.timeout or 60, opts.interval or 1
  local deadline = core.monotime() + timeout
  local op = OPS.get_job
  local url = op.build(self._root, id)
  local path = self._scrub("/api/v4/jobs/" .. id)
  while true do
    local job, err = perform(self, op, url)
    if not job then return nil, err end
    if job.status == "error" then
      local detail = type(job.data) == "table" and str(job.data.error)
      return nil, new_error{
        kind = "job", job = job, method = "GET", path = path,
        message = self._scrub("job " .. id .. " ended in error" .. (detail and (": " .. detail) or "")),
      }
    end
    if TERMINAL[job.status] then return job end
    local left = deadline - core.monotime()
    if left <= 0 then
      return nil, new_error{
        kind = "timeout", job = job, method = "GET", path = path,
        message = self._scrub(("job %s still %s after %g s"):format(id, tostring(job.status), timeout)),
      }
    end
    core.sleep(interval < left and interval or left)
  end
end

-- ------------------------------------------------------------------------
-- Batches: many calls at once over curl_multi, in input order.

local BATCH_OPTIONS = { concurrency = "number", on_progress = "function" }

local function check_batch_options(fname, opts)
  if opts == nil then return 16 end
  if type(opts) ~= "table" then return nil, argmsg(fname, 2, "options table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do
    local want = BATCH_OPTIONS[k]
    if not want then return nil, argmsg(fname, 2, "unknown option '" .. tostring(k) .. "'") end
    if type(v) ~= want then return nil, argmsg(fname, 2, ("option '%s' must be a %s"):format(k, want)) end
  end
  local c = opts.concurrency or 16
  if not (c >= 1 and c <= core.max_concurrency and floor(c) == c) then
    return nil, argmsg(fname, 2, "option 'concurrency' must be a whole number from 1 to " .. core.max_concurrency)
  end
  return c
end

-- Runs reqs (with ops[i] the operation of reqs[i]); retryable failures go
-- again in a later round, after the longest wait any of them asks for.
local function run_batch(self, ops, reqs, concurrency, on_progress)
  local total, results, failed, done = #reqs, {}, 0, 0
  local pending, round = {}, 0
  for i = 1, total do pending[i] = i end
  while #pending > 0 do
    round = round + 1
    local list, retry, wait = {}, {}, 0
    for j, i in ipairs(pending) do list[j] = reqs[i] end
    -- Called by mm.core between transfers, never inside a libcurl callback.
    self._core:request_many(list, concurrency, function(j, r)
      local i = pending[j]
      local req = reqs[i]
      local value, err
      if self._log then
        log_request(self, req.method, req.url, req.body)
        log_response(self, r.status, r.head, r.kind, r.message)
      end
      if r.status then
        value, err = outcome(self, ops[i], req.method, req.url, r.status, r.body, r.content_type, r.head)
      else
        value, err = outcome(self, ops[i], req.method, req.url, nil, r.kind, r.message, r.curl_code)
      end
      if err then
        err.attempts = round
        local w = retry_wait(self, ops[i], err, round)
        if w then
          retry[#retry + 1] = i
          if w > wait then wait = w end
          return
        end
        failed = failed + 1
        value = err
      end
      results[i] = value
      done = done + 1
      if on_progress then on_progress(done, total) end
    end)
    pending = retry
    if #pending > 0 then
      sort(pending)
      if self._log then self._log(("retrying %d requests in %.2f s"):format(#pending, wait)) end
      core.sleep(wait)
    end
  end
  return results, failed
end

local function batch_of(self, fname, name, list, opts)
  local why = check_self(self, fname)
  if why then return nil, why end
  if type(list) ~= "table" then return nil, argmsg(fname, 1, "table expected, got " .. typename(list)) end
  local concurrency
  concurrency, why = check_batch_options(fname, opts)
  if not concurrency then return nil, why end
  local ops, reqs = {}, {}
  for i = 1, #list do
    local opname, arg = name, list[i]
    if not name then -- the general form: { "operation", argument }
      if type(arg) ~= "table" or not OPS[arg[1]] then
        return nil, argmsg(fname, 1,
          ("call #%d must be {\"create_job\"|\"get_job\"|\"regen_token\", argument}"):format(i))
      end
      opname, arg = arg[1], arg[2]
    end
    local op = OPS[opname]
    local url, body = op.build(self._root, arg)
    if not url then return nil, argmsg(fname, 1, ("item #%d: %s"):format(i, body)) end
    ops[i] = op
    reqs[i] = { method = op.method, url = url, body = body }
  end
  return true, run_batch(self, ops, reqs, concurrency, opts and opts.on_progress)
end

--- Runs many calls concurrently, the general form of the batch methods.
-- Each call is `{ "create_job", job }`, `{ "get_job", id }` or
-- `{ "regen_token", id }`. All are checked before any is sent.
-- @tparam table calls the list of calls
-- @tparam[opt] table opts `concurrency` (default 16, at most 1024) and
-- `on_progress(done, total)`, called after each call finishes
-- @return a list with, for each call in input order, its value or an
-- error object (`mm.is_error`), and the number of errors
-- @usage
-- local results, failed = c:batch({ { "regen_token", id1 }, { "get_job", id2 } })
-- for i, r in ipairs(results) do print(i, mm.is_error(r) and tostring(r) or r) end
function Client:batch(calls, opts)
  local ok, results, failed = batch_of(self, "batch", nil, calls, opts)
  if not ok then error(results, 2) end
  return results, failed
end

--- Regenerates many commands' tokens concurrently.
-- @tparam table ids command ids
-- @tparam[opt] table opts as for `batch`
-- @return the list of tokens or error objects, in the order of `ids`, and the number of errors
-- @usage
-- local tokens, failed = c:regen_tokens(ids, { concurrency = 16 })
function Client:regen_tokens(ids, opts)
  local ok, results, failed = batch_of(self, "regen_tokens", "regen_token", ids, opts)
  if not ok then error(results, 2) end
  return results, failed
end

--- Creates many jobs concurrently. A failed `POST` is retried only when
-- it never reached the server.
-- @tparam table jobs job tables as for `create_job`
-- @tparam[opt] table opts as for `batch`
-- @return the list of jobs or error objects, in input order, and the number of errors
-- @usage
-- local jobs = c:create_jobs({ { type = "active_users" }, { type = "expiry_notify" } })
function Client:create_jobs(jobs, opts)
  local ok, results, failed = batch_of(self, "create_jobs", "create_job", jobs, opts)
  if not ok then error(results, 2) end
  return results, failed
end

return mm
