-- The example's handlers and its job watcher, all in nginx's event loop.
-- `mm.ngx` runs each Mattermost call in the `mm` thread pool while the
-- request (or timer) yields, so nginx goes on serving everyone else.
local cjson = require "cjson.safe"
local mm = require "mm.ngx"

local M = {}

local TICK = 1             -- seconds between two rounds of the job watcher
local KEEP = 3600          -- seconds a job's last state is kept
local WATCH_FOR = 3600     -- seconds a job is followed at most
local MAX_MISSES = 5       -- failed looks in a row before the watcher gives up
local TERMINAL = { success = true, error = true, canceled = true, warning = true }

local jobs = ngx.shared.mm_jobs   -- job id -> the job as last seen (JSON)
local watch = ngx.shared.mm_watch -- job id -> { deadline, next_at, misses } of a job being followed
local TICK_LOCK = "tick"          -- in mm_watch: a round is running (never a job id: those are 26 characters)

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
  return ngx.exit(status)
end

-- Mattermost's own status for its refusals (403, 404 ...); 504 when it did
-- not answer in time; 503 when mm.ngx found no pool thread in time; 502
-- for the rest.
local function status_of(err)
  if err.kind == "http" and err.status then return err.status end
  if err.kind == "timeout" or err.kind == "connect_timeout" then return 504 end
  if err.kind == "busy" then return 503 end
  return 502
end

-- The answer for a failed call. Its one line (token-free: mm redacts it)
-- goes to the error log, except for "busy", which is load, not a fault,
-- and would otherwise write a line per request when nginx is saturated.
local function fail(what, err)
  if err.kind ~= "busy" then ngx.log(ngx.WARN, what, ": ", tostring(err)) end
  return reply(status_of(err), { error = {
    kind = err.kind, status = err.status, id = err.id, message = err.message, request_id = err.request_id,
  } })
end

--- PUT /commands/{id}/regen_token: the command's new token.
function M.regen_token(id)
  local token, err = mm.regen_token(id)
  if not token then return fail("regen_token " .. id, err) end
  return reply(200, { id = id, token = token })
end

-- Records the state a watch ended in, on the last job seen.
local function give_up(id, status, detail)
  local seen = jobs:get(id)
  local job = seen and cjson.decode(seen) or { id = id }
  job.watch = { status = status, detail = detail }
  jobs:set(id, cjson.encode(job), KEEP)
  watch:delete(id)
end

--- POST /jobs?type=TYPE: creates the job, answers 202 at once; the
-- watcher follows it from then on. `jtype`: the decoded argument (a
-- table when repeated, true when it has no value).
function M.start_job(jtype)
  if type(jtype) ~= "string" or jtype == "" then
    return reply(400, { error = { message = "give one ?type=JOB_TYPE" } })
  end
  local job, err = mm.create_job{ type = jtype }
  if not job then return fail("create_job " .. jtype, err) end
  jobs:set(job.id, cjson.encode(job), KEEP)
  local now = ngx.now()
  -- safe_set: a full dict refuses this job rather than dropping another's watch
  local ok, werr = watch:safe_set(job.id, cjson.encode{ deadline = now + WATCH_FOR, next_at = now + TICK, misses = 0 },
    WATCH_FOR + 60)
  if not ok then give_up(job.id, "watch_failed", werr) end
  return reply(202, job)
end

--- GET /jobs/{id}: the job as last seen by the watcher.
function M.job_status(id)
  local seen = jobs:get(id)
  if not seen then return reply(404, { error = { message = "no job " .. id .. " was started here" } }) end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(seen)
end

-- One round of the watcher: every followed job that is due is looked at,
-- all in one mm.batch (one thread call), whatever the number of jobs. A
-- failed look (a timeout, a 429, a busy pool) is tried again later, with a
-- longer pause each time, up to MAX_MISSES in a row; a job is followed for
-- at most WATCH_FOR seconds.
local function round()
  local now = ngx.now()
  local ids, calls, states = {}, {}, {}
  for _, id in ipairs(watch:get_keys(0)) do
    local st = id ~= TICK_LOCK and cjson.decode(watch:get(id) or "null")
    if st and st.next_at <= now then
      ids[#ids + 1], calls[#calls + 1], states[id] = id, { "get_job", id }, st
    end
  end
  if #calls == 0 then return end
  local results = mm.batch(calls, { concurrency = 32 })
  now = ngx.now()
  for i, id in ipairs(ids) do
    local job, st = results[i], states[id]
    if mm.is_error(job) then
      if job.kind ~= "busy" then ngx.log(ngx.WARN, "watching job ", id, ": ", tostring(job)) end
      st.misses = st.misses + 1
      if st.misses >= MAX_MISSES then
        give_up(id, "unknown", tostring(job))
      else
        st.next_at = now + TICK * 2 ^ st.misses
        watch:set(id, cjson.encode(st), WATCH_FOR + 60)
      end
    else
      jobs:set(id, cjson.encode(job), KEEP)
      if TERMINAL[job.status] then
        watch:delete(id)
      elseif now >= st.deadline then
        give_up(id, "not_finished", "still " .. tostring(job.status))
      else
        st.next_at, st.misses = now + TICK, 0
        watch:set(id, cjson.encode(st), WATCH_FOR + 60)
      end
    end
  end
end

-- The timer of each worker. The rounds of all workers take turns: one
-- at a time (the lock expires by itself if a worker dies during one).
local function tick(premature)
  if premature then return end -- nginx is shutting down
  if not watch:add(TICK_LOCK, true, 60) then return end
  local ok, err = pcall(round)
  watch:delete(TICK_LOCK)
  if not ok then ngx.log(ngx.ERR, "job watcher: ", err) end
end

--- init_worker_by_lua: starts this worker's watcher timer.
function M.init_worker()
  local ok, err = ngx.timer.every(TICK, tick)
  if not ok then ngx.log(ngx.ERR, "cannot start the job watcher: ", err) end
end

return M
