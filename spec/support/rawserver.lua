--- A canned HTTP server, independent of `mm` and of the stub, for answers
-- no well-behaved server gives (HTTP/0.9, giant header lines, odd JSON):
-- a child Lua process (luasocket) that takes one connection per canned
-- answer, reads the request (head and Content-Length body), sends the
-- answer's bytes exactly and closes the connection.
--
-- @usage
-- local rawserver = require "support.rawserver"
-- local srv = rawserver.start{ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]" }
-- ... a client on srv.url ...
-- local requests = srv:finish() -- the raw requests received, in order
local socket = require "socket"
local child = require "support.child"

local M = {}

-- The child: reads its answers from the file named by arg 1 (records
-- "<length>\n<bytes>"), prints its port, serves, and at the end prints
-- the requests it got as records. A connection whose request line is
-- "QUIT" ends it early.
local CHILD = [=[
local socket = require "socket"
local f = assert(io.open(arg[1], "rb"))
local data = f:read("*a")
f:close()
local answers, pos = {}, 1
while pos <= #data do
  local len, at = data:match("^(%d+)\n()", pos)
  answers[#answers + 1] = data:sub(at, at + tonumber(len) - 1)
  pos = at + tonumber(len)
end
local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
srv:settimeout(20)
local got = {}
for _, answer in ipairs(answers) do
  local c = srv:accept()
  if not c then break end
  c:settimeout(5)
  local head, len = {}, 0
  while true do
    local line = c:receive("*l")
    if not line or line == "" then break end
    head[#head + 1] = line
    local n = line:lower():match("^content%-length:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  if head[1] == "QUIT" then c:close() break end
  local body = len > 0 and (c:receive(len) or "") or ""
  got[#got + 1] = table.concat(head, "\r\n") .. "\r\n\r\n" .. body
  c:send(answer)
  c:close()
end
srv:close()
for _, r in ipairs(got) do io.stdout:write(#r, "\n", r) end
]=]

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local Server = {}
Server.__index = Server

--- Starts a server with these answers (raw bytes each). Returns an object
-- with `url` ("http://127.0.0.1:PORT") and `finish`.
function M.start(answers)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  for _, a in ipairs(answers) do f:write(#a, "\n", a) end
  f:close()
  local script = os.tmpname()
  f = assert(io.open(script, "wb"))
  f:write(CHILD)
  f:close()
  local p = assert(io.popen(child.command() .. " " .. q(script) .. " " .. q(file)))
  local port = p:read("*l")
  assert(port and port:match("^%d+$"), "raw server did not start: " .. tostring(port))
  return setmetatable({ url = "http://127.0.0.1:" .. port, port = tonumber(port), pipe = p,
                        files = { file, script } }, Server)
end

--- Ends the server (unused answers are dropped) and returns the requests
-- it received, raw, in order.
function Server:finish()
  local c = socket.tcp()
  c:settimeout(2)
  if c:connect("127.0.0.1", self.port) then
    c:send("QUIT\r\n\r\n")
  end
  c:close()
  local out = self.pipe:read("*a")
  self.pipe:close()
  for _, name in ipairs(self.files) do os.remove(name) end
  local got, pos = {}, 1
  while pos <= #out do
    local len, at = out:match("^(%d+)\n()", pos)
    if not len then break end
    got[#got + 1] = out:sub(at, at + tonumber(len) - 1)
    pos = at + tonumber(len)
  end
  return got
end

return M
