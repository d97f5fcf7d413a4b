-- The client against a bad network, a bad server and TLS, using the fault
-- modes the stub's nginx serves under /__fault/<mode> (see bin/mm-stub --help).
-- Tagged #faults: `busted --tags=faults` runs these alone.
local mm = require "mm"
local socket = require "socket"
local stub = require "support.stubctl"
local clients = require "support.client"
local child = require("support.child").run

local fx
local CMD_PATH

-- A sysadmin client behind fault mode `mode`, with a 5 s timeout unless
-- `opts` says otherwise: a mode that hangs fails its case quickly.
local function fault(mode, opts)
  opts = opts or {}
  if opts.timeout == nil then opts.timeout = 5 end
  return clients.fault(mode, "sysadmin", opts)
end

local cmd, UNKNOWN = clients.cmd, clients.UNKNOWN

-- How many times the stub saw a request whose path ends with `suffix`.
local function seen(suffix)
  local n = 0
  for _, r in ipairs(stub.requests()) do
    if r.uri:sub(-#suffix) == suffix then n = n + 1 end
  end
  return n
end

local timed = clients.timed

before_each(function()
  stub.reset()
  fx = clients.fixtures()
  CMD_PATH = "/commands/" .. cmd("C_admin") .. "/regen_token"
end)

describe("#faults timeouts", function()
  it("a body slower than the timeout fails with kind 'timeout', quickly", function()
    local c = fault("slow_body:5", { timeout = 0.5 })
    local dt, token, err = timed(function() return c:regen_token(cmd("C_admin")) end)
    assert.is_nil(token)
    assert.equal("timeout", err.kind)
    assert.equal(28, err.curl_code)
    assert.is_true(dt < 2, "took " .. dt)
  end)

  it("headers slower than the timeout fail with kind 'timeout'", function()
    local dt, _, err = timed(function()
      return fault("slow_headers:5", { timeout = 0.5 }):regen_token(cmd("C_admin"))
    end)
    assert.equal("timeout", err.kind)
    assert.is_true(dt < 2, "took " .. dt)
  end)

  it("a timeout leaves the client usable for the next call", function()
    local c = fault("flaky_slow:1", { timeout = 0.5 })
    local _, err = c:regen_token(cmd("C_admin"))
    assert.equal("timeout", err.kind)
    local token = assert(c:regen_token(cmd("C_admin")))
    assert.equal(26, #token)
  end)

  it("a POST that timed out on a reused connection is a 'timeout', never retried", function()
    -- The first GET and the first POST of each path are slow (flaky_slow:1).
    local c = fault("flaky_slow:1", { timeout = 0.5, retries = 2, max_retry_wait = 0.01 })
    -- the GET times out, is retried (idempotent) on a new connection and
    -- answered: that connection is kept alive for the POST
    local _, err = c:get_job(UNKNOWN)
    assert.equal(404, err.status)
    assert.equal(2, err.attempts)
    local job
    job, err = c:create_job{ type = "active_users" }
    assert.is_nil(job)
    assert.equal("timeout", err.kind) -- the request was sent: not a connect timeout
    assert.equal(1, err.attempts)
    assert.equal(1, seen("/jobs"))
  end)

  it("a timeout below a millisecond is still a timeout, not none", function()
    local dt, _, err = timed(function()
      return fault("slow_headers:2", { timeout = 0.0004 }):regen_token(cmd("C_admin"))
    end)
    -- 1 ms: on a slow machine (valgrind) even the connection may not be up by then
    assert.is_true(err.kind == "timeout" or err.kind == "connect_timeout", err.kind)
    assert.is_true(dt < 1, "took " .. dt)
  end)

  it("a server that never accepts fails with kind 'connect_timeout'", function()
    -- A listening socket with a backlog of 0 that never accepts: once its
    -- queue is full the kernel drops further SYNs, so connect() hangs.
    local srv = assert(socket.tcp())
    assert(srv:bind("127.0.0.1", 0))
    assert(srv:listen(0))
    local _, port = srv:getsockname()
    local fillers = {}
    for i = 1, 4 do
      fillers[i] = socket.tcp()
      fillers[i]:settimeout(0)
      fillers[i]:connect("127.0.0.1", port)
    end
    local c = mm.new{ url = "http://127.0.0.1:" .. port, token = "x", connect_timeout = 0.3, retries = 0 }
    local dt, _, err = timed(function() return c:regen_token(cmd("C_admin")) end)
    for _, s in ipairs(fillers) do s:close() end
    srv:close()
    assert.equal("connect_timeout", err.kind)
    assert.is_true(dt < 2, "took " .. dt)
  end)
end)

describe("#faults broken connections and bodies", function()
  it("a connection closed before any byte is kind 'network'", function()
    local _, err = fault("close_before"):regen_token(cmd("C_admin"))
    assert.equal("network", err.kind)
    assert.equal(52, err.curl_code) -- CURLE_GOT_NOTHING
  end)

  it("a connection closed mid-body is kind 'network'", function()
    local _, err = fault("close_mid_body"):regen_token(cmd("C_admin"))
    assert.equal("network", err.kind)
  end)

  it("a body shorter than its Content-Length is kind 'network'", function()
    local _, err = fault("truncated"):regen_token(cmd("C_admin"))
    assert.equal("network", err.kind)
    assert.equal(18, err.curl_code) -- CURLE_PARTIAL_FILE
  end)

  it("200 with invalid JSON is kind 'decode' with the status", function()
    local token, err = fault("bad_json"):regen_token(cmd("C_admin"))
    assert.is_nil(token)
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
    assert.matches("^mm: decode %(HTTP 200%): invalid JSON", tostring(err))
  end)

  it("200 with the wrong content type is kind 'decode'", function()
    local _, err = fault("wrong_type"):create_job{ type = "active_users" }
    assert.equal("decode", err.kind)
    assert.matches("expected application/json, got text/html", err.message)
  end)

  it("an HTML 502 page gives status 502 and the page's title", function()
    local _, err = fault("html_502"):create_job{ type = "active_users" }
    assert.equal("http", err.kind)
    assert.equal(502, err.status)
    assert.equal("502 Bad Gateway", err.message)
    assert.matches("<title>502 Bad Gateway</title>", err.body)
  end)

  it("a response larger than max_body is kind 'too_large'; the client stays usable", function()
    local c = fault("huge", { max_body = 1024 * 1024 })
    local _, err = c:get_job(UNKNOWN)
    assert.equal("too_large", err.kind)
    assert.matches("max_body", err.message)
    -- the default cap (8 MiB) refuses 16 MiB too
    _, err = fault("huge"):get_job(UNKNOWN)
    assert.equal("too_large", err.kind)
    -- and a larger cap takes it
    local job = assert(fault("huge", { max_body = 32 * 1024 * 1024 }):get_job(UNKNOWN))
    assert.is_true(#job.data.pad > 16 * 1024 * 1024 - 1024)
  end)
end)

describe("#faults retries", function()
  it("503 is retried for the idempotent PUT, and err.attempts counts", function()
    local _, err = fault("503", { retries = 2, max_retry_wait = 0.05 }):regen_token(cmd("C_admin"))
    assert.equal(503, err.status)
    assert.equal(3, err.attempts)
    assert.equal(3, seen(CMD_PATH))
    assert.matches("3 attempts", tostring(err))
  end)

  it("a flaky 503 recovers on retry for regen_token", function()
    local token = assert(fault("flaky503:2", { retries = 2, max_retry_wait = 0.05 }):regen_token(cmd("C_admin")))
    assert.equal(26, #token)
    assert.equal(3, seen(CMD_PATH))
  end)

  it("502/503 and broken connections are never retried for POST create_job", function()
    for _, mode in ipairs{ "html_502", "flaky503:1", "flaky_close:1" } do
      stub.reset()
      local job, err = fault(mode, { retries = 3, max_retry_wait = 0.05 }):create_job{ type = "active_users" }
      assert.is_nil(job, mode)
      assert.equal(1, err.attempts, mode)
      assert.equal(1, seen("/jobs"), mode)
    end
  end)

  it("a 429 is sent again on any method once the pause of Retry-After ends, whatever 'retries' says", function()
    local c = fault("flaky429:1", { retries = 0, max_retry_wait = 0.01 })
    local dt, job, err = timed(function() return c:create_job{ type = "active_users" } end)
    assert.is_nil(err)
    assert.equal("pending", job.status)
    assert.equal(2, seen("/jobs"))
    assert.is_true(dt >= 0.99 and dt < 2, "waited " .. dt) -- Retry-After: 1
  end)

  it("a 429 that persists past max_rate_wait ends with the 429 and its retry_after", function()
    local c = fault("429", { retries = 0, max_rate_wait = 1.5 })
    local dt, _, err = timed(function() return c:regen_token(cmd("C_admin")) end)
    assert.equal(429, err.status)
    assert.equal(1, err.retry_after)
    assert.equal(3, err.attempts) -- at 0, 1 and 2 s: the budget ran out after the pause
    assert.is_true(dt >= 1.99 and dt < 3, "waited " .. dt)
  end)

  it("a refused connection is retried even for POST (it never reached the server)", function()
    local c = mm.new{ url = "http://127.0.0.1:1", token = "x", retries = 2, max_retry_wait = 0.01 }
    local _, err = c:create_job{ type = "active_users" }
    assert.equal("connect", err.kind)
    assert.equal(3, err.attempts)
  end)

  it("a dropped connection is retried for the idempotent PUT", function()
    assert(fault("flaky_close:1", { retries = 1, max_retry_wait = 0.01 }):regen_token(cmd("C_admin")))
    assert.equal(2, seen(CMD_PATH))
  end)

  it("retries = 0 turns retries off", function()
    local _, err = fault("flaky503:1", { retries = 0 }):regen_token(cmd("C_admin"))
    assert.equal(503, err.status)
    assert.equal(1, err.attempts)
  end)
end)

describe("#faults redirects", function()
  it("a 307 to another host is not followed: the error names the Location", function()
    local _, err = fault("redirect"):regen_token(cmd("C_admin"))
    assert.equal("http", err.kind)
    assert.equal(307, err.status)
    local url2 = assert(os.getenv("MM_STUB_URL2"))
    assert.equal(url2 .. "/api/v4" .. CMD_PATH, err.location)
    assert.matches("redirect to " .. url2:gsub("%p", "%%%0"), tostring(err))
    -- nothing, and so no Authorization, reached the other host
    assert.same({}, stub.redirect_log())
  end)
end)

describe("#faults TLS", function()
  local tls_url, cafile = os.getenv("MM_STUB_TLS_URL"), os.getenv("MM_STUB_CAFILE")

  it("verifies the server by default: a self-signed certificate is kind 'tls'", function()
    if not tls_url then return pending("stub started without TLS") end
    local c = clients.new("sysadmin", { url = tls_url })
    local _, err = c:regen_token(cmd("C_admin"))
    assert.equal("tls", err.kind)
    assert.equal(60, err.curl_code) -- CURLE_PEER_FAILED_VERIFICATION
  end)

  it("trusts a certificate given by cafile", function()
    if not tls_url then return pending("stub started without TLS") end
    local c = mm.new{ url = tls_url, token = fx.users.sysadmin.token, cafile = cafile }
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
  end)

  it("trusts the certificates of a capath directory", function()
    if not tls_url then return pending("stub started without TLS") end
    local dir = os.tmpname()
    os.remove(dir)
    -- a hashed CA directory, as `openssl rehash` makes it
    assert(os.execute(("mkdir -p %s && cp %s %s/stub.pem && openssl rehash %s"):format(dir, cafile, dir, dir)))
    local c = mm.new{ url = tls_url, token = fx.users.sysadmin.token, capath = dir }
    local token, err = c:regen_token(cmd("C_admin"))
    os.execute("rm -rf " .. dir)
    assert.is_nil(err)
    assert.equal(26, #token)
  end)

  it("checks the host name: the right CA for the wrong name still fails", function()
    if not tls_url then return pending("stub started without TLS") end
    -- 127.0.0.2 is not in the certificate's subjectAltName
    local url = tls_url:gsub("127%.0%.0%.1", "127.0.0.2")
    local c = clients.new("sysadmin", { url = url, cafile = cafile })
    local _, err = c:regen_token(cmd("C_admin"))
    assert.equal("tls", err.kind)
  end)

  it("insecure = true works and says so loudly in tostring", function()
    if not tls_url then return pending("stub started without TLS") end
    local c = mm.new{ url = tls_url, token = fx.users.sysadmin.token, insecure = true }
    assert(c:regen_token(cmd("C_admin")))
    assert.matches("INSECURE", tostring(c))
  end)
end)

describe("#faults proxies", function()
  it("sends requests through the proxy option", function()
    -- The stub's nginx also answers absolute-form proxy requests, so it can
    -- stand in for a proxy: mm.invalid resolves nowhere, yet the call works.
    local c = clients.new("sysadmin", { url = "http://mm.invalid", proxy = stub.url })
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
  end)

  it("noproxy bypasses the proxy for the hosts it names", function()
    local c = mm.new{ url = "http://mm.invalid", token = "x", proxy = stub.url, noproxy = "mm.invalid", retries = 0 }
    local _, err = c:regen_token(cmd("C_admin"))
    assert.equal("connect", err.kind)
  end)

  it("libcurl's http_proxy environment variable keeps working", function()
    local out = child("http_proxy=" .. stub.url, ([[
      local mm = require "mm"
      local c = mm.new{ url = "http://mm.invalid", token = %q, retries = 0 }
      local t, err = c:regen_token(%q)
      io.write(t and "ok" or tostring(err))
    ]]):format(fx.users.sysadmin.token, cmd("C_admin")))
    assert.equal("ok", out)
  end)
end)

describe("#faults debug output", function()
  it("shows request and response lines with Authorization redacted", function()
    local lines = {}
    local token = fx.users.sysadmin.token
    local c = mm.new{ url = stub.url, token = token, debug = function(l) lines[#lines + 1] = l end }
    assert(c:regen_token(cmd("C_admin")))
    local text = table.concat(lines, "\n")
    assert.matches("> PUT " .. stub.url:gsub("%p", "%%%0") .. "/api/v4/commands/", text)
    assert.matches("> Authorization: Bearer %[redacted%]", text)
    assert.matches("< HTTP 200", text)
    assert.matches("< x%-request%-id: ", text)
    assert.is_nil(text:find(token, 1, true))
  end)

  it("in a batch, logs each request as it goes out and each answer with its time and request", function()
    local lines = {}
    local c = mm.new{ url = stub.url .. "/__fault/slow_headers:0.2", token = fx.users.sysadmin.token,
      debug = function(l) lines[#lines + 1] = l end }
    local ids = { fx.commands.C_admin.id, fx.commands.C_other.id }
    assert.equal(0, select(2, c:regen_tokens(ids, { concurrency = 2 })))
    local sent, answered = {}, {}
    for n, l in ipairs(lines) do
      local id = l:match("^> PUT .-/commands/(%w+)/regen_token$")
      if id then sent[id] = n end
      local ms, aid = l:match("^< HTTP 200 %(([%d.]+) ms%) for PUT .-/commands/(%w+)/regen_token$")
      if aid then answered[aid] = { n, tonumber(ms) } end
    end
    for _, id in ipairs(ids) do
      assert.is_truthy(sent[id] and answered[id], table.concat(lines, "\n"))
      assert.is_true(answered[id][2] >= 200, "time " .. answered[id][2])
    end
    -- both went out before either answer came (they overlap)
    assert.is_true(math.max(sent[ids[1]], sent[ids[2]]) < math.min(answered[ids[1]][1], answered[ids[2]][1]))
  end)

  it("MM_DEBUG=1 logs to stderr, without the token", function()
    local token = fx.users.sysadmin.token
    local out = child("MM_DEBUG=1", ([[
      local mm = require "mm"
      local c = mm.new{ url = %q, token = %q }
      assert(c:regen_token(%q))
    ]]):format(stub.url, token, cmd("C_admin")), "2>&1 >/dev/null")
    assert.matches("mm: > PUT ", out)
    assert.matches("mm: > Authorization: Bearer %[redacted%]", out)
    assert.is_nil(out:find(token, 1, true))
  end)
end)

describe("#faults HTTP/2 and client certificates", function()
  it("multiplexes a batch over one HTTP/2 connection when the server offers it over TLS", function()
    local tls_url, cafile = os.getenv("MM_STUB_TLS_URL"), os.getenv("MM_STUB_CAFILE")
    if not tls_url then return pending("stub started without TLS") end
    local c = clients.new("sysadmin", { url = tls_url, cafile = cafile })
    local ids = {}
    for i = 1, 20 do ids[i] = cmd("C_admin") end
    local results, failed = c:regen_tokens(ids, { concurrency = 20 })
    assert.equal(0, failed)
    assert.equal(20, #results)
    local conns = stub.connections()
    assert.equal(1, #conns)
    assert.equal(20, conns[1].requests)
    for _, r in ipairs(stub.requests()) do assert.equal(2, r.http_version) end
  end)

  it("presents a client certificate (sslcert, sslkey) to a server that requires one", function()
    local url = os.getenv("MM_STUB_MTLS_URL")
    if not url then return pending("stub started without TLS") end
    local opts = { url = url, token = fx.users.sysadmin.token, cafile = os.getenv("MM_STUB_CAFILE"), retries = 0 }
    -- without one, nginx completes the handshake and answers 400 itself
    local _, err = mm.new(opts):regen_token(cmd("C_admin"))
    assert.equal(400, err.status)
    opts.sslcert, opts.sslkey = os.getenv("MM_STUB_CLIENT_CERT"), os.getenv("MM_STUB_CLIENT_KEY")
    assert.equal(26, #assert(mm.new(opts):regen_token(cmd("C_admin"))))
  end)
end)
