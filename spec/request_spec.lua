-- client:request, the general call for any /api/v4 route, against the
-- stub: the same errors, retries, scrubbing, timeouts and debug log as the
-- endpoint methods; paths and queries encoded as RFC 3986 says; bad paths
-- refused before anything is sent.
local mm = require "mm"
local cjson = require "cjson"
local mime = require "mime"
local socket = require "socket"
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local files = require "support.files"

local raises, http_error = check.raises, check.http_error
local fx

local J = clients.job

-- The URIs the stub received, in order.
local function uris()
  local out = {}
  for i, r in ipairs(stub.requests()) do out[i] = r.uri end
  return out
end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
end)

describe("request: answers", function()
  it("decodes JSON answers into plain tables; the content type comes second", function()
    local c = clients.new()
    local job, ctype = c:request("GET", "jobs/" .. J(3))
    assert.equal("application/json", ctype)
    assert.equal(J(3), job.id)
    assert.equal("success", job.status)
    assert.is_nil(getmetatable(job))
    if math.type then assert.equal("integer", math.type(job.create_at)) end
    -- J7's data is null: left out, never a cjson.null
    assert.is_nil(c:request("GET", "jobs/" .. J(7)).data)
    local list = c:request("GET", "jobs", { query = { per_page = 2 } })
    assert.equal(2, #list)
    assert.equal(J(10), list[1].id)
    check.sent(stub.requests()[1], { method = "GET", uri = "/api/v4/jobs/" .. J(3), token = fx.users.sysadmin.token })
  end)

  it("POST and PUT with JSON answers: a created job (201), a new token", function()
    local c = clients.new()
    local job = assert(c:request("POST", "jobs", { body = '{"type":"active_users","data":{"k":"v"}}' }))
    assert.equal("active_users", job.type)
    assert.same({ k = "v" }, job.data)
    assert.equal("pending", stub.job(job.id).status)
    local t = assert(c:request("PUT", "commands/" .. fx.commands.C_admin.id .. "/regen_token"))
    assert.equal(26, #t.token)
    local reqs, token = stub.requests(), fx.users.sysadmin.token
    check.sent(reqs[1], { method = "POST", uri = "/api/v4/jobs", token = token,
                          body = '{"type":"active_users","data":{"k":"v"}}' })
    check.sent(reqs[2], { method = "PUT", uri = "/api/v4/commands/" .. fx.commands.C_admin.id .. "/regen_token",
                          token = token })
  end)

  it("a table body is sent as JSON", function()
    local c = clients.new()
    local job = assert(c:request("POST", "jobs", { body = { type = "active_users" } }))
    assert.equal("active_users", job.type)
    assert.equal('{"type":"active_users"}', stub.requests()[1].body)
    assert.equal("application/json", stub.header(stub.requests()[1], "Content-Type"))
  end)

  it("answers that are not JSON come back as they are", function()
    stub.config{ download_export_results = true }
    local body, ctype = clients.new():request("GET", "jobs/" .. J(6) .. "/download")
    assert.equal(mime.unb64(fx.jobs.J6.file.base64), body)
    assert.equal("application/zip", ctype)
    -- JSON sent as text/html: the text
    body, ctype = clients.fault("wrong_type"):request("GET", "jobs/" .. J(1))
    assert.equal("text/html", ctype)
    assert.equal(J(1), cjson.decode(body).id)
  end)

  it("JSON null is mm.null; [] an empty table", function()
    stub.clear_jobs()
    local c = clients.new()
    local v, ctype = c:request("GET", "jobs")
    assert.equal(mm.null, v)
    assert.equal("application/json", ctype)
    assert.same({}, c:request("GET", "jobs", { query = { status = "pending" } }))
  end)

  it("errors are the methods' errors: AppError fields, method and path", function()
    local v, err = clients.new("basic"):request("GET", "jobs", { query = { per_page = 1 } })
    local _
    assert.is_nil(v)
    http_error(err, 403, "api.context.permissions.app_error")
    assert.equal("GET", err.method)
    assert.equal("/api/v4/jobs?per_page=1", err.path)
    _, err = clients.new():request("GET", "no/such/route")
    http_error(err, 404, "api.context.404.app_error")
    _, err = clients.fault("bad_json"):request("GET", "jobs/" .. J(1))
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
  end)

  it("a timeout is kind 'timeout'", function()
    local t0 = socket.gettime()
    local _, err = clients.fault("slow_headers:5", "sysadmin", { timeout = 0.3 }):request("GET", "jobs")
    assert.equal("timeout", err.kind)
    assert.is_true(socket.gettime() - t0 < 3)
  end)

  it("the module-level mm.request uses the default client", function()
    mm.configure{ url = stub.url, token = fx.users.sysadmin.token, retries = 0 }
    assert.equal(J(1), mm.request("GET", "/jobs/" .. J(1)).id)
    raises("bad argument #2 to 'request' %(path must not contain", mm.request, "GET", "../x")
  end)
end)

describe("request: HEAD", function()
  it("sends no body and reads none; errors keep their status; retried like GET", function()
    local c = clients.fault("flaky503:1", "sysadmin", { retries = 1, max_retry_wait = 0 })
    local v, err = c:request("HEAD", "jobs/" .. J(1))
    -- the stub routes GET only: a HEAD is the router's 404, which has no body to read
    assert.is_nil(v)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.equal(2, err.attempts)
    local reqs = stub.requests()
    assert.equal(2, #reqs)
    for _, r in ipairs(reqs) do
      assert.equal("HEAD", r.method)
      assert.equal("", r.body)
      assert.is_nil(stub.header(r, "Content-Length"))
    end
  end)
end)

describe("request: paths", function()
  it("relative to /api/v4, with or without a leading slash, or starting with /api/v4", function()
    local c = clients.new()
    for _, p in ipairs{ "jobs/" .. J(1), "/jobs/" .. J(1), "/api/v4/jobs/" .. J(1), "api/v4/jobs/" .. J(1) } do
      assert.equal(J(1), c:request("GET", p).id)
    end
    local want = "/api/v4/jobs/" .. J(1)
    assert.same({ want, want, want, want }, uris())
  end)

  it("keeps the URL's sub-path", function()
    local c = clients.new("sysadmin", { url = stub.url .. "/mattermost/" })
    assert.equal(J(1), c:request("GET", "/api/v4/jobs/" .. J(1)).id)
    assert.same({ "/mattermost/api/v4/jobs/" .. J(1) }, uris())
  end)

  it("percent-encodes what a path segment cannot hold; keeps escapes and sub-delimiters", function()
    local c = clients.new()
    c:request("GET", "files/é[x]{y}|\"<>^`\\")
    c:request("GET", "a+b/c=d;e,f/g:h@i!$&'()*/~._-")
    c:request("GET", "x/a%20b/%2F")
    assert.same({ "/api/v4/files/%C3%A9%5Bx%5D%7By%7D%7C%22%3C%3E%5E%60%5C",
                  "/api/v4/a+b/c=d;e,f/g:h@i!$&'()*/~._-", "/api/v4/x/a%20b/%2F" }, uris())
  end)

  it("refuses paths that leave /api/v4 or split the request, before sending", function()
    local c = clients.new()
    local bad = {
      { nil, "path expected, got no value" }, { 5, "path expected, got number" }, { "", "path expected, got string" },
      { "..", "must not contain '%.' or '%.%.' segments" }, { "../users", "segments" },
      { "/jobs/../../__stub/reset", "segments" }, { "/api/v4/../__stub", "segments" },
      { "./jobs", "segments" }, { "jobs/.", "segments" },
      { "jobs?x=1", "must not contain '%?' or '#' %(use option 'query'%)" }, { "jobs#x", "'%?' or '#'" },
      { "jobs x", "must not contain white space or control characters" }, { "jobs\t", "white space" },
      { "jobs\r\nX-Evil: 1", "white space" }, { "jobs\0", "control characters" },
      { "jobs/%zz", "has a '%%' that does not start an escape" }, { "50%", "does not start an escape" },
      { "http://evil.example.com/x", "must be relative to /api/v4, not a URL" },
      { "HTTPS://evil.example.com/x", "not a URL" }, { "mailto:x", "not a URL" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #2 to 'request' %(.-" .. case[2], c.request, c, "GET", case[1])
    end
    assert.same({}, stub.requests())
  end)

  it("refuses dot segments spelt with escapes (%2e), which servers decode first", function()
    local c = clients.new()
    for _, p in ipairs{ "%2e%2e", "/%2e%2e/%2e%2e/__stub/ping", "/jobs/%2E%2e/x", "/.%2e/x", "/%2e/jobs" } do
      raises("bad argument #2 to 'request' %(path must not contain '%.' or '%.%.' segments%)", c.request, c, "GET", p)
    end
    assert.same({}, stub.requests())
    -- other escapes of dots in a longer segment are plain names
    c:request("GET", "jobs/%2e%2ex")
    assert.same({ "/api/v4/jobs/%2e%2ex" }, uris())
  end)
end)

describe("request: query", function()
  it("sorted keys, repeated keys for lists, RFC 3986 unreserved characters kept, the rest %XX", function()
    local c = clients.new()
    c:request("GET", "jobs", { query = {
      b = "x y", a = { "1", "2" }, ["c d"] = "é/?&=#+%", e = true, f = 1.5, g = 2 ^ 53, h = "AZaz09-._~", i = false,
      j = "", k = 0,
    } })
    assert.same({ "/api/v4/jobs?a=1&a=2&b=x%20y&c%20d=%C3%A9%2F%3F%26%3D%23%2B%25&e=true&f=1.5&g=9007199254740992"
      .. "&h=AZaz09-._~&i=false&j=&k=0" }, uris())
  end)

  it("the server reads what was meant", function()
    local list = assert(clients.new():request("GET", "jobs", { query = { job_type = "ldap_sync", per_page = 5 } }))
    assert.equal(1, #list)
    assert.equal(J(4), list[1].id)
    assert.same({ "/api/v4/jobs?job_type=ldap_sync&per_page=5" }, uris())
  end)

  it("an empty query table adds nothing", function()
    clients.new():request("GET", "jobs", { query = {} })
    clients.new():request("GET", "jobs", { query = { a = {} } })
    assert.same({ "/api/v4/jobs", "/api/v4/jobs" }, uris())
  end)

  it("refuses values it cannot send, before sending", function()
    local c = clients.new()
    local bad = {
      { { [1] = "x" }, "option 'query' must have string keys" },
      { { a = print }, "query value 'a' must be a string, number or boolean" },
      { { a = { {} } }, "query value 'a' must be a string, number or boolean" },
      { { a = 0 / 0 }, "query value 'a' must be a string, number or boolean" },
      { { a = math.huge }, "query value 'a' must be a string, number or boolean" },
      { { a = { x = 1 } }, "query value 'a' must be a string, number, boolean or a list of them" },
      { { a = { "1", nil, "3" } }, "query value 'a' must be a string, number, boolean or a list of them" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #3 to 'request' %(" .. case[2], c.request, c, "GET", "jobs", { query = case[1] })
    end
    assert.same({}, stub.requests())
  end)
end)

describe("request: arguments", function()
  it("methods: the six of the API, any case; anything else raises", function()
    local c = clients.new()
    assert.equal(J(1), c:request("get", "jobs/" .. J(1)).id)
    for _, m in ipairs{ "OPTIONS", "TRACE", "CONNECT", "", "GET ", 5 } do
      raises("bad argument #1 to 'request' %(method must be one of GET, HEAD, POST, PUT, PATCH, DELETE%)",
             c.request, c, m, "jobs")
    end
    raises("bad argument #1 to 'request'", c.request, c, nil, "jobs")
    assert.equal(1, #stub.requests())
  end)

  it("options: names, types, a body where none can go, bodies JSON cannot hold", function()
    local c = clients.new()
    local bad = {
      { "GET", "x", "options table expected, got string" },
      { "GET", { qeury = {} }, "unknown option 'qeury'" },
      { "GET", { query = "a=1" }, "option 'query' must be a table, got string" },
      { "POST", { body = 5 }, "option 'body' must be a table or string, got number" },
      { "GET", { idempotent = 1 }, "option 'idempotent' must be a boolean, got number" },
      { "GET", { file = true }, "option 'file' must be a string, got boolean" },
      { "GET", { body = "{}" }, "a GET request has no body" },
      { "HEAD", { body = {} }, "a HEAD request has no body" },
      { "POST", { body = { f = print } }, "option 'body' cannot be sent as JSON" },
      { "POST", { body = { [1] = 1, [1000] = 2 } }, "option 'body' cannot be sent as JSON" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #3 to 'request' %(" .. case[3], c.request, c, case[1], "jobs", case[2])
    end
    assert.same({}, stub.requests())
  end)

  it("a dot call and a closed client raise", function()
    local c = clients.new()
    raises("call request with a colon", c.request, "GET", "jobs")
    c:close()
    raises("attempt to use a closed client", c.request, c, "GET", "jobs")
    assert.same({}, stub.requests())
  end)
end)

describe("request: idempotence and retries", function()
  -- Each method once through flaky503:1 (the first request per method and
  -- path fails with 503): how many times it was sent, and the outcome.
  local function through_flaky(m, opts)
    local c = clients.fault("flaky503:1", "sysadmin", { retries = 1, max_retry_wait = 0 })
    local v, err = c:request(m, "jobs/" .. J(1), opts)
    return #stub.requests(), v == nil and err or nil
  end

  it("GET, HEAD, PUT and DELETE are retried after a 503", function()
    local n, err = through_flaky("GET")
    assert.equal(2, n)
    assert.is_nil(err)
    for _, m in ipairs{ "HEAD", "PUT", "DELETE" } do
      stub.reset()
      n, err = through_flaky(m)
      assert.equal(2, n, m)
      assert.equal(404, err.status, m) -- the second answer: no such route for that method
      assert.equal(2, err.attempts, m)
    end
  end)

  it("POST and PATCH are not, unless idempotent = true", function()
    for _, m in ipairs{ "POST", "PATCH" } do
      stub.reset()
      local n, err = through_flaky(m)
      assert.equal(1, n, m)
      assert.equal(503, err.status, m)
      assert.equal(1, err.attempts, m)
      stub.reset()
      n, err = through_flaky(m, { idempotent = true })
      assert.equal(2, n, m)
      assert.equal(2, err.attempts, m)
    end
  end)

  it("idempotent = false turns retries off for a GET", function()
    local n, err = through_flaky("GET", { idempotent = false })
    assert.equal(1, n)
    assert.equal(503, err.status)
  end)

  it("a dropped connection is retried for GET, not for POST", function()
    local function flaky()
      return clients.fault("flaky_close:1", "sysadmin", { retries = 1, max_retry_wait = 0 })
    end
    assert.equal(J(1), flaky():request("GET", "jobs/" .. J(1)).id)
    -- a fresh client: on a reused connection libcurl itself sends a request
    -- again once when the connection drops before any answer
    local _, err = flaky():request("POST", "jobs", { body = '{"type":"active_users"}' })
    assert.equal("network", err.kind)
    assert.equal(1, err.attempts)
    assert.equal(3, #stub.requests())
  end)
end)

describe("request: debug log and scrubbing", function()
  it("logs each request and answer; the token never shows, even in the path or the query", function()
    local token = fx.users.sysadmin.token
    local lines = {}
    local c = clients.new("sysadmin", { debug = function(l) lines[#lines + 1] = l end })
    assert(c:request("GET", "jobs", { query = { per_page = 1, t = token } }))
    local _, err = c:request("GET", "jobs/" .. token)
    http_error(err, 404, "app.job.get.app_error")
    assert.equal("/api/v4/jobs/[redacted]", err.path)
    assert.is_nil(tostring(err):find(token, 1, true))
    local log = table.concat(lines, "\n")
    assert.is_nil(log:find(token, 1, true))
    assert.matches("> GET http://[^\n]*/api/v4/jobs%?per_page=1&t=%[redacted%]\n", log)
    assert.matches("> Authorization: Bearer %[redacted%]\n", log)
    assert.matches("< HTTP 200 %(", log)
    assert.matches("< HTTP 404 %(", log)
    assert.matches("> GET http://[^\n]*/api/v4/jobs/%[redacted%]\n", log)
    -- it was sent, of course
    assert.equal("/api/v4/jobs/" .. token, stub.requests()[2].uri)
  end)

  it("logs a body's size, not the body", function()
    local lines = {}
    local c = clients.new("sysadmin", { debug = function(l) lines[#lines + 1] = l end })
    assert(c:request("POST", "jobs", { body = '{"type":"active_users","data":{"secret":"s3cr3t"}}' }))
    local log = table.concat(lines, "\n")
    assert.matches("> Content%-Type: application/json\n> %[50 bytes of body%]", log)
    assert.is_nil(log:find("s3cr3t", 1, true))
  end)
end)

describe("request: the file option", function()
  local dir
  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.remove(dir) end)

  it("writes a 2xx body to the file and returns its size; an error answer writes nothing", function()
    stub.config{ download_export_results = true }
    local c = clients.new()
    local zip = mime.unb64(fx.jobs.J6.file.base64)
    local n, ctype = c:request("GET", "jobs/" .. J(6) .. "/download", { file = dir .. "/J6.zip" })
    assert.equal(#zip, n)
    assert.equal("application/zip", ctype)
    assert.equal(zip, files.read(dir .. "/J6.zip"))
    -- JSON too: the bytes, not decoded
    n = c:request("GET", "jobs/" .. J(1), { file = dir .. "/J1.json" })
    assert.equal(J(1), cjson.decode(files.read(dir .. "/J1.json")).id)
    assert.equal(#files.read(dir .. "/J1.json"), n)
    files.write(dir .. "/keep", "old")
    local _, err = c:request("GET", "jobs/" .. J(8) .. "/download", { file = dir .. "/keep" })
    http_error(err, 404, "api.job.unable_to_download_job")
    assert.equal("old", files.read(dir .. "/keep"))
    assert.same({ "J1.json", "J6.zip", "keep" }, files.list(dir))
  end)
end)
