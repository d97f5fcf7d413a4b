--- Tiny raw HTTP/1.1 client over luasocket, independent of `mm`, for
-- black-box checks of the stub: it sends exactly the bytes it is given and
-- returns what came back, headers in wire order.
--
-- @usage
-- local rawhttp = require "support.rawhttp"
-- local r = rawhttp.request(os.getenv("MM_STUB_URL"), {method = "GET", path = "/api/v4/jobs/x"})
-- print(r.status, r.h["content-type"], r.body)
local socket = require "socket"

local M = {}

local function parse_url(url)
  local scheme, host, port = url:match("^(https?)://([^:/]+):?(%d*)")
  assert(scheme, "not an http(s) URL: " .. tostring(url))
  return host, tonumber(port) or (scheme == "https" and 443 or 80), scheme
end

local Conn = {}
Conn.__index = Conn

--- Open a connection to `url` (http://host:port or https://...). For
-- https, `cafile` is the trust anchor (luasec, peer verification).
-- Returns conn or nil, err.
function M.connect(url, timeout, cafile)
  local host, port, scheme = parse_url(url)
  local sock = socket.tcp()
  sock:settimeout(timeout or 10)
  local ok, err = sock:connect(host, port)
  if not ok then sock:close(); return nil, err end
  if scheme == "https" then
    local ssl = require "ssl"
    sock, err = ssl.wrap(sock, { mode = "client", protocol = "any", verify = "peer", cafile = cafile,
                                 options = { "all", "no_sslv2", "no_sslv3" } })
    if not sock then return nil, err end
    sock:sni(host)
    ok, err = sock:dohandshake()
    if not ok then sock:close(); return nil, err end
  end
  return setmetatable({ sock = sock, host = host, port = port }, Conn)
end

function Conn:close() self.sock:close() end
function Conn:settimeout(t) self.sock:settimeout(t) end

--- Send raw bytes.
function Conn:send(bytes) return self.sock:send(bytes) end

-- Read the response: returns resp (possibly partial) and an error string
-- ("closed", "timeout") when it is incomplete.
function Conn:receive(method)
  local sock = self.sock
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local resp = { headers = {}, h = {}, body = "", status_line = line }
  resp.status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  resp.reason = line:match("^HTTP/%d%.%d %d%d%d ?(.*)$")
  while true do
    line, err = sock:receive("*l")
    if not line then return resp, err end
    if line == "" then break end
    local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    resp.headers[#resp.headers + 1] = { name, value }
    local lname = name:lower()
    -- repeated headers are joined with ", " in the map (Set-Cookie aside)
    resp.h[lname] = resp.h[lname] and (resp.h[lname] .. ", " .. value) or value
  end
  if method == "HEAD" or resp.status == 204 or resp.status == 304 or (resp.status or 0) < 200 then
    return resp
  end
  local te, cl = resp.h["transfer-encoding"], tonumber(resp.h["content-length"])
  if te and te:lower():find("chunked") then
    local parts = {}
    while true do
      local size_line
      size_line, err = sock:receive("*l")
      if not size_line then resp.body = table.concat(parts); return resp, err end
      local size = tonumber(size_line:match("^%x+"), 16)
      if not size then return resp, "bad chunk" end
      if size == 0 then
        repeat line = sock:receive("*l") until not line or line == "" -- trailers
        break
      end
      local data, e2, partial = sock:receive(size)
      if not data then parts[#parts + 1] = partial; resp.body = table.concat(parts); return resp, e2 end
      parts[#parts + 1] = data
      sock:receive("*l")
    end
    resp.body = table.concat(parts)
  elseif cl == 0 then
    resp.body = "" -- luasocket's receive(0) would wait for the timeout
  elseif cl then
    local data, e2, partial = sock:receive(cl)
    if not data then resp.body = partial or ""; return resp, e2 end
    resp.body = data
  else
    local data, e2, partial = sock:receive("*a")
    resp.body = data or partial or ""
    if not data and e2 ~= "closed" then return resp, e2 end
  end
  return resp
end

--- Build request bytes from a table:
-- {method=, path=, headers = {{name, value}, ...} | {name = value}, body=}.
-- Content-Length is added when there is a body and none was given, unless
-- `no_length` is set. Host defaults to the connection's.
function Conn:build(req)
  local lines = { (req.method or "GET") .. " " .. (req.path or "/") .. " HTTP/1.1" }
  local have_host, have_len = false, false
  local hdrs = req.headers or {}
  local list = {}
  if hdrs[1] then list = hdrs else
    for k, v in pairs(hdrs) do list[#list + 1] = { k, v } end
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  for _, h in ipairs(list) do
    if h[1]:lower() == "host" then have_host = true end
    if h[1]:lower() == "content-length" then have_len = true end
  end
  if not have_host then lines[#lines + 1] = "Host: " .. self.host .. ":" .. self.port end
  for _, h in ipairs(list) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  if req.body and not have_len and not req.no_length then
    lines[#lines + 1] = "Content-Length: " .. #req.body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or "")
end

--- Send a request on this connection and read the answer.
-- req.raw (exact bytes) overrides the other fields.
function Conn:request(req)
  local ok, err = self.sock:send(req.raw or self:build(req))
  if not ok then return nil, err end
  return self:receive(req.method)
end

--- One request on a fresh connection (closed afterwards).
function M.request(url, req)
  local conn, err = M.connect(url, req.timeout, req.cafile)
  if not conn then return nil, err end
  local resp, e2 = conn:request(req)
  conn:close()
  return resp, e2
end

--- Headers named `name` (case-insensitive), in wire order.
function M.all(resp, name)
  local out = {}
  for _, h in ipairs(resp.headers) do
    if h[1]:lower() == name:lower() then out[#out + 1] = h[2] end
  end
  return out
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- Run the `curl` program (a subprocess: HTTP/2 via ALPN, client
-- certificates, which luasocket/luasec cannot do) on `url`. `args` is a list
-- of extra curl arguments, e.g. { "--http2", "--cacert", cafile, "--cert", crt,
-- "--key", key, "-H", "Authorization: Bearer x", "--data", "{}" }.
-- Returns { status = 201, http_version = "2" | "1.1" | "1.0", body = "..." } or,
-- when curl fails (no answer: handshake refused, connection closed...), nil,
-- curl's error text and its exit code (nil on Lua 5.1).
function M.curl(url, args)
  local out = os.tmpname()
  -- env -u LD_PRELOAD: under make test-asan the sanitizer runtime is
  -- preloaded for Lua; curl is not built for it (and hangs with it).
  local cmd = { "env -u LD_PRELOAD curl", "-sS", "--max-time", "10", "-o", shell_quote(out),
                "-w", shell_quote("%{http_code} %{http_version}") }
  for _, a in ipairs(args or {}) do cmd[#cmd + 1] = shell_quote(a) end
  cmd[#cmd + 1] = shell_quote(url)
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
  local meta = p:read("*a")
  local _, _, code = p:close()
  local f = io.open(out, "rb")
  local body = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(out)
  local status, version = meta:match("(%d%d%d) ([%d.]+)%s*$")
  if not status or status == "000" then -- (Lua 5.1's close() gives no exit code)
    return nil, (meta:gsub("%s*000 [%d.]+%s*$", "")), code
  end
  return { status = tonumber(status), http_version = version, body = body }
end

return M
