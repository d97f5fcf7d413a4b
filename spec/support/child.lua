--- Child Lua processes for the specs: the interpreter running the specs,
-- with the same module paths (and environment, LD_PRELOAD included: under
-- make test-asan a child loading the core needs the sanitizer runtime).
local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- The interpreter running the specs (spec/run starts busted as `LUA busted`).
M.lua = arg and arg[-1] or "lua5.4"

--- A shell command that runs the interpreter with the specs' module paths,
-- `env` ("NAME=value ...", may be empty) set for it; append its arguments.
function M.command(env)
  return ("%s LUA_PATH=%s LUA_CPATH=%s %s"):format(env or "", q(package.path), q(package.cpath), M.lua)
end

--- Runs a Lua snippet in a child process; returns what it wrote (stdout
-- and stderr unless `redirect` says otherwise).
function M.run(env, script, redirect)
  local f = assert(io.popen(M.command(env) .. " -e " .. q(script) .. " " .. (redirect or "2>&1")))
  local out = f:read("*a")
  f:close()
  return out
end

return M
