-- Test locations for spec/openresty_spec.lua, served by the example's nginx
-- beside its own: mm.ngx used directly, its answers described as JSON for
-- the spec to check. Never part of the example.
--
--   /t/regen/ID        regen_token on a client of the plain stub URL (pool mmw)
--   /t/wait/ID?interval=S&timeout=S   wait_job on that client
--   /t/errors?deleted=ID&live=ID      error objects and raised messages, observed here
--   /t/create?n=N      N jobs created in one batch, not followed by the example's watcher
--   /t/stats?pool=NAME pool_stats
local cjson = require "cjson.safe"
local mm = require "mm.ngx"

local M = {}

-- Pools the spec's nginx.conf declares: mmw threads=2, mmb threads=1.
mm.set_pool("mmw", { threads = 2 })
mm.set_pool("mmb", { threads = 1 })

local plain -- a client of the plain stub URL on pool mmw
local function client()
  plain = plain or mm.new{ url = os.getenv("MM_TEST_URL"), token = os.getenv("MM_TOKEN"), pool = "mmw" }
  return plain
end

local function describe(err)
  if err == nil then return nil end
  return {
    is_error = mm.is_error(err), text = tostring(err), kind = err.kind, status = err.status, id = err.id,
    message = err.message, request_id = err.request_id, method = err.method, path = err.path,
    attempts = err.attempts, job_status = type(err.job) == "table" and err.job.status or nil,
  }
end

local function reply(value)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
end

function M.regen(id)
  local t0 = ngx.now()
  local token, err = client():regen_token(id)
  ngx.update_time()
  reply{ token = token, error = describe(err), elapsed = ngx.now() - t0 }
end

function M.wait(id)
  local args = ngx.req.get_uri_args()
  local t0 = ngx.now()
  local job, err = client():wait_job(id, { interval = tonumber(args.interval), timeout = tonumber(args.timeout) })
  ngx.update_time()
  reply{ status = job and job.status, error = describe(err), elapsed = ngx.now() - t0 }
end

-- What a pcall raised, without the place ("file:line: ").
local function raised(f, ...)
  local ok, msg = pcall(f, ...)
  if ok then return "did not raise" end
  return (tostring(msg):gsub("^[^ ]-:%d+: ", ""))
end

function M.errors()
  local args = ngx.req.get_uri_args()
  local c, out = client(), {}
  local _, e404 = c:regen_token(args.deleted)
  out.e404 = describe(e404)
  out.e404.same_type = getmetatable(e404) == getmetatable(select(2, c:get_job(("a"):rep(26))))
  out.bad_id = raised(c.regen_token, c, "x")
  out.dot_call = raised(c.regen_token, "x")
  out.bad_new = raised(mm.new, { url = 1 })
  out.bad_option = raised(mm.new, { url = "http://x", token = "t", queue_timeout = -1 })
  out.not_crossing = raised(c.create_job, c, { type = "x", data = { f = print } })
  out.bad_batch = raised(c.batch, c, { { "regen_token", "x" } })
  out.on_progress = raised(c.batch, c, {}, { on_progress = print })
  out.bad_wait = raised(c.wait_job, c, "x")
  local results, failed = c:batch({ { "regen_token", args.live }, { "regen_token", args.deleted } })
  out.batch = { failed = failed, first = type(results[1]), second = describe(results[2]) }
  -- debug lines come back to the caller, in its context
  local lines = {}
  local traced = mm.new{ url = os.getenv("MM_TEST_URL"), token = os.getenv("MM_TOKEN"), pool = "mmw",
    debug = function(line) lines[#lines + 1] = line end }
  traced:regen_token(args.live)
  out.debug = lines
  -- Pool mmb has one dispatcher: a call to a server that answers in 1 s
  -- holds it, and a call behind it gives up after queue_timeout.
  local slow = mm.new{ url = os.getenv("MM_TEST_SLOW_URL"), token = os.getenv("MM_TOKEN"), pool = "mmb",
    queue_timeout = 0.2 }
  local first = ngx.thread.spawn(function() return slow:regen_token(args.live) end)
  ngx.sleep(0.05)
  local _, busy = slow:regen_token(args.live)
  out.busy = describe(busy)
  local _, token = ngx.thread.wait(first)
  out.busy_first = type(token)
  out.stats = mm.pool_stats("mmb")
  reply(out)
end

-- N jobs made on the stub through mm.ngx, outside the example's watcher.
function M.create()
  local calls = {}
  for i = 1, tonumber(ngx.var.arg_n) do calls[i] = { "create_job", { type = "active_users" } } end
  local jobs, failed = client():batch(calls)
  local ids = {}
  for i, job in ipairs(jobs) do ids[i] = job.id end
  reply{ ids = ids, failed = failed }
end

function M.stats()
  reply(mm.pool_stats(ngx.var.arg_pool))
end

return M
