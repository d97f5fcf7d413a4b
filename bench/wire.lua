-- bench/wire.lua: captures the request heads that clients send, to check
-- that `mm` and bench/floor.c put the same bytes on the wire.
--
-- Usage: lua bench/wire.lua PORTFILE OUTPREFIX COUNT
-- Listens on 127.0.0.1 (a free port, written to PORTFILE), accepts COUNT
-- connections one after the other, writes each request head (up to the
-- empty line, plus any body bytes announced by Content-Length) to
-- OUTPREFIX.<k>, answers 200 with a JSON token, and exits. Bounded: 20 s
-- per accept and per read.
local socket = require "socket"

local portfile, prefix, count = arg[1], arg[2], math.tointeger(tonumber(arg[3] or ""))
assert(portfile and prefix and count and count >= 1 and count <= 100,
  "usage: wire.lua PORTFILE OUTPREFIX COUNT")

local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(20)
local _, port = server:getsockname()
local pf = assert(io.open(portfile .. ".tmp", "w"))
pf:write(port, "\n")
pf:close()
assert(os.rename(portfile .. ".tmp", portfile))

local BODY = '{"token":"' .. ("0"):rep(26) .. '"}'
local ANSWER = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
  .. #BODY .. "\r\nConnection: close\r\n\r\n" .. BODY

for k = 1, count do
  local conn = assert(server:accept())
  conn:settimeout(20)
  local lines, length = {}, 0
  for _ = 1, 200 do
    local line = assert(conn:receive("*l"))
    lines[#lines + 1] = line
    local v = line:lower():match("^content%-length:%s*(%d+)")
    if v then length = tonumber(v) end
    if line == "" then break end
  end
  local body = length > 0 and assert(conn:receive(length)) or ""
  local out = assert(io.open(prefix .. "." .. k, "wb"))
  out:write(table.concat(lines, "\r\n"), "\r\n", body)
  out:close()
  conn:send(ANSWER)
  conn:close()
end
server:close()
