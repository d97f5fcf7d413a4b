--- The client: options, one call with its retries, batches, and the
-- general `request`. The endpoint methods are made from the endpoint
-- table (`mm.endpoints`) by `mm`.
-- @module mm.client
local core = require "mm.core"
local codec = require "mm.codec"
local errors = require "mm.errors"
local args = require "mm.args"
local pacer = require "mm.pacer"
local endpoints = require "mm.endpoints"

local M = {}

local VERSION = "0.2.0"
M.VERSION = VERSION

local monotime, sleep = core.monotime, core.sleep
local floor, min = math.floor, math.min
local sort = table.sort
local getenv = os.getenv
local typename = args.typename

local USER_AGENT = "lua-mattermost/" .. VERSION .. " (libcurl/" .. core.curl_version .. ")"
local JSON_BODY_HEADERS = { "Content-Type: application/json" }
-- Response headers the pacer reads on every answer, picked out in C.
local CAPTURE = { "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after" }

-- Argument problems are found by functions that return a message; only
-- the public function raises it (error level 2), so the message points at
-- the caller's line however deep the check was made.
local function argmsg(fname, n, msg)
  return ("bad argument #%d to '%s' (%s)"):format(n, fname, msg)
end
M.argmsg = argmsg

-- ------------------------------------------------------------------------
-- Options

--- Default option values (read-only: `mm.defaults`).
M.DEFAULTS = {
  timeout = 30,           -- seconds for a whole request
  connect_timeout = 10,   -- seconds to connect
  retries = 2,            -- further attempts after a retryable failure (429s aside)
  max_retry_wait = 30,    -- seconds, the longest wait before a retry
  max_rate_wait = 120,    -- seconds a request may wait on the rate limiter after 429s
  max_body = 8 * 1024 * 1024, -- bytes, the largest response body kept in memory
  compression = true,     -- Accept-Encoding: gzip
}

local OPTIONS = {
  url = "string", token = "string", timeout = "number", connect_timeout = "number",
  user_agent = "string", max_body = "number", retries = "number", max_retry_wait = "number",
  max_rate_wait = "number", cafile = "string", capath = "string", sslcert = "string", sslkey = "string",
  insecure = "boolean", proxy = "string", noproxy = "string", debug = "function|boolean",
  compression = "boolean", interrupt = "userdata",
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

local function in_range(v, low, high) return v >= low and v <= high end

-- Checks an options table; returns the API root or nil, why.
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
  if r ~= nil and not (in_range(r, 0, 10) and floor(r) == r) then
    return nil, "option 'retries' must be a whole number from 0 to 10"
  end
  local w = opts.max_retry_wait
  if w ~= nil and not in_range(w, 0, 3600) then
    return nil, "option 'max_retry_wait' must be a number of seconds from 0 to 3600"
  end
  w = opts.max_rate_wait
  if w ~= nil and not in_range(w, 0, 86400) then
    return nil, "option 'max_rate_wait' must be a number of seconds from 0 to 86400"
  end
  local m = opts.max_body
  if m ~= nil and not (in_range(m, 1, core.max_body_limit) and floor(m) == m) then
    return nil, ("option 'max_body' must be a whole number of bytes from 1 to %.0f"):format(core.max_body_limit)
  end
  local i = opts.interrupt
  if i ~= nil and (getmetatable(i) or {}).__name ~= "mm.core.signals" then
    return nil, "option 'interrupt' must be a signal watcher (mm.catch_signals)"
  end
  return api_root(opts.url)
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

local function stderr_log(line)
  io.stderr:write("mm: ", line, "\n")
end

-- A generator of numbers in [0, 1) for the retry jitter, seeded per
-- client: math.random is shared by the whole Lua state, and unseeded on
-- LuaJIT every nginx worker would draw the same sequence.
local function jitter_source()
  local seed = floor((monotime() * 1e6) % 2147483646) + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0)
  local x = seed % 2147483646 + 1
  return function()
    x = (16807 * x) % 2147483647 -- Park-Miller: exact in a double
    return x / 2147483647
  end
end

-- ------------------------------------------------------------------------
-- The client object

local Client = { __name = "mm.client" }
Client.__index = Client
M.Client = Client

-- The clients M.new made, weakly: every call first checks that it was
-- given one, and this lookup costs about 200 instructions where
-- getmetatable(self) == Client cost about 600 (bench/lua_parts.lua).
local clients = setmetatable({}, { __mode = "k" })

--- Makes a client, or returns nil and why (`mm.new` raises it).
function M.new(opts)
  local root, why = check_options(opts)
  if not root then return nil, why end
  local d = M.DEFAULTS
  local proxy, noproxy = env_proxy(root)
  local ua = opts.user_agent or USER_AGENT
  local compression = opts.compression
  if compression == nil then compression = d.compression end
  local handle = core.new{
    headers = { "Authorization: Bearer " .. opts.token, "Accept: application/json", "User-Agent: " .. ua },
    body_headers = JSON_BODY_HEADERS,
    capture = CAPTURE,
    timeout = opts.timeout or d.timeout,
    connect_timeout = opts.connect_timeout or d.connect_timeout,
    max_body = opts.max_body or d.max_body,
    compression = compression,
    cafile = opts.cafile, capath = opts.capath, sslcert = opts.sslcert, sslkey = opts.sslkey,
    insecure = opts.insecure, proxy = opts.proxy or proxy, noproxy = opts.noproxy or noproxy,
  }
  local log = opts.debug
  if log == true or (log == nil and getenv("MM_DEBUG") == "1") then log = stderr_log end
  local shown = { "Authorization: Bearer [redacted]", "Accept: application/json", "User-Agent: " .. ua }
  if compression then shown[#shown + 1] = "Accept-Encoding: gzip" end
  local c = setmetatable({
    _core = handle,
    _root = root,
    _timeout = opts.timeout or d.timeout,
    _retries = opts.retries or d.retries,
    _max_retry_wait = opts.max_retry_wait or d.max_retry_wait,
    _max_rate_wait = opts.max_rate_wait or d.max_rate_wait,
    _insecure = opts.insecure == true,
    _interrupt = opts.interrupt,
    _log = log or nil,
    _shown_headers = shown,
    _scrub = errors.scrubber(opts.token),
    _pacer = pacer.new(),
    _random = jitter_source(),
  }, Client)
  clients[c] = true
  return c
end

function Client:__tostring()
  if self._closed then return "mm.client (closed)" end
  local s = "mm.client (" .. self._root .. ")"
  if self._insecure then s = s .. " INSECURE: TLS verification is off" end
  return s
end

--- Closes the client and its connections. Idempotent; also done by the
-- garbage collector and by `<close>` variables (Lua 5.4). Called from a
-- batch's callback, it ends the batch: what was in flight comes back as
-- `"aborted"`, what never started as `"canceled"`.
-- @usage
-- local c <close> = mm.new{ url = url, token = token }
function Client:close()
  if not clients[self] then error("mm: use c:close(), not c.close()", 2) end
  self._closed = true
  self._core:close()
end
Client.__close = Client.close

-- A method called with a dot gets no client: say so plainly.
local function check_self(self, name)
  if not clients[self] then
    return ("mm: call %s with a colon: client:%s(...), not client.%s(...)"):format(name, name, name)
  end
  if self._closed then return "mm: attempt to use a closed client" end
end
M.check_self = check_self

-- ------------------------------------------------------------------------
-- Debug log

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

-- `request` names the request answered, where others overlap it (a batch).
local function log_response(self, resp, err, elapsed, request)
  local log = self._log
  local ms = (" (%.1f ms)"):format(elapsed * 1000)
  if request then ms = ms .. " for " .. self._scrub(request) end
  if not resp then
    log("< " .. err.kind .. ": " .. tostring(self._scrub(err.message)) .. ms)
    return
  end
  log("< HTTP " .. resp.status .. ms)
  local headers, names = codec.parse_headers(resp.head), {}
  for k in pairs(headers) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do log("< " .. k .. ": " .. self._scrub(headers[k])) end
  if resp.file then log("< [" .. resp.bytes .. " bytes written to " .. resp.file .. "]") end
end

-- ------------------------------------------------------------------------
-- One attempt's outcome, and the retry policy

-- The error of an attempt that did not give a value: the error `read`
-- made of a 2xx answer, an HTTP error, or the core's error. Callers read
-- a 2xx answer themselves: the usual case, without a call more.
local function failure(self, method, url, resp, cerr, err)
  if not err then
    if resp then err = errors.http(resp) else err = errors.new(cerr) end
  end
  -- Everything a server or libcurl put into the error, scrubbed of the
  -- token in one place: servers echo requests in odd places.
  errors.scrub_fields(err, self._scrub)
  err.method = method
  err.path = self._scrub("/api/v4" .. url:sub(#self._root + 1))
  return err
end

-- Tells the pacer what an answer said about the rate limit.
local function note(self, now, resp)
  local cap = resp and resp.captured
  if cap then
    local seconds = errors.seconds
    self._pacer:answered(now, resp.status, tonumber(cap["x-ratelimit-limit"]),
                         tonumber(cap["x-ratelimit-remaining"]), seconds(cap["x-ratelimit-reset"]),
                         seconds(cap["retry-after"]))
  else
    self._pacer:answered(now, resp and resp.status)
  end
end

-- Seconds to wait before retrying after err on retry n, or nil when err
-- is final. 502/503/504, timeouts and broken connections are retried only
-- when the request is idempotent; a failure to connect always, since such
-- a request never reached the server. (429s are the pacer's.)
local function retry_wait(self, idempotent, err, n)
  if n > self._retries then return nil end
  local kind, status, retry = err.kind, err.status, false
  if kind == "http" then
    retry = idempotent and (status == 502 or status == 503 or status == 504)
  elseif kind == "connect" or kind == "connect_timeout" then
    retry = true
  elseif kind == "timeout" or kind == "network" then
    retry = idempotent
  end
  if not retry then return nil end
  local wait = err.retry_after
  if not wait then
    -- Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s ... each in [1/2, 1] of that.
    local base = 0.25 * 2 ^ (n - 1)
    wait = base / 2 + self._random() * base / 2
  end
  return min(wait, self._max_retry_wait)
end

local function stop_error(self, kind, message, method, url)
  return errors.new{
    kind = kind, message = message, method = method, path = self._scrub("/api/v4" .. url:sub(#self._root + 1)),
  }
end

--- Seconds this client is holding requests back for the server's rate
-- limiter (0 when it is not), e.g. for a status line.
function Client:holding()
  return self._pacer:holding(monotime())
end

-- Whether the client's signal watcher has caught a signal.
local function interrupted(self)
  local w = self._interrupt
  return w ~= nil and w:caught() ~= nil
end

-- Waits while the pacer holds requests back. Returns nil when a request
-- may go, "canceled" when a signal came first, "deadline" when the hold
-- would outlast `deadline`.
local function hold(self, deadline)
  local p, watcher = self._pacer, self._interrupt
  while true do
    local now = monotime()
    local d = p:delay(now)
    if d <= 0 then return nil end
    if deadline and now + d > deadline then return "deadline" end
    if self._log then self._log(("holding %.2f s for the rate limiter"):format(d)) end
    if not sleep(d, watcher) then return "canceled" end
  end
end

local PROGRESS = {} -- the tag of a transfer watched for its progress
local PROGRESS_EVERY = 0.25 -- seconds

-- One transfer: the core's response, or nil and its error. With
-- ropts.on_progress, the transfer is watched and on_progress(bytes,
-- total) called every PROGRESS_EVERY seconds and once at the end. With a
-- signal watcher, a second signal aborts it (the first lets it finish).
local function transfer(self, method, url, body, ropts)
  local on_progress, watcher = ropts and ropts.on_progress, self._interrupt
  if not on_progress and not watcher then return self._core:request(method, url, body, nil, ropts) end
  local handle = self._core
  local copts = ropts and { output = ropts.output, timeout = ropts.timeout }
  local slot = handle:start(PROGRESS, method, url, body, nil, copts)
  while true do
    local tag, resp, cerr = handle:wait_for(slot, on_progress and PROGRESS_EVERY or nil, watcher)
    if tag ~= nil then
      if on_progress and resp and resp.status >= 200 and resp.status < 300 then
        on_progress(resp.bytes or #resp.body, resp.bytes or #resp.body)
      end
      return resp, cerr
    end
    if watcher then
      local _, count = watcher:caught()
      if count and count > 1 then handle:abort(slot) end
    end
    if on_progress then
      local ok, e = pcall(on_progress, handle:progress(slot))
      if self._closed then
        -- closed from the callback: the transfer (and its partial file) went
        -- with the client, as in a batch
        if not ok then error(e, 0) end
        return nil, { kind = "aborted", message = "the client was closed before the answer came" }
      end
      if not ok then
        handle:abort(slot) -- nothing left behind: a partial file is removed
        handle:wait_for(slot, 0)
        error(e, 0)
      end
    end
  end
end

--- One call, with retries and pacing: value, nil, extra or nil, err.
-- `deadline` (monotonic seconds, optional) bounds the whole call;
-- `ropts` are the core's request options.
local function perform(self, row, method, url, body, ropts, deadline)
  local handle, p, read, log = self._core, self._pacer, row.read, self._log
  local n, tries, rate_since = 0, 0, nil
  if self._interrupt and interrupted(self) then
    return nil, stop_error(self, "canceled", "not sent: interrupted", method, url)
  end
  while true do
    -- a single call skips the pacer while no limiter has been seen (the
    -- path measured against a C floor); an answer with the limiter's
    -- headers switches it on
    if not p.fast then
      local why = hold(self, deadline)
      if why == "canceled" then return nil, stop_error(self, why, "not sent: interrupted", method, url) end
      if why then
        return nil, stop_error(self, "wait_timeout", "the rate limiter holds requests past the deadline", method, url)
      end
      p:sent(monotime())
    end
    n = n + 1
    local t0
    if log then
      log_request(self, method, url, body)
      t0 = monotime()
    end
    local resp, cerr
    if ropts or self._interrupt then
      resp, cerr = transfer(self, method, url, body, ropts)
    else
      resp, cerr = handle:request(method, url, body)
    end
    if log then log_response(self, resp, cerr, monotime() - t0) end
    local status = resp and resp.status
    if not p.fast or status == 429 or (resp and resp.captured) then note(self, monotime(), resp) end
    local value, err, extra
    if status and status >= 200 and status < 300 then
      value, err, extra = read(resp)
      if not err then return value, nil, extra end
    end
    err = failure(self, method, url, resp, cerr, err)
    err.attempts = n
    local now = monotime()
    if status == 429 then
      -- Not handled by the server: sent again when the pause ends, as long
      -- as this request has not waited out the budget.
      rate_since = rate_since or now
      if now - rate_since >= self._max_rate_wait or (deadline and now >= deadline) then return nil, err end
      if log then log("rate limited: the client pauses as a whole") end
    else
      tries = tries + 1
      local wait = retry_wait(self, row.idempotent, err, tries)
      if not wait or (deadline and now + wait >= deadline) then return nil, err end
      if log then log(("retrying in %.3f s after %s"):format(wait, tostring(err))) end
      if not sleep(wait, self._interrupt) then return nil, err end
    end
  end
end
M.perform = perform

--- The function behind a row's method, f(self, ...): true, value,
-- extra; true, nil, err; or nil and the message to raise. The row is
-- its upvalue, not an argument: a call through `...` less per call.
function M.invoker(row)
  local build, method = row.build, row.method
  return function(self, ...)
    if not clients[self] or self._closed then return nil, check_self(self, row.name) end
    local url, body, ropts = build(self._root, ...)
    if not url then return nil, argmsg(row.name, body, ropts) end
    local value, err, extra = perform(self, row, method, url, body, ropts)
    if err then return true, nil, err end
    return true, value, extra
  end
end

-- ------------------------------------------------------------------------
-- Batches: many calls at once over the core's curl_multi, paced as one.

local BATCH_OPTIONS = { concurrency = "number", on_progress = "function", on_result = "function",
                        on_hold = "function" }

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
M.check_batch_options = check_batch_options

-- The length of a list, or nil and why when it is not one (holes, other
-- keys). Keys 0 and below (the script's `arg` has them) and `n` (of
-- table.pack) are not items.
local function list_length(t)
  local n, max = 0, 0
  for k in pairs(t) do
    if type(k) == "number" and floor(k) == k and k >= 1 then
      n = n + 1
      if k > max then max = k end
    elseif not (k == "n" or (type(k) == "number" and k <= 0)) then
      return nil, "a list expected (key " .. tostring(k) .. ")"
    end
  end
  if n ~= max then return nil, ("a list without holes expected (%d items, highest index %d)"):format(n, max) end
  return n
end
M.list_length = list_length

local unpack = table.unpack or unpack

-- The requests of a batch, all checked before any is sent: items, or nil
-- and the message to raise.
function M.prepare_batch(self, fname, name, list, opts, by_name)
  local why = check_self(self, fname)
  if why then return nil, why end
  if type(list) ~= "table" then return nil, argmsg(fname, 1, "table expected, got " .. typename(list)) end
  local n
  n, why = list_length(list)
  if not n then return nil, argmsg(fname, 1, why) end
  local concurrency
  concurrency, why = check_batch_options(fname, opts)
  if not concurrency then return nil, why end
  local items = {}
  for i = 1, n do
    local row, call = by_name[name], list[i]
    local url, body, ropts
    if name then
      url, body, ropts = row.build(self._root, call)
    else -- the general form: { "operation", arg1, arg2, ... }
      row = type(call) == "table" and by_name[call[1]]
      if not row then
        return nil, argmsg(fname, 1, ("call #%d must be { name, arguments... } with the name of an endpoint, got %s")
          :format(i, type(call) == "table" and tostring(call[1]) or typename(call)))
      end
      local last = 1
      for k in pairs(call) do
        if type(k) == "number" and k > last then last = k end
      end
      url, body, ropts = row.build(self._root, unpack(call, 2, last))
    end
    if not url then
      return nil, argmsg(fname, 1, ("item #%d: %s%s"):format(i, name and "" or ("argument #" .. body .. ": "), ropts))
    end
    if ropts and ropts.on_progress then
      return nil, argmsg(fname, 1,
        ("item #%d: option 'on_progress' is for single calls (a batch has its own)"):format(i))
    end
    items[i] = { row = row, method = row.method, url = url, body = body, ropts = ropts, sent = 0, tries = 0 }
  end
  return items, concurrency
end

-- Runs the batch loop. Results come back in input order; on_result(i,
-- value, err) and on_progress(done, total) are called as each item ends,
-- and on_hold(seconds) whenever the pacer holds the next request back,
-- all between transfers. Returns results, nfailed.
local function run_batch(self, items, conc, on_result, on_progress, on_hold)
  local handle, p, watcher, log = self._core, self._pacer, self._interrupt, self._log
  local total = #items
  local results, failed, done = {}, 0, 0
  local queue, qhead, qtail = {}, 1, total -- items ready to go, in order
  for i = 1, total do queue[i] = i end
  local later = {}                 -- items waiting for a retry time
  local inflight, stopping, aborted = 0, false, false

  local function finish(i, value, err)
    if err then
      failed = failed + 1
      results[i] = err
    else
      results[i] = value
    end
    done = done + 1
    if on_result then on_result(i, value, err) end
    if on_progress then on_progress(done, total) end
  end

  local function handle_done(i, resp, cerr)
    local it = items[i]
    inflight = inflight - 1
    local now = monotime()
    -- the request was logged when it went out; the answer, with its time
    if log then log_response(self, resp, cerr, now - it.started, it.method .. " " .. it.url) end
    local status = resp and resp.status
    note(self, now, resp)
    local value, err
    if status and status >= 200 and status < 300 then
      value, err = it.row.read(resp)
      if not err then return finish(i, value) end
    end
    err = failure(self, it.method, it.url, resp, cerr, err)
    err.attempts = it.sent
    if not stopping and not self._closed then
      if status == 429 then
        it.rate_since = it.rate_since or now
        if now - it.rate_since < self._max_rate_wait then
          qhead = qhead - 1 -- back at the head of the queue, sent when the pacer allows
          queue[qhead] = i
          return
        end
      else
        it.tries = it.tries + 1
        local wait = retry_wait(self, it.row.idempotent, err, it.tries)
        if wait then
          it.not_before = now + wait
          later[#later + 1] = i
          return
        end
      end
    end
    finish(i, nil, err)
  end

  local function loop()
    while true do
      if self._closed then break end
      if watcher and not stopping and watcher:caught() then stopping = true end
      if stopping and not aborted and inflight > 0 then
        -- a second signal: stop waiting for the answers in flight
        local _, count = watcher:caught()
        if count and count > 1 then
          aborted = true
          handle:abort()
        end
      end
      local now = monotime()
      -- retries whose time has come go back into the queue, in order
      local next_retry
      if #later > 0 then
        local keep = {}
        for _, i in ipairs(later) do
          if items[i].not_before <= now then
            qtail = qtail + 1
            queue[qtail] = i
          else
            keep[#keep + 1] = i
            next_retry = min(next_retry or math.huge, items[i].not_before)
          end
        end
        later = keep
      end
      local hold_for
      if not stopping then
        local limit = p:concurrency(conc)
        while inflight < limit and qhead <= qtail do
          local d = p:delay(now)
          if d > 0 then
            hold_for = d
            break
          end
          p:sent(now)
          local i = queue[qhead]
          queue[qhead] = nil
          qhead = qhead + 1
          local it = items[i]
          it.sent = it.sent + 1
          if log then
            log_request(self, it.method, it.url, it.body)
            it.started = monotime()
          end
          handle:start(i, it.method, it.url, it.body, nil, it.ropts)
          inflight = inflight + 1
        end
      end
      if hold_for and on_hold then on_hold(hold_for) end
      if inflight == 0 then
        if stopping or (qhead > qtail and #later == 0) then break end
        local t = min(hold_for or math.huge, (next_retry or math.huge) - now)
        if t > 0 and t < math.huge then
          if log and hold_for then log(("holding %.2f s for the rate limiter"):format(hold_for)) end
          if not sleep(t, watcher) then stopping = true end
        end
      else
        local t = min(hold_for or math.huge, (next_retry or math.huge) - now)
        local tag, resp, cerr = handle:wait(t < math.huge and math.max(t, 0) or nil, watcher)
        while tag ~= nil do
          handle_done(tag, resp, cerr)
          if self._closed then break end
          tag, resp, cerr = handle:wait(0)
        end
      end
    end
  end

  self._batching = true
  local ok, e = pcall(loop)
  if not ok and not self._closed then
    -- An error in a callback (or an interrupt): nothing stays in flight
    -- behind the caller's back; the client stays usable.
    handle:abort()
    while handle:wait(0) ~= nil do end
  end
  self._batching = nil
  if not ok then error(e, 0) end
  -- What never got an answer: closed under us, or stopped by a signal.
  for i = 1, total do
    if results[i] == nil then
      local it = items[i]
      local sent = it.sent > 0 and self._closed
      local err = stop_error(self, sent and "aborted" or "canceled",
        sent and "the client was closed before the answer came"
        or (self._closed and "not sent: the client was closed" or "not sent: interrupted"), it.method, it.url)
      err.attempts = it.sent
      finish(i, nil, err)
    end
  end
  return results, failed
end

--- Runs prepared items (see prepare_batch) with the batch options.
function M.run_batch(self, items, conc, opts)
  if self._batching then
    return nil, "mm: a batch cannot be started from a callback of another batch of the same client"
  end
  opts = opts or {}
  return true, run_batch(self, items, conc, opts.on_result, opts.on_progress, opts.on_hold)
end

-- ------------------------------------------------------------------------
-- Any other route: client:request(method, path, opts)

local METHODS = { GET = true, HEAD = true, DELETE = true, POST = true, PUT = true, PATCH = true }
local REQUEST_OPTIONS = { query = "table", body = "table|string", idempotent = "boolean", file = "string" }
local ANY = { read = endpoints.SHAPES.any, name = "request" }

-- pchar of RFC 3986 and "/" stay; other bytes are percent-encoded; a "%"
-- must start an escape already.
local function encode_path(path)
  if path:find("[%c%s]") then return nil, "path must not contain white space or control characters" end
  if path:find("[?#]") then return nil, "path must not contain '?' or '#' (use option 'query')" end
  if path:find("%%") and path:gsub("%%%x%x", ""):find("%%") then
    return nil, "path has a '%' that does not start an escape (%XX)"
  end
  for seg in path:gmatch("[^/]+") do
    -- "%2e" is "." (RFC 3986 6.2.2.2): a server decodes it before it
    -- resolves dot segments, and "/%2e%2e/" would leave /api/v4
    seg = seg:gsub("%%2[eE]", ".")
    if seg == "." or seg == ".." then return nil, "path must not contain '.' or '..' segments" end
  end
  return (path:gsub("[^%w%-%._~!%$&'%(%)%*%+,;=:@/%%]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function query_value(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then return codec.number_text(v) end
end

--- Builds a general request: url, body, ropts, row; or nil, the
-- argument's position and what is wrong with it.
function M.build_request(self, method, path, opts)
  if type(method) ~= "string" or not METHODS[method:upper()] then
    return nil, 1, "method must be one of GET, HEAD, POST, PUT, PATCH, DELETE"
  end
  method = method:upper()
  if type(path) ~= "string" or path == "" then return nil, 2, "path expected, got " .. typename(path) end
  opts = opts or {}
  if type(opts) ~= "table" then return nil, 3, "options table expected, got " .. typename(opts) end
  for k, v in pairs(opts) do
    local want = REQUEST_OPTIONS[k]
    if not want then return nil, 3, "unknown option '" .. tostring(k) .. "'" end
    if not want:find(type(v), 1, true) then
      return nil, 3, ("option '%s' must be a %s, got %s"):format(k, want:gsub("|", " or "), type(v))
    end
  end
  -- the server is the client's: a URL here would only become a path on it
  if path:find("^%a[%w+.-]*:") then
    return nil, 2, "path must be relative to /api/v4, not a URL (the server is the client's option 'url')"
  end
  path = path:gsub("^/?api/v4/", "/"):gsub("^/?api/v4$", "/")
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  local epath, why = encode_path(path)
  if not epath then return nil, 2, why end
  local url = self._root .. epath
  if opts.query then
    local names, pairs_list = {}, {}
    for k in pairs(opts.query) do
      if type(k) ~= "string" then return nil, 3, "option 'query' must have string keys" end
      names[#names + 1] = k
    end
    sort(names) -- a stable order
    for _, k in ipairs(names) do
      local v = opts.query[k]
      -- a table is a list of values: other keys or holes would be dropped unseen
      if type(v) == "table" and not list_length(v) then
        return nil, 3, "query value '" .. k .. "' must be a string, number, boolean or a list of them"
      end
      local list = type(v) == "table" and v or { v }
      for _, x in ipairs(list) do
        local s = query_value(x)
        if not s then return nil, 3, "query value '" .. k .. "' must be a string, number or boolean" end
        pairs_list[#pairs_list + 1] = { k, s }
      end
    end
    if #pairs_list > 0 then url = url .. "?" .. codec.query(pairs_list) end
  end
  local body = opts.body
  if type(body) == "table" then
    local err
    body, err = codec.encode(body)
    if not body then return nil, 3, "option 'body' cannot be sent as JSON: " .. tostring(err) end
  end
  if body and (method == "GET" or method == "HEAD") then return nil, 3, "a " .. method .. " request has no body" end
  local idempotent = opts.idempotent
  if idempotent == nil then idempotent = METHODS[method] and (method ~= "POST" and method ~= "PATCH") end
  local row = setmetatable({ idempotent = idempotent, method = method }, { __index = ANY })
  return url, body, opts.file and { output = opts.file } or nil, row
end

return M
