-- A small HTTP/1.1 client over an nginx cosocket, for the outgoing request
-- of a custom slash command (families §3.10 step 9). It writes the request
-- the way Go's net/http client does (Host, User-Agent, Content-Length, then
-- the given headers sorted by name) and reads one response: Content-Length,
-- chunked, or up to the close.
--
-- Differences from Go's client (stub/README.md): no name resolution but
-- IP literals and localhost (nginx has no resolver configured), https
-- without a trust store (so its verification fails), no redirects, no
-- keep-alive, no Accept-Encoding: gzip.
local M = {}

local MAX_HEADER_LINES = 200

--- Split an absolute http(s) URL: scheme, host, port, request target
-- (path + "?" + query; the fragment is dropped as Go does). nil, err on
-- what the stub cannot reach.
function M.split_url(url)
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil, "unsupported URL: " .. url end
  rest = rest:gsub("#.*$", "")
  local authority, target = rest:match("^([^/?]*)(.*)$")
  authority = authority:gsub("^.*@", "") -- userinfo: not used (an Authorization header is always set)
  local host, port = authority:match("^%[(.-)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]*):?(%d*)$") end
  if not host or host == "" then return nil, "no host in URL: " .. url end
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  return { scheme = scheme, host = host, port = port, target = target,
           host_header = authority }
end

local function read_headers(sock, resp)
  for _ = 1, MAX_HEADER_LINES do
    local line, err = sock:receive("*l")
    if not line then return nil, err end
    if line == "" then return true end
    local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    if name then
      resp.headers[#resp.headers + 1] = { name, value }
      local lname = name:lower()
      resp.h[lname] = resp.h[lname] or value -- Header.Get: the first value
    end
  end
  return nil, "too many header lines"
end

local function read_chunked(sock)
  local parts = {}
  while true do
    local size_line, err = sock:receive("*l")
    if not size_line then return nil, err end
    local size = tonumber(size_line:match("^%x+"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then
      repeat size_line, err = sock:receive("*l") until not size_line or size_line == "" -- trailers
      if not size_line then return nil, err end
      return table.concat(parts)
    end
    local data
    data, err = sock:receive(size)
    if not data then return nil, err end
    parts[#parts + 1] = data
    sock:receive("*l")
  end
end

--- Send one request. opts: method, url, headers = {{name, value}, ...},
-- body (string or nil), timeout (ms). Returns {status, status_text,
-- headers (wire order), h (lowercase name -> first value), body} or nil, err.
function M.request(opts)
  local u, uerr = M.split_url(opts.url)
  if not u then return nil, uerr end
  local sock = ngx.socket.tcp()
  sock:settimeout(opts.timeout or 30000)
  local host = u.host == "localhost" and "127.0.0.1" or u.host
  local ok, err = sock:connect(host, u.port)
  if not ok then return nil, "connect: " .. tostring(err) end
  if u.scheme == "https" then
    ok, err = sock:sslhandshake(nil, u.host, true)
    if not ok then sock:close(); return nil, "tls: " .. tostring(err) end
  end
  local lines = { opts.method .. " " .. u.target .. " HTTP/1.1", "Host: " .. u.host_header,
                  "User-Agent: Go-http-client/1.1" }
  if opts.body then lines[#lines + 1] = "Content-Length: " .. #opts.body end
  local headers = {}
  for n, h in ipairs(opts.headers or {}) do headers[n] = h end
  table.sort(headers, function(a, b) return a[1] < b[1] end) -- Header.Write sorts by name
  for _, h in ipairs(headers) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  ok, err = sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or ""))
  if not ok then sock:close(); return nil, "send: " .. tostring(err) end

  local status_line
  status_line, err = sock:receive("*l")
  if not status_line then sock:close(); return nil, "read: " .. tostring(err) end
  local status_text = status_line:match("^HTTP/%d%.%d +((%d%d%d).*)$")
  local code = status_text and status_text:match("^%d%d%d")
  if not code then sock:close(); return nil, "malformed HTTP response: " .. status_line end
  -- status_text as Go's Response.Status: "500 Internal Server Error"
  local resp = { status = tonumber(code), status_text = status_text, headers = {}, h = {}, body = "" }
  ok, err = read_headers(sock, resp)
  if not ok then sock:close(); return nil, "read: " .. tostring(err) end
  local te, cl = resp.h["transfer-encoding"], resp.h["content-length"]
  if opts.method == "HEAD" or resp.status == 204 or resp.status == 304 or resp.status < 200 then
    resp.body = ""
  elseif te and te:lower():find("chunked", 1, true) then
    resp.body, err = read_chunked(sock)
  elseif cl then
    local n = tonumber(cl)
    if not n or n < 0 or n ~= math.floor(n) then sock:close(); return nil, "bad Content-Length" end
    if n > 0 then resp.body, err = sock:receive(n) end
  else
    local data, e2, partial = sock:receive("*a")
    resp.body, err = data or partial, (not data and e2 ~= "closed") and e2 or nil
  end
  sock:close()
  if not resp.body then return nil, "read body: " .. tostring(err) end
  return resp
end

--- url.Values.Encode: keys sorted, each value in order, QueryEscape'd
-- (space as +, all but A-Z a-z 0-9 - _ . ~ as %XX). `values` maps a key
-- to a string or a list of strings.
function M.form_encode(values)
  local function escape(s)
    return (s:gsub("[^%w%-_%.~ ]", function(c) return string.format("%%%02X", c:byte()) end):gsub(" ", "+"))
  end
  local keys, out = {}, {}
  for k in pairs(values) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = values[k]
    if type(v) ~= "table" then v = { v } end
    for _, item in ipairs(v) do out[#out + 1] = escape(k) .. "=" .. escape(item) end
  end
  return table.concat(out, "&")
end

return M
