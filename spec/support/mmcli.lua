--- Runs the real `bin/mm` as a subprocess, for the CLI specs: in the
-- foreground (`run`), in the background to be signalled (`spawn`), and
-- against a one-off HTTP server that answers what a spec says (`fake`).
-- Every run is checked for credentials on stdout and stderr.
--
-- @usage
-- local cli = require "support.mmcli"
-- cli.secrets = { token1, token2 }
-- local r = cli.run({ "get-job", id }, { MM_URL = url, MM_TOKEN = token })
-- print(r.code, r.out, r.err)
local assert = require "luassert" -- busted gives it to specs only, not to modules

local M = {}

--- This Lua as make knows it: its interpreter, version and headers.
M.VERSION = _VERSION:match("%d+%.%d+")
M.LUA = rawget(_G, "jit") and { name = "luajit", incdir = "/usr/include/luajit-2.1" }
        or { name = "lua" .. M.VERSION, incdir = "/usr/include/lua" .. M.VERSION }

--- Credentials no run of bin/mm may print (the spec fills it).
M.secrets = {}

--- A string quoted for sh.
function M.q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local q = M.q

--- A shell command's exit status and output (portable: os.execute and
-- pclose report differently across Lua versions).
function M.sh(cmd)
  local p = io.popen(cmd .. "; echo \"exit $?\"")
  local out = p:read("*a")
  p:close()
  local text, code = out:match("^(.-)exit (%d+)\n$")
  return tonumber(code), text
end

local tmpfiles = {}

--- A temporary file (with `content` if given), removed by `cleanup`.
function M.tmpfile(content)
  local name = os.tmpname()
  tmpfiles[#tmpfiles + 1] = name
  if content then
    local f = assert(io.open(name, "wb"))
    f:write(content)
    f:close()
  end
  return name
end

function M.cleanup()
  for _, name in ipairs(tmpfiles) do os.remove(name) end
  tmpfiles = {}
end

function M.slurp(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

--- The shell words that run bin/mm (or `script`) with args and exactly
-- the MM_* variables of env (a variable set to false there is unset).
function M.command(args, env, script)
  local parts = { "env -u MM_URL -u MM_TOKEN -u MM_DEBUG -u MM_TIMEOUT -u MM_CONNECT_TIMEOUT -u MM_RETRIES"
                  .. " -u MM_CACERT -u MM_CAPATH" }
  for k, v in pairs(env or {}) do
    if not v then parts[#parts + 1] = "-u " .. k end
  end
  for k, v in pairs(env or {}) do
    if v then parts[#parts + 1] = q(k .. "=" .. v) end
  end
  parts[#parts + 1] = M.LUA.name .. " " .. q(script or "bin/mm")
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

local function checked(r)
  for _, s in ipairs(M.secrets) do
    assert(not r.out:find(s, 1, true), "a credential was printed on stdout: " .. r.out)
    assert(not r.err:find(s, 1, true), "a credential was printed on stderr: " .. r.err)
  end
  assert(not r.err:find("stack traceback", 1, true), "a traceback on stderr: " .. r.err)
  return r
end

--- Runs bin/mm; returns { code, out, err }. opts: `stdin` (text given on
-- stdin; else /dev/null), `script` (another copy of bin/mm).
function M.run(args, env, opts)
  opts = opts or {}
  local out, err = M.tmpfile(), M.tmpfile()
  local stdin = opts.stdin and M.tmpfile(opts.stdin) or "/dev/null"
  local code = M.sh(M.command(args, env, opts.script) .. " >" .. out .. " 2>" .. err .. " <" .. stdin)
  assert(code < 128, "bin/mm killed by signal " .. (code - 128))
  return checked{ code = code, out = M.slurp(out), err = M.slurp(err) }
end

--- Starts bin/mm in the background. Returns a process with `pid`,
-- `signal(name)`, `out()` and `err()` (stdout and stderr so far) and
-- `wait()` -> { code, out, err }. Job control (set -m) keeps SIGINT as
-- it is for a program run from a terminal: a non-interactive shell would
-- have it ignored.
function M.spawn(args, env)
  local out, err = M.tmpfile(), M.tmpfile()
  local p = io.popen("bash -c " .. q("set -m; " .. M.command(args, env) .. " >" .. out .. " 2>" .. err
    .. " </dev/null & echo $!; wait $!; echo \"exit $?\"") .. " 2>/dev/null") -- not bash's job notices
  local pid = assert(tonumber(p:read("*l")), "no pid")
  local proc = { pid = pid }
  function proc.signal(name)
    assert(os.execute("kill -" .. name .. " " .. pid))
  end
  function proc.out() return M.slurp(out) end
  function proc.err() return M.slurp(err) end
  function proc.wait()
    local rest = p:read("*a")
    p:close()
    local code = assert(tonumber(rest:match("exit (%d+)")), "no exit status: " .. rest)
    return checked{ code = code, out = M.slurp(out), err = M.slurp(err) }
  end
  return proc
end

--- A URL on 127.0.0.1 that takes connections and never answers (the
-- kernel completes them, nothing reads them): every request sent there
-- times out, and nothing acts on it later, as a slow server would after
-- the test. Returns the URL and a function that closes the listener.
function M.silent()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  return "http://127.0.0.1:" .. select(2, s:getsockname()), function() s:close() end
end

-- The one-off server: answers each connection with the next response of
-- the file it is given, then exits.
local SERVER = [[
local socket = require "socket"
local responses = dofile(arg[1])
local s = assert(socket.bind("127.0.0.1", 0))
s:settimeout(10)
print((select(2, s:getsockname()))); io.stdout:flush()
for _, r in ipairs(responses) do
  local c = s:accept()
  if not c then break end
  c:settimeout(10)
  local length = 0
  repeat
    local line = c:receive("*l")
    local n = line and line:lower():match("^content%-length:%s*(%d+)")
    if n then length = tonumber(n) end
  until not line or line == ""
  if length > 0 then c:receive(length) end
  c:send(("HTTP/1.1 %d Fake\r\nContent-Type: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")
    :format(r.status or 200, r.type or "application/json", #r.body, r.body))
  c:close()
end
]]

--- Starts a server on 127.0.0.1 that answers its n-th connection with
-- responses[n] ({ status = 200, type = "application/json", body = "..." })
-- and closes it. Returns its URL and a function that waits for it to end
-- (after the last response, or 10 s without a connection).
function M.fake(responses)
  local list = {}
  for i, r in ipairs(responses) do
    list[i] = ("{ status = %d, type = %q, body = %q }"):format(r.status or 200, r.type or "application/json", r.body)
  end
  local data = M.tmpfile("return { " .. table.concat(list, ",\n") .. " }\n")
  local script = M.tmpfile(SERVER)
  local p = io.popen(M.LUA.name .. " " .. q(script) .. " " .. q(data))
  local port = assert(tonumber(p:read("*l")), "the one-off server did not start")
  return "http://127.0.0.1:" .. port, function() p:close() end
end

return M
