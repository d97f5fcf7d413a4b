-- Fault modes of the stub (/__fault/<mode>/...): each answers as designed.
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted --tags=faults spec/stub_faults_spec.lua
local rawhttp = require "support.rawhttp"
local S = require "support.stubapi"
local cjson = require "cjson"
local socket = require "socket"

local URL, control = S.URL, S.control
local URL2 = assert(os.getenv("MM_STUB_URL2"))

local fx

local JOB1 = '{"type":"active_users","data":{"thing":"stuff"}}'

-- POST a job through a fault mode; returns the connection (open) and the request.
local function open_post(mode, timeout)
  local conn = assert(rawhttp.connect(URL, timeout))
  assert(conn:send(conn:build({ method = "POST", path = "/__fault/" .. mode .. "/api/v4/jobs",
                                headers = S.auth("sysadmin"), body = JOB1 })))
  return conn
end

local function post(mode, timeout)
  local conn = open_post(mode, timeout)
  local r, err = conn:receive("POST")
  conn:close()
  return r, err
end

before_each(function() fx = S.reset() end)

describe("fault modes #faults", function()
  it("pass: the normal answer", function()
    local r = assert(post("pass"))
    assert.are.equal(201, r.status)
    assert.are.equal("active_users", cjson.decode(r.body).type)
  end)

  it("slow_headers: nothing for 5 s (checked for 1 s); slow_headers:1 then answers", function()
    local conn = open_post("slow_headers", 1)
    local t0 = socket.gettime()
    local r, err = conn:receive("POST")
    conn:close()
    assert.is_nil(r)
    assert.are.equal("timeout", err)
    assert.is_true(socket.gettime() - t0 >= 0.9)
    t0 = socket.gettime()
    r = assert(post("slow_headers:1"))
    assert.is_true(socket.gettime() - t0 >= 0.9)
    assert.are.equal(201, r.status)
  end)

  it("slow_body: headers at once, body later", function()
    local conn = open_post("slow_body", 1)
    local r, err = conn:receive("POST")
    conn:close()
    assert.are.equal(201, r.status)
    assert.is_true(tonumber(r.h["content-length"]) > 0)
    assert.are.equal("timeout", err)
    assert.are.equal("", r.body)
    local t0 = socket.gettime()
    r = assert(post("slow_body:1"))
    assert.is_true(socket.gettime() - t0 >= 0.9)
    assert.are.equal("active_users", cjson.decode(r.body).type)
  end)

  it("close_before: the connection closes without a byte", function()
    local r, err = post("close_before")
    assert.is_nil(r)
    assert.are.equal("closed", err)
  end)

  it("close_mid_body: headers and half the body, then close", function()
    local r, err = post("close_mid_body")
    assert.are.equal("closed", err)
    assert.are.equal(201, r.status)
    local len = tonumber(r.h["content-length"])
    assert.are.equal(math.floor(len / 2), #r.body)
    assert.is_truthy(r.body:match('^{"id":"'))
  end)

  it("truncated: Content-Length longer than the body, then close", function()
    local r, err = post("truncated")
    assert.are.equal("closed", err)
    assert.are.equal(201, r.status)
    assert.are.equal(#r.body + 100, tonumber(r.h["content-length"]))
    assert.are.equal("active_users", cjson.decode(r.body).type) -- the whole JSON did arrive
  end)

  it("bad_json: 200 application/json with invalid JSON", function()
    local r = assert(post("bad_json"))
    assert.are.equal(200, r.status)
    assert.are.equal("application/json", r.h["content-type"])
    assert.is_false(pcall(cjson.decode, r.body))
    assert.is_truthy(r.h["x-request-id"])
  end)

  it("wrong_type: the normal JSON answer labelled text/html", function()
    local r = assert(post("wrong_type"))
    assert.are.equal(201, r.status)
    assert.are.equal("text/html", r.h["content-type"])
    assert.are.equal("pending", cjson.decode(r.body).status)
  end)

  it("html_502: nginx's HTML 502 page", function()
    local r = assert(post("html_502"))
    assert.are.equal(502, r.status)
    assert.are.equal("text/html", r.h["content-type"])
    assert.is_truthy(r.body:find("<title>502 Bad Gateway</title>", 1, true))
  end)

  it("503: plain-text 503, no AppError", function()
    local r = assert(post("503"))
    assert.are.equal(503, r.status)
    assert.are.equal("text/plain; charset=utf-8", r.h["content-type"])
    assert.are.equal("Service Unavailable\n", r.body)
  end)

  it("429: the real plain-text 429 with Retry-After: 1", function()
    local r = assert(post("429"))
    assert.are.equal(429, r.status)
    assert.are.equal("text/plain; charset=utf-8", r.h["content-type"])
    assert.are.equal("limit exceeded\n", r.body)
    assert.are.equal("1", r.h["retry-after"])
    assert.are.equal("1", r.h["x-ratelimit-reset"])
  end)

  it("redirect: 307 to the second host, which logs whether Authorization came along", function()
    local r = assert(post("redirect"))
    assert.are.equal(307, r.status)
    assert.are.equal(URL2 .. "/api/v4/jobs", r.h["location"])
    local r2 = assert(rawhttp.request(URL2, { method = "POST", path = "/api/v4/jobs", headers = S.auth("sysadmin"),
                                              body = JOB1 }))
    assert.are.equal(201, r2.status)
    assert.are.equal(401, assert(rawhttp.request(URL2, { method = "POST", path = "/api/v4/jobs", body = JOB1 })).status)
    local log = control("GET", "/__stub/redirect_log")
    assert.are.equal(2, #log)
    assert.is_true(log[1].has_authorization)
    assert.are.equal("Bearer " .. fx.users.sysadmin.token, log[1].authorization)
    assert.is_false(log[2].has_authorization)
    -- the query string is kept
    local q = assert(rawhttp.request(URL, { method = "GET", path = "/__fault/redirect/api/v4/jobs/x?a=1" }))
    assert.are.equal(URL2 .. "/api/v4/jobs/x?a=1", q.h["location"])
  end)

  it("huge: 200 with 16 MiB of valid JSON", function()
    local r = assert(post("huge", 30))
    assert.are.equal(200, r.status)
    assert.are.equal(16 * 1024 * 1024, #r.body)
    assert.are.equal(16 * 1024 * 1024, tonumber(r.h["content-length"]))
    assert.are.equal("active_users", cjson.decode(r.body).type)
  end)

  it("flaky503:2: two 503s per method+path, then normal; reset clears the counters", function()
    assert.are.equal(503, post("flaky503:2").status)
    assert.are.equal(503, post("flaky503:2").status)
    assert.are.equal(201, post("flaky503:2").status)
    assert.are.equal(201, post("flaky503:2").status)
    local other = assert(rawhttp.request(URL, { method = "GET", headers = S.auth("sysadmin"),
                                                path = "/__fault/flaky503:2/api/v4/jobs/1234" }))
    assert.are.equal(503, other.status)
    control("POST", "/__stub/reset")
    assert.are.equal(503, post("flaky503:2").status)
  end)

  it("flaky429:1 and flaky_close:1", function()
    local r = post("flaky429:1")
    assert.are.equal(429, r.status)
    assert.are.equal("limit exceeded\n", r.body)
    assert.are.equal(201, post("flaky429:1").status)
    local r2, err = post("flaky_close:1")
    assert.is_nil(r2)
    assert.are.equal("closed", err)
    assert.are.equal(201, post("flaky_close:1").status)
  end)

  it("flaky_slow:1: the first answer takes 5 s (checked for 1 s), the next is prompt", function()
    local r, err = post("flaky_slow:1", 1)
    assert.is_nil(r)
    assert.are.equal("timeout", err)
    local t0 = socket.gettime()
    assert.are.equal(201, post("flaky_slow:1").status)
    assert.is_true(socket.gettime() - t0 < 1)
  end)

  it("unknown mode: 404 naming the mode", function()
    local r = assert(post("nope"))
    assert.are.equal(404, r.status)
    assert.is_truthy(r.body:find("nope", 1, true))
  end)

  it("fault requests are logged and counted per connection", function()
    local conn = assert(rawhttp.connect(URL))
    for _ = 1, 3 do
      assert.are.equal(503, conn:request({ method = "GET", path = "/__fault/503/api/v4/jobs/1234" }).status)
    end
    conn:close()
    local conns = control("GET", "/__stub/connections")
    assert.are.equal(1, #conns)
    assert.are.equal(3, conns[1].requests)
    assert.are.equal("/__fault/503/api/v4/jobs/1234", control("GET", "/__stub/requests")[1].uri)
  end)
end)

describe("TLS listener #faults", function()
  local TLS_URL, CAFILE = os.getenv("MM_STUB_TLS_URL"), os.getenv("MM_STUB_CAFILE")

  it("serves the emulator over TLS with the generated self-signed certificate", function()
    assert.is_truthy(TLS_URL and CAFILE, "stub started without TLS")
    local r = assert(rawhttp.request(TLS_URL, { method = "POST", path = "/api/v4/jobs", headers = S.auth("sysadmin"),
                                                body = JOB1, cafile = CAFILE }))
    assert.are.equal(201, r.status)
    assert.are.equal("active_users", cjson.decode(r.body).type)
  end)

  it("also listens on 127.0.0.2, a name the certificate does not carry", function()
    local url2 = TLS_URL:gsub("127%.0%.0%.1", "127.0.0.2")
    local conn = assert(rawhttp.connect(url2, 5, CAFILE)) -- luasec does not check names
    local san = conn.sock:getpeercertificate():extensions()["2.5.29.17"]
    local r = assert(conn:request({ method = "GET", path = "/__stub/ping" }))
    conn:close()
    assert.are.equal(200, r.status)
    assert.are.same({ "localhost" }, san.dNSName)
    assert.are.same({ "127.0.0.1" }, san.iPAddress)
  end)

  it("is not trusted without the CA file", function()
    local r, err = rawhttp.request(TLS_URL, { method = "GET", path = "/api/v4/jobs/1234" })
    assert.is_nil(r)
    assert.is_truthy(tostring(err):find("certificate"), tostring(err))
  end)
end)

describe("HTTP/2 and mutual TLS #faults", function()
  local TLS_URL, CAFILE = os.getenv("MM_STUB_TLS_URL"), os.getenv("MM_STUB_CAFILE")
  local MTLS_URL = os.getenv("MM_STUB_MTLS_URL")
  local CERT, KEY = os.getenv("MM_STUB_CLIENT_CERT"), os.getenv("MM_STUB_CLIENT_KEY")

  local function curl_args(extra)
    local args = { "--cacert", CAFILE, "-H", "Authorization: Bearer " .. fx.users.sysadmin.token }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return args
  end

  it("the TLS listener answers HTTP/2 (ALPN h2) and still HTTP/1.1; the log records the protocol", function()
    assert.is_truthy(TLS_URL and CAFILE, "stub started without TLS")
    local r = assert(rawhttp.curl(TLS_URL .. "/api/v4/jobs", curl_args({ "--http2", "--data", JOB1 })))
    assert.are.equal(201, r.status)
    assert.are.equal("2", r.http_version)
    assert.are.equal("active_users", cjson.decode(r.body).type)
    r = assert(rawhttp.curl(TLS_URL .. "/api/v4/jobs/1234", curl_args({ "--http1.1" })))
    assert.are.equal("1.1", r.http_version)
    assert.are.equal(400, r.status) -- not a valid job id
    local log = control("GET", "/__stub/requests")
    assert.are.equal(2, #log)
    assert.are.equal(2, log[1].http_version)
    assert.are.equal(JOB1, log[1].body)
    -- HTTP/2: lowercase names from ngx.req.get_headers, sorted by name
    assert.are.same({ "authorization", "Bearer " .. fx.users.sysadmin.token }, log[1].headers[2])
    assert.are.equal(1.1, log[2].http_version)
    assert.are_not.equal(log[1].connection, log[2].connection)
  end)

  it("counts HTTP/2 streams of one connection as requests of that connection", function()
    local url = TLS_URL .. "/api/v4/jobs/1234"
    -- one curl, three URLs: one connection, three streams
    local r = assert(rawhttp.curl(url, curl_args({ "--http2", url, url })))
    assert.are.equal("2", r.http_version)
    local conns = control("GET", "/__stub/connections")
    assert.are.equal(1, #conns)
    assert.are.equal(3, conns[1].requests)
    for _, e in ipairs(control("GET", "/__stub/requests")) do
      assert.are.equal(conns[1].connection, e.connection)
      assert.are.equal(2, e.http_version)
    end
  end)

  it("the mutual-TLS listener serves the API to a client with the generated certificate", function()
    assert.is_truthy(MTLS_URL and CERT and KEY, "stub started without TLS")
    for _, proto in ipairs({ "--http2", "--http1.1" }) do
      local r = assert(rawhttp.curl(MTLS_URL .. "/api/v4/jobs",
                                    curl_args({ proto, "--cert", CERT, "--key", KEY, "--data", JOB1 })))
      assert.are.equal(201, r.status)
      assert.are.equal(proto == "--http2" and "2" or "1.1", r.http_version)
    end
  end)

  it("the mutual-TLS listener answers nginx's 400 without a client certificate, or with another one", function()
    local r = assert(rawhttp.curl(MTLS_URL .. "/api/v4/jobs", curl_args({ "--data", JOB1 })))
    assert.are.equal(400, r.status)
    assert.is_truthy(r.body:find("No required SSL certificate was sent", 1, true), r.body)
    local prefix = assert(os.getenv("MM_STUB_PREFIX"))
    r = assert(rawhttp.curl(MTLS_URL .. "/api/v4/jobs",
                            curl_args({ "--cert", CAFILE, "--key", prefix .. "/key.pem", "--data", JOB1 })))
    assert.are.equal(400, r.status)
    assert.is_truthy(r.body:find("The SSL certificate error", 1, true), r.body)
    assert.are.same({}, control("GET", "/__stub/requests")) -- never reached the emulator
  end)

  it("rawhttp.curl reports a failed connection as nil, error", function()
    local r, err = rawhttp.curl(TLS_URL .. "/__stub/ping", {}) -- no CA file: not trusted
    assert.is_nil(r)
    assert.is_truthy(tostring(err):find("certificate", 1, true), tostring(err))
  end)
end)
