-- Fault modes under /__fault/<mode>/api/v4/... : a client whose base URL is
-- $MM_STUB_URL/__fault/<mode> meets a broken server or network. Modes whose
-- answer is otherwise normal run the emulator (api.process) on the path
-- after the prefix. Documented in `bin/mm-stub --help`.
local api = require "mmstub.api"
local state = require "mmstub.state"

local M = {}

local HTML_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
  .. "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

local HUGE_SIZE = 16 * 1024 * 1024
local huge_body -- built once per worker

-- 16 MiB of valid JSON shaped like a job (the padding sits in data).
local function huge()
  if not huge_body then
    local head = '{"id":"hugehugehugehugehugehuge","type":"active_users","priority":0,'
      .. '"create_at":1,"start_at":0,"last_activity_at":0,"status":"pending","progress":0,'
      .. '"data":{"pad":"'
    local tail = '"}}\n'
    huge_body = head .. string.rep("x", HUGE_SIZE - #head - #tail) .. tail
  end
  return huge_body
end

-- Send the status and headers now, announcing `length` body bytes. A
-- file body (a download) gets the headers nginx's file serving adds.
local function send_head(resp, length)
  ngx.status = resp.status
  for _, h in ipairs(resp.headers) do ngx.header[h[1]] = h[2] ~= "" and h[2] or " " end
  if resp.file then
    ngx.header["Last-Modified"] = ngx.http_time(resp.file.mtime)
    ngx.header["Accept-Ranges"] = "bytes"
  end
  ngx.header["Content-Length"] = length
  ngx.send_headers()
  ngx.flush(true)
end

-- Send status + headers (Content-Length `length`), then the first `part`
-- bytes of the body, then drop the connection.
local function cut(resp, part, length)
  send_head(resp, length)
  api.print_body(resp, part)
  ngx.flush(true)
  return ngx.exit(444) -- 444: close without (further) response
end

local function close_now()
  api.body() -- let the client finish sending first
  return ngx.exit(444)
end

local function fault_503() return api.plain_error(503, "Service Unavailable\n") end
local function fault_429()
  return api.too_many({
    { "X-Ratelimit-Limit", "101" }, { "X-Ratelimit-Remaining", "0" },
    { "X-Ratelimit-Reset", "1" }, { "Retry-After", "1" },
  })
end

-- flakyX:N -> the first N requests per (mode, method, path) fail (flaky_slow:
-- answer after 5 s), then normal answers.
local FLAKY = {
  flaky503 = function() return api.send(fault_503()) end,
  flaky429 = function() return api.send(fault_429()) end,
  flaky_close = close_now,
  flaky_slow = function(rest) ngx.sleep(5); return api.send(api.process(rest)) end, -- like slow_headers
}

function M.serve()
  api.record()
  local mode, rest = ngx.var.uri:match("^/__fault/([^/]+)(/.*)$")
  if not mode then mode, rest = ngx.var.uri:match("^/__fault/([^/]+)$"), "/" end
  local name, arg = (mode or ""):match("^([^:]+):?(.*)$")
  local n = tonumber(arg)

  if name == "pass" then return api.send(api.process(rest))
  elseif name == "slow_headers" then
    ngx.sleep(n or 5)
    return api.send(api.process(rest))
  elseif name == "slow_body" then
    local resp = api.process(rest)
    send_head(resp, api.body_length(resp))
    ngx.sleep(n or 5)
    api.print_body(resp)
    return
  elseif name == "trickle" then
    -- the body in ten parts over S (5) seconds: slow, but never stalled
    local resp = api.process(rest)
    local body = resp.body
    if resp.file then
      local f = assert(io.open(resp.file.path, "rb"))
      body = f:read("*a")
      f:close()
    end
    send_head(resp, #body)
    local part = math.ceil(#body / 10)
    for i = 0, 9 do
      ngx.sleep((n or 5) / 10)
      ngx.print(body:sub(i * part + 1, (i + 1) * part))
      ngx.flush(true)
    end
    return
  elseif name == "close_before" then return close_now()
  elseif name == "close_mid_body" then
    local resp = api.process(rest)
    local length = api.body_length(resp)
    return cut(resp, math.floor(length / 2), length)
  elseif name == "truncated" then
    local resp = api.process(rest)
    local length = api.body_length(resp)
    return cut(resp, length, length + 100)
  elseif name == "bad_json" then
    local resp = api.process(rest)
    resp.status, resp.body, resp.file = 200, '{"id":"bad_json","status":pending,', nil
    return api.send(resp)
  elseif name == "wrong_type" then
    local resp = api.process(rest)
    api.set_header(resp, "Content-Type", "text/html")
    return api.send(resp)
  elseif name == "html_502" then
    return api.send({ status = 502, body = HTML_502, headers = { { "Content-Type", "text/html" } } })
  elseif name == "503" then return api.send(fault_503())
  elseif name == "429" then return api.send(fault_429())
  elseif name == "redirect" then
    local b = state.boot()
    local args = ngx.var.args
    local location = "http://127.0.0.2:" .. b.port2 .. rest .. (args and ("?" .. args) or "")
    return api.send({ status = 307, body = "", headers = { { "Location", location } } })
  elseif name == "huge" then
    return api.send({ status = 200, body = huge(), headers = { { "Content-Type", "application/json" } } })
  elseif name == "not_http" then
    -- bytes that are no HTTP answer at all (what a client sees when it
    -- speaks HTTP/1 to an HTTP/2-only port, or to another protocol)
    api.body()
    local sock = assert(ngx.req.socket(true))
    sock:send("\0\0\18\4\0\0\0\0\0garbage, not an HTTP status line\r\n\r\n")
    return ngx.exit(444)
  elseif name == "huge_header" then
    -- one header line longer than clients accept (libcurl: 100 KiB)
    local resp = api.process(rest)
    resp.headers[#resp.headers + 1] = { "X-Huge", string.rep("h", (n or 200) * 1024) }
    return api.send(resp)
  elseif FLAKY[name] and n then
    local count = state.incr(mode .. " " .. ngx.req.get_method() .. " " .. rest)
    if count <= n then return FLAKY[name](rest) end
    return api.send(api.process(rest))
  end
  return api.send(api.plain_error(404, "mm-stub: unknown fault mode '" .. tostring(mode) .. "'\n"))
end

return M
