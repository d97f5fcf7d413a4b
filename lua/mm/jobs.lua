--- Calls made of several requests: waiting for a job, rotating a team's
-- command tokens. Each is a function of (client, ...) returning what the
-- method returns, or nil and the message to raise for a bad argument.
-- @module mm.jobs
local core = require "mm.core"
local client = require "mm.client"
local endpoints = require "mm.endpoints"
local errors = require "mm.errors"
local args = require "mm.args"

local M = {}

local monotime, sleep = core.monotime, core.sleep
local min = math.min
local argmsg, check_self = client.argmsg, client.check_self

local TERMINAL = { success = true, error = true, canceled = true, warning = true }
local WAIT_OPTIONS = { timeout = "number", interval = "number", on_poll = "function" }

--- wait_job's options checked: the table (nil: none), or nil and why.
local function check_wait_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then return nil, "options table expected, got " .. type(opts) end
  for k, v in pairs(opts) do
    local want = WAIT_OPTIONS[k]
    if not want then return nil, "unknown option '" .. tostring(k) .. "'" end
    if type(v) ~= want then return nil, ("option '%s' must be a %s"):format(k, want) end
    if want == "number" then
      -- an interval of 0 would poll the server in a tight loop
      local low = k == "interval" and 0.001 or 0
      if not (v >= low and v <= 86400) then
        return nil, ("option '%s' must be a number of seconds from %g to 86400"):format(k, low)
      end
    end
  end
  return opts
end

M.check_wait_options = check_wait_options

--- client:wait_job(id, opts): polls until the job ends. `timeout` bounds
-- the whole call: each poll gets at most the time left.
function M.wait_job(self, id, opts)
  local why = check_self(self, "wait_job")
  if why then return nil, why end
  local _, idwhy = args.types.id(id)
  if idwhy then return nil, argmsg("wait_job", 1, idwhy) end
  opts, why = check_wait_options(opts)
  if not opts then return nil, argmsg("wait_job", 2, why) end
  local timeout, interval, on_poll = opts.timeout or 60, opts.interval or 1, opts.on_poll
  local row = endpoints.by_name.get_job
  local url = row.build(self._root, id)
  local path = self._scrub("/api/v4/jobs/" .. id)
  local deadline = monotime() + timeout
  local last
  local function stop(kind, message, cause)
    return true, nil, errors.new{ kind = kind, job = last, method = "GET", path = path, cause = cause,
                                  message = self._scrub(message) }
  end
  local function give_up(cause)
    -- concatenation, not %s: Lua 5.1's format stops at a NUL in a server's status
    return stop("wait_timeout", "job " .. id .. " still " .. (last and tostring(last.status) or "unseen")
      .. (" after %g s"):format(timeout), cause)
  end
  while true do
    local left = deadline - monotime()
    if left <= 0 then return give_up() end
    local job, err = client.perform(self, row, "GET", url, nil, { timeout = min(self._timeout, left) }, deadline)
    if not job then
      -- a poll cut short by the deadline, or a retry it left no time for
      if err.kind == "wait_timeout" or monotime() >= deadline - 0.001 then return give_up(err) end
      if err.kind == "canceled" then return stop("canceled", "stopped waiting for job " .. id .. ": interrupted") end
      err.job = last
      return true, nil, err
    end
    last = job
    if on_poll then on_poll(job) end
    if job.status == "error" then
      local detail = type(job.data) == "table" and type(job.data.error) == "string" and job.data.error
      return stop("job", "job " .. id .. " ended in error" .. (detail and (": " .. detail) or ""))
    end
    if TERMINAL[job.status] then return true, job end
    left = deadline - monotime()
    if left <= 0 then return give_up() end
    if not sleep(min(interval, left), self._interrupt) then
      return stop("canceled", "stopped waiting for job " .. id .. ": interrupted")
    end
  end
end

local ROTATE_OPTIONS = { commands = "table", concurrency = "number", on_result = "function",
                         on_hold = "function" }

--- client:rotate_team_tokens(team_id, opts): every custom command of the
-- team (or those listed in opts.commands) gets a new token. Returns
-- rotated, failed: lists of {id, trigger, token} and {id, trigger,
-- error}; or nil, err when the team's commands cannot be listed.
function M.rotate_team_tokens(self, team_id, opts)
  local why = check_self(self, "rotate_team_tokens")
  if why then return nil, why end
  local _, idwhy = args.types.id(team_id)
  if idwhy then return nil, argmsg("rotate_team_tokens", 1, "team " .. idwhy) end
  opts = opts or {}
  if type(opts) ~= "table" then return nil, argmsg("rotate_team_tokens", 2, "options table expected") end
  for k, v in pairs(opts) do
    if not ROTATE_OPTIONS[k] then
      return nil, argmsg("rotate_team_tokens", 2, "unknown option '" .. tostring(k) .. "'")
    end
    if type(v) ~= ROTATE_OPTIONS[k] then
      return nil, argmsg("rotate_team_tokens", 2, ("option '%s' must be a %s"):format(k, ROTATE_OPTIONS[k]))
    end
  end
  -- every option checked before the listing is sent
  local _, cwhy = client.check_batch_options("rotate_team_tokens", { concurrency = opts.concurrency })
  if cwhy then return nil, cwhy end
  local wanted
  if opts.commands then
    local _, lwhy = client.list_length(opts.commands)
    if lwhy then return nil, argmsg("rotate_team_tokens", 2, "option 'commands' must be a list of ids: " .. lwhy) end
    wanted = {}
    for i, id in ipairs(opts.commands) do
      local _, w = args.types.id(id)
      if w then return nil, argmsg("rotate_team_tokens", 2, ("option 'commands' item #%d: %s"):format(i, w)) end
      if wanted[id] then return nil, argmsg("rotate_team_tokens", 2, "command " .. id .. " is listed twice") end
      wanted[id] = i
    end
  end
  local list_row = endpoints.by_name.list_commands
  local url = list_row.build(self._root, { team_id = team_id, custom_only = true })
  local cmds, err = client.perform(self, list_row, "GET", url)
  if not cmds then return true, nil, err end
  local chosen, ids, failed = {}, {}, {}
  for _, cmd in ipairs(cmds) do
    if type(cmd.id) == "string" and (not wanted or wanted[cmd.id]) then
      chosen[#chosen + 1] = cmd
      ids[#ids + 1] = cmd.id
      if wanted then wanted[cmd.id] = nil end
    end
  end
  local on_result = opts.on_result
  -- the ones not listed, in the order given
  for _, id in ipairs(wanted and opts.commands or {}) do
    if wanted[id] then
      local e = errors.new{ kind = "not_found", method = "GET", path = "/api/v4/commands",
        message = "command " .. id .. " is not a custom command of team " .. team_id .. " that this user may manage" }
      failed[#failed + 1] = { id = id, error = e }
      if on_result then on_result({ id = id }, nil, e) end
    end
  end
  local rotated = {}
  local items, conc = client.prepare_batch(self, "rotate_team_tokens", "regen_token", ids,
    { concurrency = opts.concurrency }, endpoints.by_name)
  if not items then return nil, conc end
  local ok, results = client.run_batch(self, items, conc, {
    on_hold = opts.on_hold,
    on_result = function(i, token, e)
      local cmd = chosen[i]
      if token then
        rotated[#rotated + 1] = { id = cmd.id, trigger = cmd.trigger, token = token }
      else
        failed[#failed + 1] = { id = cmd.id, trigger = cmd.trigger, error = e }
      end
      if on_result then on_result(cmd, token, e) end
    end,
  })
  if not ok then return nil, results end
  return true, rotated, failed
end

return M
