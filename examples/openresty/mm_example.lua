-- The event-loop half of the example: request handlers and a background
-- job watcher. Every Mattermost call goes through run(), which hands it to
-- the thread pool; the request or timer yields meanwhile, and nginx goes
-- on serving everyone else.
local cjson = require "cjson.safe"

-- luacheck: read globals ngx.run_worker_thread (lua-nginx-module 0.10.21+, newer than luacheck's ngx_lua std)

local M = {}

local POOL = "mm"          -- the thread_pool of nginx.conf
local POLL_INTERVAL = 1    -- seconds between two looks at a running job
local KEEP = 3600          -- seconds a finished job's state is kept
local WATCH_FOR = 3600     -- seconds a job is followed at most
local MAX_MISSES = 5       -- failed looks in a row before the watcher gives up
local TERMINAL = { success = true, error = true, canceled = true, warning = true }

-- What ngx.run_worker_thread says when every Lua VM of the pool is taken
-- (lua_worker_thread_vm_pool_size) or the thread pool's queue is full.
local BUSY = { ["no available Lua vm"] = true, ["ngx_thread_task_post failed"] = true }

-- mm_worker[fname](...) in the thread pool: its values, or nil and an error table.
local function run(fname, ...)
  local ok, value, err = ngx.run_worker_thread(POOL, "mm_worker", fname, ...)
  if not ok then return nil, { kind = BUSY[value] and "busy" or "worker", text = tostring(value) } end
  return value, err
end

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
  return ngx.exit(status)
end

-- Mattermost's own status for its refusals (403, 404 ...); 504 when it did
-- not answer in time; 503 when all our threads are taken; 500 for a failure
-- inside the thread (mm missing, no MM_URL); 502 for the rest.
local function status_of(err)
  if err.kind == "http" and err.status then return err.status end
  if err.kind == "timeout" or err.kind == "connect_timeout" then return 504 end
  if err.kind == "busy" then return 503 end
  if err.kind == "worker" then return 500 end
  return 502
end

local function fail(what, err)
  ngx.log(ngx.ERR, what, ": ", err.text)
  err.text = nil
  return reply(status_of(err), { error = err })
end

--- PUT /commands/{id}/regen_token: the command's new token.
function M.regen_token(id)
  local token, err = run("regen_token", id)
  if not token then return fail("regen_token " .. id, err) end
  return reply(200, { id = id, token = token })
end

local jobs = ngx.shared.mm_jobs

-- Records a state the watcher ends on: the last job seen, marked.
local function give_up(id, status, detail)
  local seen = jobs:get(id)
  local job = seen and cjson.decode(seen) or { id = id }
  job.watch = { status = status, detail = detail }
  jobs:set(id, cjson.encode(job), KEEP)
end

-- A timer callback: looks at the job once and, while it runs, schedules
-- the next look. No thread is held between two looks. A failed look (a
-- timeout, a 429, a busy thread pool) is tried again later, with a longer
-- pause each time, up to MAX_MISSES in a row; a job is followed for at
-- most WATCH_FOR seconds.
local watch

local function schedule(delay, id, deadline, misses)
  local ok, terr = ngx.timer.at(delay, watch, id, deadline, misses)
  if not ok then
    ngx.log(ngx.ERR, "cannot watch job ", id, ": ", terr)
    give_up(id, "watch_failed", terr)
  end
end

watch = function(premature, id, deadline, misses)
  if premature then return end -- nginx is shutting down
  local job, err = run("get_job", id)
  if not job then
    ngx.log(ngx.ERR, "watching job ", id, ": ", err.text)
    if misses + 1 >= MAX_MISSES then return give_up(id, "unknown", err.text) end
    return schedule(POLL_INTERVAL * 2 ^ (misses + 1), id, deadline, misses + 1)
  end
  jobs:set(id, cjson.encode(job), KEEP)
  if TERMINAL[job.status] then return end
  if ngx.now() >= deadline then return give_up(id, "not_finished", "still " .. job.status) end
  schedule(POLL_INTERVAL, id, deadline, 0)
end

--- POST /jobs?type=TYPE: creates the job, answers 202 at once and follows
-- it in the background.
function M.start_job(jtype)
  if not jtype or jtype == "" then return reply(400, { error = { message = "give ?type=JOB_TYPE" } }) end
  local job, err = run("create_job", jtype)
  if not job then return fail("create_job " .. jtype, err) end
  jobs:set(job.id, cjson.encode(job), KEEP)
  schedule(POLL_INTERVAL, job.id, ngx.now() + WATCH_FOR, 0)
  return reply(202, job)
end

--- GET /jobs/{id}: the job as last seen by the watcher.
function M.job_status(id)
  local seen = jobs:get(id)
  if not seen then return reply(404, { error = { message = "no job " .. id .. " was started here" } }) end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(seen)
end

return M
