--- Clients for the specs: made against the stub, as a fixture user, with
-- retries off unless asked (a spec that wants retries says so); the
-- fixtures' ids by name; timing.
-- @usage
-- local clients = require "support.client"
-- local c = clients.new("sysadmin", { timeout = 2 })
-- local f = clients.fault("slow_headers:1", "sysadmin")
-- local took, token, err = clients.timed(function() return c:regen_token(clients.cmd("C_admin")) end)
local socket = require "socket"
local stub = require "support.stubctl"

local M = {}

--- A well-formed id that names nothing the stub knows.
M.UNKNOWN = "4xp9fdt7pbgium38k8k9kdzdwe"

local fixtures -- read once: the fixture ids and tokens never change

--- The stub's fixtures (users, teams, commands, jobs, ...).
function M.fixtures()
  fixtures = fixtures or stub.fixtures()
  return fixtures
end

--- The id of a fixture by its name: a command ("C_admin"), a team ("T"),
-- a channel ("CH"), a user ("basic"); `job(n)` is job Jn's.
function M.cmd(name) return M.fixtures().commands[name].id end
function M.team(name) return M.fixtures().teams[name].id end
function M.channel(name) return M.fixtures().channels[name].id end
function M.user(name) return M.fixtures().users[name].id end
function M.job(n) return M.fixtures().jobs["J" .. n].id end

--- A client for fixture user `user` (default sysadmin); opts as mm.new's
-- (url defaults to the stub, retries to 0).
function M.new(user, opts)
  -- required here, not at load: core_spec uses this module without `mm`
  local mm = require "mm"
  opts = opts or {}
  opts.url = opts.url or stub.url
  opts.token = opts.token or M.fixtures().users[user or "sysadmin"].token
  if opts.retries == nil then opts.retries = 0 end
  return mm.new(opts)
end

--- A client whose requests meet the stub's fault mode `mode`.
function M.fault(mode, user, opts)
  opts = opts or {}
  opts.url = stub.url .. "/__fault/" .. mode
  return M.new(user, opts)
end

--- Calls f(); returns the seconds it took, then everything f returned.
function M.timed(f)
  local t0 = socket.gettime()
  return (function(...) return socket.gettime() - t0, ... end)(f())
end

--- This process's id (to signal ourselves from a child).
function M.pid()
  local f = assert(io.open("/proc/self/stat", "rb"))
  local pid = f:read("*l"):match("^(%d+)")
  f:close()
  return pid
end

return M
