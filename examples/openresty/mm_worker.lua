-- The blocking half of the example: functions that ngx.run_worker_thread
-- runs in nginx's thread pool, where waiting on libcurl stalls one pool
-- thread and never the event loop.
--
-- Each call gets a Lua VM from a pool of VMs separate from the event
-- loop's; a VM serves one call at a time and lives on, so this module is
-- loaded once per VM and keeps one client (and its open connections) per
-- VM. Values crossing back are copied without metatables, so errors are
-- returned as plain tables carrying their one-line text.
local mm = require "mm"

local M = {}

local client

-- The URL and token come from the environment (nginx's `env` directive),
-- so the token is in no config file and no log.
local function get_client()
  if not client then
    client = mm.new{ url = os.getenv("MM_URL") or "", token = os.getenv("MM_TOKEN") or "", timeout = 10 }
  end
  return client
end

local function plain(err)
  return {
    kind = err.kind, status = err.status, id = err.id, message = err.message,
    request_id = err.request_id, text = tostring(err),
  }
end

--- The new token of command `id`, or nil and an error table.
function M.regen_token(id)
  local token, err = get_client():regen_token(id)
  if not token then return nil, plain(err) end
  return token
end

--- Creates a job of type `jtype`: the job, or nil and an error table.
function M.create_job(jtype)
  local job, err = get_client():create_job{ type = jtype }
  if not job then return nil, plain(err) end
  return job
end

--- The job `id`, or nil and an error table.
function M.get_job(id)
  local job, err = get_client():get_job(id)
  if not job then return nil, plain(err) end
  return job
end

return M
