--- `mm` for OpenResty: the same API, every call run in nginx's thread pool.
--
-- `mm` waits on libcurl, and nothing may wait in nginx's event loop. With
-- `local mm = require "mm.ngx"` in a yieldable phase (rewrite, access,
-- content, `ngx.timer.at`), `mm.new`, `mm.configure`, the endpoint methods,
-- `batch`, `wait_job` and `mm.is_error` work as in `mm`, and each call runs
-- in a thread pool (`ngx.run_worker_thread`) while the request yields.
--
-- How calls reach the pool, per nginx worker and pool: a call joins a
-- queue and its caller waits on a semaphore of its own. Up to `threads`
-- dispatchers (light threads of `ngx.timer.at`) each take every queued
-- call of one client configuration at once, run them as one `mm` batch
-- (concurrent, over the core's curl_multi) in one pool thread, and wake
-- each caller with its result. One thread handoff and one blocking wait
-- thus serve every call that arrived meanwhile, and at most `threads`
-- pool threads and Lua VMs are in use per worker: calls beyond that wait
-- in the queue, never in nginx's thread queue or for a Lua VM (nginx's
-- "no available Lua vm"). A call still queued after `queue_timeout`
-- seconds fails with an error of kind `"busy"`; nothing is logged per call.
--
-- The pool's Lua VMs are separate from the event loop's and serve one call
-- at a time; this module, loaded there too, keeps in each VM one `mm`
-- client per distinct configuration, so connections are reused. Values
-- crossing between the VMs are copied without metatables: error objects
-- get theirs back here, so `tostring(err)` and `mm.is_error(err)` work.
--
-- @module mm.ngx
-- @usage
-- -- nginx.conf: thread_pool mm threads=4; lua_worker_thread_vm_pool_size 100; env MM_URL; env MM_TOKEN;
-- local mm = require "mm.ngx"
-- local token, err = mm.regen_token(ngx.var.id)   -- the request yields meanwhile
-- if not token then ngx.log(ngx.ERR, tostring(err)) return ngx.exit(502) end
local mm = require "mm"
local mm_client = require "mm.client"
local args = require "mm.args"
local errors = require "mm.errors"
local jobs = require "mm.jobs"

-- luacheck: read globals ngx.run_worker_thread (lua-nginx-module 0.10.21+, newer than luacheck's ngx_lua std)

local M = { _VERSION = mm._VERSION }

local pairs, ipairs, type, select, tostring = pairs, ipairs, type, select, tostring
local unpack = unpack or table.unpack -- luacheck: compat
local concat, sort = table.concat, table.sort
local is_error = mm.is_error

-- The methods made from mm's endpoint table: every row's name and aliases.
local ENDPOINTS = {}
for _, row in ipairs(mm.endpoints) do
  ENDPOINTS[row.name] = true
  for _, alias in ipairs(row.aliases or {}) do ENDPOINTS[alias] = true end
end

-- ========================================================================
-- The thread side: runs in the pool's Lua VMs, which are plain Lua states
-- (no `ngx` there). A VM runs one call at a time, so module state is safe.

local MAX_CLIENTS = 32 -- per VM; the least recently used is closed beyond
local clients, used, tick = {}, {}, 0
local debug_lines -- lines of the current call's client, when it logs

local function collect_line(line)
  if debug_lines then debug_lines[#debug_lines + 1] = line end
end

-- The VM's client for this configuration. `key` stands for the
-- configuration (a digest: the token is part of it, and of no message).
local function thread_client(key, cfg)
  tick = tick + 1
  local c = clients[key]
  if not c then
    local n, oldest = 0
    for k in pairs(clients) do
      n = n + 1
      if not oldest or used[k] < used[oldest] then oldest = k end
    end
    if n >= MAX_CLIENTS then
      clients[oldest]:close()
      clients[oldest], used[oldest] = nil, nil
    end
    local opts = {}
    for k, v in pairs(cfg) do opts[k] = v end
    if cfg.debug then opts.debug = collect_line end
    c = mm.new(opts)
    clients[key] = c
  end
  used[key] = tick
  return c
end

-- Runs calls[i..j] as one batch into results/marks ("e": an error object;
-- "r": the message a call raised). mm checks a whole batch before sending
-- any of it, so one bad call refuses them all: then the halves go
-- separately, down to the bad call alone. A call alone runs through its
-- own method: the lighter path, and the message the caller expects from
-- a bad argument (for a single call, not a batch item).
local function run_calls(client, calls, i, j, results, marks)
  local part = calls
  if i ~= 1 or j ~= #calls then part = { unpack(calls, i, j) } end
  local ok, res = false, nil
  if i < j then ok, res = pcall(client.batch, client, part, { concurrency = #part }) end
  if ok then
    for k = 1, #part do
      local v = res[k]
      results[i + k - 1] = v
      if is_error(v) then marks[i + k - 1] = "e" end
    end
  elseif i == j then
    local call = calls[i]
    local done, v, err = pcall(client[call[1]], client, unpack(call, 2, table.maxn(call)))
    if not done then
      results[i], marks[i] = v, "r"
    elseif v == nil and is_error(err) then
      results[i], marks[i] = err, "e"
    else
      results[i] = v
    end
  else
    local mid = math.floor((i + j) / 2)
    run_calls(client, calls, i, mid, results, marks)
    run_calls(client, calls, mid + 1, j, results, marks)
  end
end

--- Internal: what a dispatcher runs in the pool. Not part of the API.
-- `calls` are `{ name, arg1, ... }`; with `batch_opts` they are the
-- caller's own batch, otherwise single calls of several callers.
-- Returns "ok", results, marks, debug lines; or "raise", message, nil, lines.
function M._thread(key, cfg, calls, batch_opts)
  local client = thread_client(key, cfg)
  debug_lines = cfg.debug and {} or nil
  local results, marks = {}, {}
  if batch_opts then
    local ok, res = pcall(client.batch, client, calls, batch_opts)
    if not ok then
      local lines = debug_lines
      debug_lines = nil
      return "raise", res, nil, lines
    end
    for i = 1, #calls do
      if is_error(res[i]) then marks[i] = "e" end
    end
    results = res
  else
    run_calls(client, calls, 1, #calls, results, marks)
  end
  local lines = debug_lines
  debug_lines = nil
  return "ok", results, marks, lines
end

-- ========================================================================
-- The event loop side.

local ngx = ngx -- nil in the pool's VMs, where none of what follows runs
local semaphore -- ngx.semaphore, loaded on first use (absent in the pool's VMs)

local argmsg, typename = mm_client.argmsg, args.typename
-- Error objects lose their metatable on the way back from the pool.
local error_from = mm.error_from

-- Only strings, numbers, booleans, nil and tables of them cross into the
-- pool's VMs; nginx copies tables without cycle checks, so depth is
-- bounded here. Returns nil when v can cross, or what is wrong.
local MAX_DEPTH = 32
local CROSSES = { string = true, number = true, boolean = true, ["nil"] = true }

local function crossing_problem(v, depth)
  local t = type(v)
  if CROSSES[t] then return nil end
  if t ~= "table" then return "a " .. t .. " cannot be passed to the thread pool" end
  if depth >= MAX_DEPTH then return "tables nested deeper than " .. MAX_DEPTH .. " (or a cycle)" end
  for k, x in pairs(v) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then
      return "a " .. tk .. " key cannot be passed to the thread pool"
    end
    local why = crossing_problem(x, depth + 1)
    if why then return why end
  end
end

-- { name, ... } with trailing nils dropped; or nil and the message for
-- an argument that cannot cross into the pool.
local function pack_call(name, ...)
  local n = select("#", ...)
  while n > 0 and select(n, ...) == nil do n = n - 1 end
  local call = { name, ... }
  for i = n + 2, #call do call[i] = nil end
  for i = 1, n do
    local v = call[i + 1]
    if type(v) ~= "string" then
      local why = crossing_problem(v, 0)
      if why then return nil, argmsg(name, i, why) end
    end
  end
  return call
end

-- Distinct clients with the same configuration share the pool VMs' client;
-- a debug function is told apart by an id of its own.
local debug_ids, next_debug_id = setmetatable({}, { __mode = "k" }), 0

-- Seconds-valued option of mm.ngx: a number in (0, 86400].
local function seconds_problem(k, v)
  if type(v) ~= "number" or not (v > 0 and v <= 86400) then
    return "option '" .. k .. "' must be a number of seconds above 0 (at most 86400)"
  end
end

-- The pools, per worker: name -> settings and state.
local pools = {}
local POOL_DEFAULTS = { threads = 4, max_batch = 256 }
local MAX_BATCH = 1024 -- mm.core's largest concurrency

local function pool_problem(opts)
  if type(opts) ~= "table" then return "options table expected, got " .. typename(opts) end
  for k, v in pairs(opts) do
    if POOL_DEFAULTS[k] == nil then return "unknown option '" .. tostring(k) .. "'" end
    local top = k == "threads" and 1024 or MAX_BATCH
    if type(v) ~= "number" or v < 1 or v > top or math.floor(v) ~= v then
      return ("option '%s' must be a whole number from 1 to %d"):format(k, top)
    end
  end
end

--- Sets how mm.ngx uses a thread pool in this worker; call it before the
-- pool's first use (in `init_by_lua*` or `init_worker_by_lua*`).
-- @tparam string name the pool (`thread_pool NAME ...` in nginx.conf)
-- @tparam table opts `threads` (default 4): calls in the pool at once per
-- worker, at most the pool's `threads` and `lua_worker_thread_vm_pool_size`;
-- `max_batch` (default 256): calls one thread call carries at most.
-- @usage
-- require("mm.ngx").set_pool("mm", { threads = 8 })
function M.set_pool(name, opts)
  if type(name) ~= "string" or name == "" then error(argmsg("set_pool", 1, "pool name expected"), 2) end
  local why = pool_problem(opts)
  if why then error(argmsg("set_pool", 2, why), 2) end
  local p = pools[name]
  if p and p.started then error(argmsg("set_pool", 1, "pool '" .. name .. "' is already in use"), 2) end
  p = p or { name = name }
  p.threads = opts.threads or POOL_DEFAULTS.threads
  p.max_batch = opts.max_batch or POOL_DEFAULTS.max_batch
  pools[name] = p
end

local function pool_of(name)
  local p = pools[name]
  if not p then
    p = { name = name, threads = POOL_DEFAULTS.threads, max_batch = POOL_DEFAULTS.max_batch }
    pools[name] = p
  end
  if not p.started then
    semaphore = semaphore or require "ngx.semaphore"
    p.started = true
    p.queue = {}       -- calls not yet taken, oldest first
    p.work = semaphore.new(0) -- posted to wake an idle dispatcher
    p.dispatchers, p.idle, p.wakes = 0, 0, 0
    p.queued, p.oldest = 0, nil  -- live calls in the queue, when the oldest came
    p.inflight, p.inflight_calls, p.hold = 0, 0, 0.001 -- thread calls running, their calls, the hold time
    p.reported = {}    -- thread failures already logged (once each)
    p.dispatches, p.calls, p.busy = 0, 0, 0 -- counters for pool_stats
  end
  return p
end

-- Each caller waits on a semaphore of its own; one whose post was
-- consumed by its wait is clean and serves again.
local spare = {}

local function get_sema()
  local n = #spare
  if n > 0 then
    local s = spare[n]
    spare[n] = nil
    return s
  end
  return semaphore.new(0)
end

local BUSY_MESSAGES = { ["no available Lua vm"] = true, ["ngx_thread_task_post failed"] = true }

-- Hands each item its outcome of one thread call and wakes its caller.
local function deliver(p, items, ok, status, a, b, lines)
  if not ok or (status ~= "ok" and status ~= "raise") then
    local message = tostring(status)
    local kind = BUSY_MESSAGES[message] and "busy" or "thread"
    if not p.reported[message] then -- a misconfiguration: said once, not per call
      p.reported[message] = true
      ngx.log(ngx.ERR, "mm.ngx: thread pool '", p.name, "': ", message)
    end
    for _, item in ipairs(items) do
      if not item.done then
        item.result, item.mark = { kind = kind, message = "thread pool '" .. p.name .. "': " .. message }, "e"
      end
    end
  elseif status == "raise" then
    items[1].result, items[1].mark = a, "r"
  elseif items[1].batch then
    items[1].result, items[1].mark = a, b
  else
    for i, item in ipairs(items) do item.result, item.mark = a[i], b[i] end
  end
  -- a thread call's debug lines go to its first caller (all share the debug setting)
  items[1].lines = lines
  for _, item in ipairs(items) do
    if not item.done then
      item.done = true
      item.sema:post(1)
    end
  end
end

-- The oldest queued call and every other queued single call of the same
-- configuration (up to max_batch); a caller's own batch goes alone.
local function take(p)
  local queue, first = p.queue, nil
  local taken, rest = {}, {}
  for _, item in ipairs(queue) do
    if item.cancelled then -- luacheck: ignore 542 (timed out in the queue: dropped)
    elseif not first then
      first = item
      taken[1] = item
    elseif not first.batch and not item.batch and item.key == first.key and #taken < p.max_batch then
      taken[#taken + 1] = item
    else
      rest[#rest + 1] = item
    end
  end
  p.queue, p.queued = rest, #rest
  p.oldest = rest[1] and rest[1].since
  return taken
end

local IDLE_EXIT = 1     -- seconds a dispatcher waits for work before it ends
local MAX_HOLD = 0.005  -- seconds a call may wait for companions at most

-- Whether a thread call should start now. With none running, at once.
-- Beside running ones, when the queue holds as many calls as they carry
-- on average, or its oldest call has waited for as long as a thread call
-- takes (MAX_HOLD at most): fewer, larger thread calls cost less per call
-- than many small ones, and a call waits at most about one more round.
local function ready(p)
  if p.queued == 0 then return false end
  if p.inflight == 0 then return true end
  if p.inflight >= p.threads then return false end
  return p.queued * p.inflight >= p.inflight_calls or ngx.now() - p.oldest >= p.hold
end

-- One thread call for the items taken, and their outcomes handed over.
local function dispatch(p, items)
  p.dispatches, p.calls = p.dispatches + 1, p.calls + #items
  p.inflight, p.inflight_calls = p.inflight + 1, p.inflight_calls + #items
  local first, calls = items[1], {}
  for i, item in ipairs(items) do
    item.taken = true
    calls[i] = item.call
  end
  local t0 = ngx.now()
  local done, ok, status, a, b, lines = pcall(ngx.run_worker_thread, p.name, "mm.ngx", "_thread",
    first.key, first.cfg, first.batch and first.call or calls, first.batch)
  p.inflight, p.inflight_calls = p.inflight - 1, p.inflight_calls - #items
  local took = ngx.now() - t0
  p.hold = p.hold + (math.min(took, MAX_HOLD) - p.hold) / 8 -- a moving average of the round trip
  if not done then ok, status = false, ok end -- it raised: the message
  deliver(p, items, ok, status, a, b, lines)
end

-- A dispatcher (an ngx.timer.at light thread): runs thread calls while
-- there is work, and ends when it has had none for IDLE_EXIT seconds.
local function dispatcher(premature, p)
  while not premature do
    if ready(p) then
      local items = take(p)
      local ok, err = pcall(dispatch, p, items)
      if not ok then -- a bug here must not leave callers waiting: each gets the error
        p.inflight, p.inflight_calls = 0, 0
        deliver(p, items, false, "mm.ngx: " .. tostring(err))
      end
    else
      -- calls held for companions are sent when their time is up
      local wait = p.queued > 0 and math.max(0.001, p.hold - (ngx.now() - p.oldest)) or IDLE_EXIT
      p.idle = p.idle + 1
      local ok = p.work:wait(wait)
      p.idle = p.idle - 1
      if ok then p.wakes = p.wakes - 1 end
      if not ok and wait == IDLE_EXIT and p.queued == 0 then break end
    end
  end
  p.dispatchers = p.dispatchers - 1
end

-- After a call was queued: makes sure some dispatcher will look at the
-- queue when it should (now, or when the first call's hold is up).
local function wake(p)
  if not (p.queued == 1 or ready(p)) then return end
  if p.idle > p.wakes then
    p.wakes = p.wakes + 1
    p.work:post(1)
  elseif p.dispatchers < p.threads then
    local ok, err = ngx.timer.at(0, dispatcher, p)
    if ok then
      p.dispatchers = p.dispatchers + 1
    elseif p.dispatchers == 0 then
      return err
    end
  end
end

--- Counters of a pool in this worker, for monitoring: `dispatches`
-- (thread calls made), `calls` (calls they carried), `busy` (calls that
-- timed out in the queue), `queued` (waiting now), `dispatchers` (running).
-- @tparam[opt] string name the pool, default "mm"
function M.pool_stats(name)
  local p = pools[name or "mm"]
  if not p or not p.started then return { dispatches = 0, calls = 0, busy = 0, queued = 0, dispatchers = 0 } end
  local queued = 0
  for _, item in ipairs(p.queue) do
    if not item.cancelled then queued = queued + 1 end
  end
  return { dispatches = p.dispatches, calls = p.calls, busy = p.busy, queued = queued, dispatchers = p.dispatchers }
end

-- The phases where a caller can wait (ngx.semaphore's).
local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- Queues one item and waits for its outcome: result, mark (nil: a value;
-- "e": an error object; "r": a message to raise; a table: a batch's marks).
local function submit(client, item)
  if not ngx or not ngx.run_worker_thread then
    error("mm.ngx: needs nginx's lua module 0.10.21 or later (ngx.run_worker_thread)", 0)
  end
  local phase = ngx.get_phase()
  if not YIELDABLE[phase] then
    error("mm.ngx: cannot wait for a call in nginx's " .. phase
      .. " phase (use rewrite, access, content or a timer)", 0)
  end
  local p = pool_of(client._pool)
  item.key, item.cfg, item.debug = client._key, client._cfg, client._debug
  item.sema = get_sema()
  local q = p.queue
  q[#q + 1] = item
  item.since = ngx.now()
  p.queued = p.queued + 1
  if p.queued == 1 then p.oldest = item.since end
  local why = wake(p)
  if why then
    item.cancelled = true
    p.queued = p.queued - 1
    return { kind = "busy", message = "no dispatcher for thread pool '" .. p.name .. "': " .. why }, "e"
  end
  local qt = client._queue_timeout
  local deadline = ngx.now() + qt
  while true do
    -- once taken, the call ends by the client's own timeouts. Below a
    -- millisecond ngx.semaphore does not wait at all, and the cached
    -- clock would not move either: that is the deadline, or this loop
    -- would spin in the event loop.
    ngx.update_time()
    local left = item.taken and 60 or deadline - ngx.now()
    if left < 0.001 then left = 0 end
    local ok = left > 0 and item.sema:wait(left)
    if item.done then
      if ok then spare[#spare + 1] = item.sema end
      local out, lines = item.debug, item.lines
      if lines then
        for _, line in ipairs(lines) do
          if out == true then ngx.log(ngx.NOTICE, "mm: ", line) else out(line) end
        end
      end
      return item.result, item.mark
    end
    if not item.taken and (left == 0 or ngx.now() >= deadline) then
      item.cancelled = true
      p.queued, p.busy = p.queued - 1, p.busy + 1
      return { kind = "busy", message = ("no thread of pool '%s' free within %g s"):format(p.name, qt) }, "e"
    end
  end
end

-- ------------------------------------------------------------------------
-- Clients: what mm.new returns here. A client holds its configuration;
-- the pool's VMs hold the mm clients and their connections.

local Client = { __name = "mm.ngx.client" }
Client.__index = Client

local DEFAULT_POOL, DEFAULT_QUEUE_TIMEOUT = "mm", 10

-- Configurations mm.new has accepted (digest -> the text of its client),
-- so that making a client per request costs only a digest.
local checked, nchecked, MAX_CHECKED = {}, 0, 1000

-- A digest naming the configuration. The token is part of it, so the text
-- itself is kept nowhere.
local function digest(cfg, debug_id)
  local keys, parts = {}, {}
  for k in pairs(cfg) do keys[#keys + 1] = k end
  sort(keys)
  for i, k in ipairs(keys) do
    local v = cfg[k]
    v = type(v) == "number" and ("%.17g"):format(v) or tostring(v)
    parts[i] = k .. "=" .. #v .. ":" .. v
  end
  parts[#parts + 1] = "debug_id=" .. tostring(debug_id)
  return ngx.md5(concat(parts, "\n"))
end

-- A client from mm's options plus `pool` and `queue_timeout`; raises
-- what mm.new would, for function fname.
local function new_client(opts, fname)
  if type(opts) ~= "table" then error(argmsg(fname, 1, "options table expected, got " .. typename(opts)), 0) end
  local cfg, pool, qt = {}, DEFAULT_POOL, DEFAULT_QUEUE_TIMEOUT
  for k, v in pairs(opts) do
    if k == "pool" then
      if type(v) ~= "string" or v == "" then
        error(argmsg(fname, 1, "option 'pool' must be a thread pool's name"), 0)
      end
      pool = v
    elseif k == "queue_timeout" then
      local why = seconds_problem(k, v)
      if why then error(argmsg(fname, 1, why), 0) end
      qt = v
    else
      cfg[k] = v
    end
  end
  local dbg, debug_id = cfg.debug, nil
  if type(dbg) == "function" then
    debug_id = debug_ids[dbg]
    if not debug_id then
      next_debug_id = next_debug_id + 1
      debug_id, debug_ids[dbg] = next_debug_id, next_debug_id
    end
  end
  local key = digest(cfg, debug_id)
  local text = checked[key]
  if not text then
    -- mm checks the options (and makes no connection); its message is ours
    local ok, c = pcall(mm.new, cfg)
    if not ok then error((tostring(c):gsub("to 'new'", "to '" .. fname .. "'", 1)), 0) end
    text = tostring(c):gsub("^mm%.client", "mm.ngx client")
    c:close()
    if nchecked >= MAX_CHECKED then checked, nchecked = {}, 0 end
    checked[key], nchecked = text, nchecked + 1
  end
  if dbg then cfg.debug = true end -- the pool's client gathers the lines; they come back with the results
  return setmetatable({
    _key = key, _cfg = cfg, _pool = pool, _queue_timeout = qt, _text = text,
    _debug = dbg or nil, _scrub = errors.scrubber(cfg.token),
  }, Client)
end

-- Error messages raised at the caller of a public function, with its place.
local function raise(msg, level)
  error(msg, level + 1)
end

--- Makes a client: the options of `mm.new`, plus
-- `pool` (the thread pool's name, default `"mm"`) and `queue_timeout`
-- (seconds a call may wait for a pool thread, default 10; then it fails
-- with kind `"busy"`). A `debug` function is called by the caller after
-- its call, with the lines of the thread call that carried it (calls of
-- the same configuration carried together show once); `debug = true`
-- logs them with `ngx.log` at `notice` level.
-- @tparam table opts options
-- @return a client with the methods of an `mm` client
-- @usage local c = mm.new{ url = "https://chat.example.com", token = os.getenv("MM_TOKEN") }
function M.new(opts)
  local ok, c = pcall(new_client, opts, "new")
  if not ok then raise(c, 2) end
  return c
end

function Client:__tostring()
  if self._closed then return "mm.ngx client (closed)" end
  return self._text
end

--- Marks the client closed: using it again raises. Its connections belong
-- to the pool's VMs and stay for clients of the same configuration.
function Client:close()
  if getmetatable(self) ~= Client then error("mm: use c:close(), not c.close()", 2) end
  self._closed = true
end

local function self_problem(self, name)
  if getmetatable(self) ~= Client then
    return ("mm: call %s with a colon: client:%s(...), not client.%s(...)"):format(name, name, name)
  end
  if self._closed then return "mm: attempt to use a closed client" end
end

-- One endpoint call: value or nil, err. The public functions calling it
-- are level 2 here, so their callers are level 3.
local function invoke(self, name, ...)
  local why = self_problem(self, name)
  if why then raise(why, 3) end
  local call
  call, why = pack_call(name, ...)
  if not call then raise(why, 3) end
  local result, mark = submit(self, { call = call })
  if mark == "r" then raise(result, 3) end
  if mark == "e" then return nil, error_from(result) end
  return result
end

for name in pairs(ENDPOINTS) do
  Client[name] = function(self, ...)
    local value, err = invoke(self, name, ...) -- not a tail call: levels count
    return value, err
  end
end

--- Runs many calls concurrently in one pool thread, as `mm`'s `batch`
-- (`{ name, arg1, ... }` each; option `concurrency`). `on_progress` is not
-- available: the batch runs in another Lua VM.
-- @return the values and error objects in input order, and how many failed
function Client:batch(calls, opts)
  local why = self_problem(self, "batch")
  if why then raise(why, 2) end
  if type(calls) ~= "table" then raise(argmsg("batch", 1, "table expected, got " .. typename(calls)), 2) end
  why = crossing_problem(calls, 0)
  if why then raise(argmsg("batch", 1, why), 2) end
  if opts ~= nil then
    if type(opts) ~= "table" then raise(argmsg("batch", 2, "options table expected, got " .. type(opts)), 2) end
    if opts.on_progress ~= nil then
      raise(argmsg("batch", 2,
        "option 'on_progress' is not available in mm.ngx (the batch runs in the thread pool)"), 2)
    end
    why = crossing_problem(opts, 0)
    if why then raise(argmsg("batch", 2, why), 2) end
  end
  local result, mark = submit(self, { call = calls, batch = opts or {} })
  if mark == "r" then raise(result, 2) end
  local results, failed = {}, 0
  if mark == "e" then -- the thread call itself failed: so did every call
    for i = 1, #calls do
      local e = {}
      for k, v in pairs(result) do e[k] = v end
      results[i] = error_from(e)
    end
    return results, #calls
  end
  for i, m in pairs(mark) do
    if m == "e" then
      result[i] = error_from(result[i])
      failed = failed + 1
    end
  end
  return result, failed
end

local TERMINAL = { success = true, error = true, canceled = true, warning = true }

-- s with every occurrence of the token replaced (an id the caller passes
-- could be one).
--- Polls a job until it ends, as `mm`'s `wait_job` (options `timeout`,
-- default 60 s, and `interval`, default 1 s). Between polls the caller
-- sleeps with `ngx.sleep`: no pool thread is held meanwhile.
-- @return the final job, or nil and an error (kind `"job"`: it ended in
-- error; a timeout kind: not finished in time, the last job seen in
-- `err.job`; or the error of a poll)
function Client:wait_job(id, opts)
  local why = self_problem(self, "wait_job")
  if why then raise(why, 2) end
  local _, idwhy = args.types.id(id)
  if idwhy then raise(argmsg("wait_job", 1, idwhy), 2) end
  opts, why = jobs.check_wait_options(opts)
  if not opts then raise(argmsg("wait_job", 2, why), 2) end
  local call = { "get_job", id }
  local timeout, interval = opts.timeout or 60, opts.interval or 1
  ngx.update_time()
  local deadline = ngx.now() + timeout
  local scrub = self._scrub
  local path = scrub("/api/v4/jobs/" .. tostring(id))
  while true do
    local result, mark = submit(self, { call = call })
    if mark == "r" then raise(result, 2) end
    if mark == "e" then return nil, error_from(result) end
    local job = result
    if opts.on_poll then opts.on_poll(job) end
    if job.status == "error" then
      local detail = type(job.data) == "table" and type(job.data.error) == "string" and job.data.error
      return nil, error_from{
        kind = "job", job = job, method = "GET", path = path,
        message = scrub("job " .. id .. " ended in error" .. (detail and (": " .. detail) or "")),
      }
    end
    if TERMINAL[job.status] then return job end
    ngx.update_time()
    local left = deadline - ngx.now()
    if left <= 0 then
      return nil, error_from{
        kind = "wait_timeout", job = job, method = "GET", path = path,
        message = scrub("job " .. id .. " still " .. tostring(job.status) .. (" after %g s"):format(timeout)),
      }
    end
    ngx.sleep(interval < left and interval or left)
  end
end

-- ------------------------------------------------------------------------
-- The module-level functions, on a default client per worker.

local default_client

--- Sets the default client of the module-level functions (per nginx
-- worker: call it in `init_by_lua*`, `init_worker_by_lua*` or a handler).
-- Without it, the default client is made on first use from `MM_URL` and
-- `MM_TOKEN` (nginx passes them on with `env MM_URL; env MM_TOKEN;`).
-- @tparam table opts as for `new`
function M.configure(opts)
  local ok, c = pcall(new_client, opts, "configure")
  if not ok then raise(c, 2) end
  default_client = c
end

local function default()
  if default_client then return default_client end
  local url, token = os.getenv("MM_URL"), os.getenv("MM_TOKEN")
  if url == nil or url == "" then
    raise("mm: no server configured: set MM_URL and MM_TOKEN (and `env MM_URL; env MM_TOKEN;` in nginx.conf), "
      .. "or call mm.configure{ url = ..., token = ... }", 3)
  end
  if token == nil or token == "" then
    raise("mm: no token configured: set MM_TOKEN (and `env MM_TOKEN;` in nginx.conf), "
      .. "or call mm.configure{ url = ..., token = ... }", 3)
  end
  local ok, c = pcall(new_client, { url = url, token = token }, "configure")
  if not ok then
    raise("mm: " .. c:gsub("^bad argument #1 to 'configure' %((.*)%)$", "%1")
      :gsub("option 'url'", "MM_URL"):gsub("option 'token'", "MM_TOKEN"), 3)
  end
  default_client = c
  return c
end

for name in pairs(ENDPOINTS) do
  M[name] = function(...)
    local value, err = invoke(default(), name, ...)
    return value, err
  end
end

--- `batch` on the default client.
function M.batch(calls, opts)
  local results, failed = default():batch(calls, opts)
  return results, failed
end

--- `wait_job` on the default client.
function M.wait_job(id, opts)
  local job, err = default():wait_job(id, opts)
  return job, err
end

--- Tells whether a value is an `mm` error object (errors from the pool
-- are: they get mm's metatable back).
M.is_error = is_error

return M
