-- mm.core on its own (no `mm`): options, the one result shape (a response
-- table, or nil and {kind, message, curl_code}), the transfer engine
-- (start, wait, wait_for, progress, abort, pending), captured headers,
-- gzip, max_body, output files, signal watchers, answers no sane server
-- gives (support.rawserver) and close with transfers in flight.
local core = require "mm.core"
local cjson = require "cjson"
local mime = require "mime"
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local files = require "support.files"
local child = require "support.child"
local rawserver = require "support.rawserver"

local raises, keys = check.raises, check.keys
local unpack = table.unpack or unpack
local fx, AUTH
local URL = stub.url

local J = clients.job
local function api(path) return URL .. "/api/v4" .. path end
local function fault(mode, path) return URL .. "/__fault/" .. mode .. "/api/v4" .. path end

-- A core client that authenticates as sysadmin, with more options.
local function new(opts)
  opts = opts or {}
  opts.headers = opts.headers or { AUTH }
  return core.new(opts)
end

local timed = clients.timed

-- The signals this thread blocks, as the hex mask of /proc/self/status.
local function blocked()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^SigBlk:%s*(%x+)")
    if v then return v end
  end
end

-- Sends `sig` to this process from a background shell after `delay` s.
-- Through popen, not os.execute: system() sets SIGINT and SIGQUIT to
-- SIG_IGN while it waits, which discards them even when pending.
local function signal_later(sig, delay)
  local p = assert(io.popen(("sh -c 'sleep %s; kill -%s %s' >/dev/null 2>&1 &"):format(delay, sig, clients.pid())))
  p:close()
end

-- A 200 answer with this body.
local function answer(body, extra)
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" .. (extra or "") .. "Content-Length: " .. #body
    .. "\r\n\r\n" .. body
end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
  AUTH = "Authorization: Bearer " .. fx.users.sysadmin.token
end)

describe("mm.core alone", function()
  it("loads without the Lua modules of mm and talks to a server", function()
    local out = child.run("", ([[
      package.path = ""
      local core = require "mm.core"
      local c = core.new{ headers = { %q } }
      local r = assert(c:request("GET", %q))
      io.write(r.status, " ", r.content_type, " ", tostring(package.loaded.mm))
    ]]):format(AUTH, api("/jobs/" .. J(1))))
    assert.equal("200 application/json nil", out)
  end)

  it("says what it is", function()
    assert.matches("^%d+%.%d+%.%d+$", core._VERSION)
    assert.matches("^%d+%.%d+%.%d+", core.curl_version)
    assert.equal(1024, core.max_concurrency)
    assert.equal(1e9, core.max_body_limit)
    assert.matches("^mm%.core%.client %(0x%x+%)$", tostring(core.new{}))
  end)
end)

describe("core utilities", function()
  it("parse_headers: names lower-cased, values trimmed, repeats joined; other lines skipped", function()
    assert.same({ ["content-type"] = "application/json", ["x-a"] = "1, 2", empty = "" },
      core.parse_headers("HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nX-A: 1\r\nx-a:2\r\n"
        .. "Empty:\r\nno colon here\r\n: no name\r\n\r\n"))
    assert.same({}, core.parse_headers(""))
    raises("bad argument #1 to '.-' %(string expected", core.parse_headers)
  end)

  it("monotime goes forward", function()
    local t0 = core.monotime()
    core.sleep(0.01)
    assert.is_true(core.monotime() - t0 >= 0.009)
  end)
end)

describe("core.new options", function()
  it("accepts every option", function()
    local c = core.new{
      timeout = 5, connect_timeout = 0.5, max_body = 1e9, cafile = "/nonexistent", capath = "/nonexistent",
      sslcert = "/nonexistent", sslkey = "/nonexistent", proxy = "", noproxy = "*", insecure = false,
      compression = false, headers = { AUTH }, body_headers = { "Content-Type: application/json" },
      capture = { "x-request-id" },
    }
    local r = assert(c:request("GET", api("/jobs/" .. J(1))))
    assert.equal(200, r.status)
  end)

  it("raises on unknown names, wrong types and values out of range, naming the option", function()
    local bad = {
      { { tiemout = 1 }, "unknown option 'tiemout'" },
      { { [1] = "x" }, "option names must be strings" },
      { { timeout = "1" }, "option 'timeout' must be a number of seconds above 0 %(at most 86400%)" },
      { { timeout = 0 }, "option 'timeout' must be a number of seconds above 0" },
      { { timeout = -1 }, "option 'timeout' must be a number of seconds above 0" },
      { { timeout = 86401 }, "option 'timeout' must be a number of seconds above 0 %(at most 86400%)" },
      { { timeout = 0 / 0 }, "option 'timeout' must be a number of seconds" },
      { { connect_timeout = true }, "option 'connect_timeout' must be a number of seconds" },
      { { max_body = 0 }, "option 'max_body' must be a number of bytes from 1 to 1e9" },
      { { max_body = 1e9 + 1 }, "option 'max_body' must be a number of bytes from 1 to 1e9" },
      { { max_body = "8M" }, "option 'max_body' must be a number of bytes" },
      { { cafile = 5 }, "option 'cafile' must be a string" },
      { { proxy = {} }, "option 'proxy' must be a string" },
      { { insecure = "yes" }, "option 'insecure' must be a boolean" },
      { { compression = 1 }, "option 'compression' must be a boolean" },
      { { headers = "Accept: x" }, "option 'headers' must be a table %(array of strings%)" },
      { { headers = { 5 } }, "headers header #1 is not a string" },
      { { headers = { "A: 1", "B: 2\r\nC: 3" } }, "headers header #2 contains a control character" },
      { { headers = { "NoColon" } }, "headers header #1 is not of the form 'Name: value'" },
      { { headers = { ": value" } }, "headers header #1 is not of the form 'Name: value'" },
      { { headers = { "Bad Name: v" } }, "headers header #1 has white space in its name" },
      { { body_headers = { "X: \0" } }, "body_headers header #1 contains a control character" },
      { { capture = { "a", "b", "c", "d", "e", "f", "g", "h", "i" } }, "option 'capture' takes at most 8 names" },
      { { capture = { "x-a:" } }, "option 'capture': #1 is not a header name" },
      { { capture = { "" } }, "option 'capture': #1 is not a header name" },
      { { capture = { 5 } }, "option 'capture': #1 is not a header name" },
    }
    for _, case in ipairs(bad) do raises(case[2], core.new, case[1]) end
    raises("bad argument #1 to '.-' %(table expected, got no value%)", core.new)
    raises("bad argument #1 to '.-' %(table expected, got string%)", core.new, "timeout=1")
  end)

  it("never shows a header's value in its error (it may hold a token)", function()
    local ok, msg = pcall(core.new, { headers = { "Authorization: Bearer s3cr3t\n" } })
    assert.is_false(ok)
    assert.matches("headers header #1 contains a control character", msg)
    assert.is_nil(msg:find("s3cr3t", 1, true))
  end)
end)

describe("core request: the response table", function()
  it("status, body, content_type and the raw head; nothing else", function()
    local c = new()
    local r, err = c:request("GET", api("/jobs/" .. J(1)))
    assert.is_nil(err)
    assert.same({ "body", "content_type", "head", "status" }, keys(r))
    assert.equal(200, r.status)
    assert.equal("application/json", r.content_type)
    assert.equal(J(1), cjson.decode(r.body).id)
    assert.matches("^HTTP/1%.1 200 OK\r\n", r.head)
    assert.matches("\r\nX%-Request%-Id: %w+\r\n", r.head)
    assert.matches("\r\n\r\n$", r.head)
    assert.equal("application/json", core.parse_headers(r.head)["content-type"])
  end)

  it("an HTTP error status is a response too", function()
    local r = assert(new():request("GET", api("/jobs/" .. ("y"):rep(26))))
    assert.equal(404, r.status)
    assert.equal("app.job.get.app_error", cjson.decode(r.body).id)
  end)

  it("a body-less answer has an empty body and no content type when none is sent", function()
    local srv = rawserver.start{ "HTTP/1.1 204 No Content\r\n\r\n" }
    local r = assert(core.new{}:request("DELETE", srv.url .. "/x"))
    srv:finish()
    assert.equal(204, r.status)
    assert.equal("", r.body)
    assert.is_nil(r.content_type)
  end)

  it("a failure is nil and {kind, message, curl_code}, nothing else", function()
    local r, err = core.new{}:request("GET", "http://127.0.0.1:1/")
    assert.is_nil(r)
    assert.same({ "curl_code", "kind", "message" }, keys(err))
    assert.equal("connect", err.kind)
    assert.equal(7, err.curl_code)
    assert.is_string(err.message)
    assert.is_nil(getmetatable(err))
  end)

  it("timeouts: the client's, and a request's own", function()
    local c = new{ timeout = 0.3 }
    local took, r, err = timed(function() return c:request("GET", fault("slow_headers:5", "/jobs/" .. J(1))) end)
    assert.is_nil(r)
    assert.equal("timeout", err.kind)
    assert.equal(28, err.curl_code)
    assert.is_true(took < 3, "took " .. took)
    c = new{ timeout = 30 }
    local _
    took, _, err = timed(function()
      return c:request("GET", fault("slow_headers:5", "/jobs/" .. J(1)), nil, nil, { timeout = 0.3 })
    end)
    assert.equal("timeout", err.kind)
    assert.is_true(took < 3, "took " .. took)
  end)

  it("sends the default headers, body headers with a body, no form type without one", function()
    local c = new{ body_headers = { "Content-Type: application/json" } }
    assert(c:request("POST", api("/jobs"), '{"type":"active_users"}'))
    assert(c:request("POST", api("/jobs/" .. J(1) .. "/cancel")))
    assert(c:request("PUT", api("/commands/" .. fx.commands.C_admin.id .. "/regen_token")))
    assert(c:request("PATCH", api("/jobs/" .. J(5) .. "/status"), '{"status":"canceled","force":true}',
                     { "X-Extra: 1", "Content-Type: text/plain" }))
    assert(c:request("DELETE", api("/x")))
    local reqs = stub.requests()
    local host = URL:match("//(.*)")
    local base = { { "Host", host }, { "Accept", "*/*" }, { "Accept-Encoding", "gzip" },
                   { "Authorization", AUTH:sub(16) } }
    local function with(...)
      local t = {}
      for i, h in ipairs(base) do t[i] = h end
      for _, h in ipairs({ ... }) do t[#t + 1] = h end
      return t
    end
    assert.same(with({ "Content-Type", "application/json" }, { "Content-Length", "23" }), reqs[1].headers)
    assert.same(with({ "Content-Length", "0" }), reqs[2].headers)
    assert.equal("PUT", reqs[3].method)
    assert.same(with({ "Content-Length", "0" }), reqs[3].headers)
    -- request headers come after the defaults; their Content-Type wins
    assert.same(with({ "X-Extra", "1" }, { "Content-Type", "text/plain" }, { "Content-Length", "34" }),
                reqs[4].headers)
    assert.equal("PATCH", reqs[4].method)
    assert.equal('{"status":"canceled","force":true}', reqs[4].body)
    assert.equal("DELETE", reqs[5].method)
    assert.same(base, reqs[5].headers)
  end)

  it("HEAD reads no body", function()
    local srv = rawserver.start{ "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" }
    local r = assert(core.new{}:request("HEAD", srv.url .. "/x"))
    local got = srv:finish()
    assert.equal(200, r.status)
    assert.equal("", r.body)
    assert.matches("^HEAD /x HTTP/1%.1\r\n", got[1])
  end)

  it("raises on bad arguments; the client stays usable", function()
    local c = new()
    local url = api("/jobs/" .. J(1))
    local bad = {
      { "request method must be one of GET HEAD DELETE POST PUT PATCH", "FOO", url },
      { "request method must be one of", "get", url },
      { "request method must be one of", nil, url },
      { "request url must be a string", "GET", 5 },
      { "request body must be a string", "POST", url, 5 },
      { "a GET request cannot have a body", "GET", url, "" },
      { "a HEAD request cannot have a body", "HEAD", url, "x" },
      { "request headers must be a table", "GET", url, nil, "X: 1" },
      { "request header #2 is not of the form 'Name: value'", "GET", url, nil, { "X: 1", "Y" } },
      { "request header #1 contains a control character", "GET", url, nil, { "X: 1\r\nY: 2" } },
      { "request option 'output' must be a file name", "GET", url, nil, nil, { output = "" } },
      { "request option 'output' must be a file name", "GET", url, nil, nil, { output = "a\0b" } },
      { "request option 'output' must be a file name", "GET", url, nil, nil, { output = 5 } },
      { "request option 'timeout' must be a number of seconds above 0", "GET", url, nil, nil, { timeout = 0 } },
      { "request option 'timeout' must be a number of seconds above 0", "GET", url, nil, nil,
        { output = "/tmp/x", timeout = "1" } },
      { "unknown request option 'bogus'", "GET", url, nil, nil, { bogus = 1 } },
      { "bad argument #6 to '.-' %(table expected, got string%)", "GET", url, nil, nil, "x" },
    }
    for _, case in ipairs(bad) do
      raises(case[1], c.request, c, unpack(case, 2, 6))
    end
    assert.same({ 0, 0 }, { c:pending() })
    assert.same({}, stub.requests())
    assert.equal(200, assert(c:request("GET", url)).status)
  end)
end)

describe("core transfers: start, wait, wait_for, progress, abort, pending", function()
  it("runs transfers at once and hands each back with its tag", function()
    local c = new()
    assert.same({ 0, 0 }, { c:pending() })
    assert.equal(0, select("#", c:wait())) -- nothing in flight: nothing, at once
    local tags = { "a", { t = 1 }, 3 }
    for i, tag in ipairs(tags) do
      local slot = c:start(tag, "GET", api("/jobs/" .. J(i)))
      assert.is_number(slot)
    end
    assert.same({ 3, 0 }, { c:pending() })
    local seen = {}
    for _ = 1, 3 do
      local tag, r, err = c:wait()
      assert.is_nil(err)
      assert.equal(200, r.status)
      for i, t in ipairs(tags) do
        if t == tag then
          assert.is_nil(seen[i])
          seen[i] = true
          assert.equal(J(i), cjson.decode(r.body).id)
        end
      end
    end
    assert.same({ true, true, true }, seen)
    assert.same({ 0, 0 }, { c:pending() })
    raises("bad argument #2 to '.-' %(a tag is required%)", c.start, c, nil, "GET", api("/jobs"))
  end)

  it("a failure comes back with its tag: tag, nil, err", function()
    local c = core.new{}
    c:start("refused", "GET", "http://127.0.0.1:1/")
    local tag, r, err = c:wait()
    assert.equal("refused", tag)
    assert.is_nil(r)
    assert.equal("connect", err.kind)
  end)

  it("wait_for hands back that transfer only; the others wait for wait", function()
    local c = new()
    local slow = c:start("slow", "GET", fault("slow_headers:0.5", "/jobs/" .. J(1)))
    c:start("fast", "GET", api("/jobs/" .. J(2)))
    local tag, r = c:wait_for(slow)
    assert.equal("slow", tag)
    assert.equal(J(1), cjson.decode(r.body).id)
    assert.same({ 0, 1 }, { c:pending() }) -- "fast" finished meanwhile, not handed back
    tag, r = c:wait()
    assert.equal("fast", tag)
    assert.equal(J(2), cjson.decode(r.body).id)
    raises("bad argument #2 to '.-' %(no such transfer%)", c.wait_for, c, slow)
    raises("bad argument #2 to '.-' %(no such transfer%)", c.wait_for, c, 99)
    raises("bad argument #2 to '.-' %(number expected", c.wait_for, c, "x")
  end)

  it("wait and wait_for with a timeout return nothing when it passes first", function()
    local c = new()
    local slot = c:start("slow", "GET", fault("slow_headers:2", "/jobs/" .. J(1)))
    local took, n = timed(function() return select("#", c:wait(0.2)) end)
    assert.equal(0, n)
    assert.is_true(took >= 0.15 and took < 1.5, "took " .. took)
    assert.equal(0, select("#", c:wait_for(slot, 0.05)))
    assert.same({ 1, 0 }, { c:pending() })
    c:abort(slot)
    assert.equal("slow", (c:wait_for(slot)))
  end)

  it("a negative or NaN timeout raises instead of meaning none", function()
    local c = new()
    local slot = c:start("slow", "GET", fault("slow_headers:5", "/jobs/" .. J(1)))
    for _, t in ipairs{ -1, -0.001, 0 / 0 } do
      raises("bad argument #2 to '.-' %(must be a non%-negative number of seconds%)", c.wait, c, t)
      raises("bad argument #3 to '.-' %(must be a non%-negative number of seconds%)", c.wait_for, c, slot, t)
    end
    raises("bad argument #2 to '.-' %(number expected", c.wait, c, "soon")
    local took, n = timed(function() return select("#", c:wait(0)) end)
    assert.equal(0, n)
    assert.is_true(took < 1, "took " .. took)
    c:close()
  end)

  it("progress gives the body bytes so far and the announced total", function()
    stub.config{ download_export_results = true }
    local size = 256 * 1024
    local id = stub.store_job({ file = { size = size } }).job.id
    local c = new()
    local slot = c:start("dl", "GET", fault("slow_body:0.5", "/jobs/" .. id .. "/download"))
    local bytes, total
    repeat
      c:wait_for(slot, 0.05)
      bytes, total = c:progress(slot)
    until total ~= nil
    assert.equal(0, bytes) -- the headers are there, the body is not
    assert.equal(size, total)
    local _, r = c:wait_for(slot)
    assert.equal(size, #r.body)
    raises("no such transfer", c.progress, c, slot)
  end)

  it("abort ends one transfer or all; each comes back as kind 'aborted'", function()
    local c = new()
    local s1 = c:start(1, "GET", fault("slow_headers:5", "/jobs/" .. J(1)))
    c:start(2, "GET", fault("slow_headers:5", "/jobs/" .. J(2)))
    c:start(3, "GET", fault("slow_headers:5", "/jobs/" .. J(3)))
    c:abort(s1)
    assert.same({ 2, 1 }, { c:pending() })
    local tag, r, err = c:wait_for(s1)
    assert.equal(1, tag)
    assert.is_nil(r)
    assert.same({ kind = "aborted", message = "transfer aborted before its answer was complete", curl_code = 42 }, err)
    local took = timed(function()
      c:abort()
      assert.same({ 0, 2 }, { c:pending() })
      for _ = 1, 2 do
        local _, r2, e2 = c:wait()
        assert.is_nil(r2)
        assert.equal("aborted", e2.kind)
      end
    end)
    assert.is_true(took < 1, "took " .. took)
    assert.same({ 0, 0 }, { c:pending() })
    -- the connections are dropped, the client is not
    assert.equal(200, assert(c:request("GET", api("/jobs/" .. J(1)))).status)
  end)
end)

describe("core capture", function()
  it("picks the named response headers out of every answer, names lower-cased", function()
    local c = new{ capture = { "X-Request-Id", "content-type", "Permissions-Policy", "x-absent" } }
    local r = assert(c:request("GET", api("/jobs/" .. J(1))))
    assert.same({ "content-type", "permissions-policy", "x-request-id" }, keys(r.captured))
    assert.equal(core.parse_headers(r.head)["x-request-id"], r.captured["x-request-id"])
    assert.equal("application/json", r.captured["content-type"])
    assert.equal("", r.captured["permissions-policy"]) -- an empty value is still a value
    -- none named: no table
    assert.is_nil(new():request("GET", api("/jobs/" .. J(1))).captured)
    -- none present: no table either
    assert.is_nil(new{ capture = { "x-absent" } }:request("GET", api("/jobs/" .. J(1))).captured)
  end)

  it("only the final header block counts (after a 1xx); a repeated header: the last", function()
    local srv = rawserver.start{ "HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nX-A: 2\r\nX-B: 3\r\nX-B:  4 \r\nContent-Length: 2\r\n\r\n[]" }
    local r = assert(core.new{ capture = { "x-a", "x-b" } }:request("GET", srv.url .. "/x"))
    srv:finish()
    assert.equal(200, r.status)
    assert.same({ ["x-a"] = "2", ["x-b"] = "4" }, r.captured)
    assert.matches("^HTTP/1%.1 200 OK\r\n", r.head)
    assert.equal("3, 4", core.parse_headers(r.head)["x-b"])
  end)
end)

describe("core compression", function()
  it("asks for gzip and decodes it; compression = false asks for nothing", function()
    local gz = assert(new():request("GET", api("/jobs")))
    local plain = assert(new{ compression = false }:request("GET", api("/jobs")))
    assert.equal(gz.body, plain.body)
    assert.is_true(#gz.body >= 1400) -- the stub's gzip threshold
    assert.equal(10, #cjson.decode(gz.body))
    assert.equal("gzip", core.parse_headers(gz.head)["content-encoding"])
    assert.is_nil(core.parse_headers(plain.head)["content-encoding"])
    local reqs = stub.requests()
    assert.equal("gzip", stub.header(reqs[1], "Accept-Encoding"))
    assert.is_nil(stub.header(reqs[2], "Accept-Encoding"))
  end)

  it("a body that is not the gzip it claims is kind 'protocol'", function()
    local srv = rawserver.start{ answer("not gzip at all", "Content-Encoding: gzip\r\n") }
    local r, err = core.new{}:request("GET", srv.url .. "/x")
    srv:finish()
    assert.is_nil(r)
    assert.equal("protocol", err.kind)
    assert.equal(61, err.curl_code)
  end)
end)

describe("core max_body", function()
  it("a Content-Length over max_body is refused at once, before the body comes", function()
    local c = new{ max_body = 100 }
    -- slow_body: the headers now, the body after 5 s
    local took, r, err = timed(function() return c:request("GET", fault("slow_body:5", "/jobs")) end)
    assert.is_nil(r)
    assert.equal("too_large", err.kind)
    assert.equal(63, err.curl_code) -- CURLE_FILESIZE_EXCEEDED: from the Content-Length
    assert.equal("response larger than the limit (max_body 100 bytes)", err.message)
    assert.is_true(took < 2, "took " .. took)
    -- the client is still good: {"status":"OK"} is within 100 bytes
    assert.equal(200, assert(c:request("POST", api("/jobs/" .. J(1) .. "/cancel"))).status)
  end)

  it("16 MiB announced, 1 MiB allowed: too_large", function()
    local _, err = new{ max_body = 1024 * 1024 }:request("GET", fault("huge", "/jobs/x"))
    assert.equal("too_large", err.kind)
    assert.equal(63, err.curl_code)
  end)

  it("a chunked body (no length) is cut when it passes max_body", function()
    local chunk = ("x"):rep(1024)
    local body = ("400\r\n" .. chunk .. "\r\n"):rep(8) .. "0\r\n\r\n"
    local srv = rawserver.start{
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" .. body,
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" .. body,
    }
    local r, err = core.new{ max_body = 8 * 1024 - 1 }:request("GET", srv.url .. "/x")
    assert.is_nil(r)
    assert.equal("too_large", err.kind)
    assert.equal(23, err.curl_code) -- CURLE_WRITE_ERROR: the write callback refused it
    assert.matches("max_body 8191 bytes", err.message)
    r = assert(core.new{ max_body = 8 * 1024 }:request("GET", srv.url .. "/x")) -- exactly max_body: fine
    srv:finish()
    assert.equal(8 * 1024, #r.body)
  end)

  it("answers over max_body by exactly one byte, and at it", function()
    local body = assert(new():request("GET", api("/jobs/" .. J(1)))).body
    assert(new{ max_body = #body }:request("GET", api("/jobs/" .. J(1))))
    local _, err = new{ max_body = #body - 1 }:request("GET", api("/jobs/" .. J(1)))
    assert.equal("too_large", err.kind)
  end)
end)

describe("core output files", function()
  local dir
  before_each(function()
    dir = files.tmpdir()
    stub.config{ download_export_results = true }
  end)
  after_each(function() files.remove(dir) end)

  it("a 2xx body goes to the file: bytes and file instead of body", function()
    local target = dir .. "/J6.zip"
    local r, err = new():request("GET", api("/jobs/" .. J(6) .. "/download"), nil, nil, { output = target })
    assert.is_nil(err)
    assert.same({ "bytes", "content_type", "file", "head", "status" }, keys(r))
    assert.equal(fx.jobs.J6.file.size, r.bytes)
    assert.equal(target, r.file)
    assert.equal("application/zip", r.content_type)
    assert.equal(mime.unb64(fx.jobs.J6.file.base64), files.read(target))
    assert.same({ "J6.zip" }, files.list(dir))
  end)

  it("has no max_body", function()
    local id = stub.store_job({ file = { size = 300000 } }).job.id
    local r = assert(new{ max_body = 1000 }:request("GET", api("/jobs/" .. id .. "/download"), nil, nil,
                                                   { output = dir .. "/x" }))
    assert.equal(300000, r.bytes)
  end)

  it("an error answer stays in memory; no file is made", function()
    local r = assert(new():request("GET", api("/jobs/" .. J(8) .. "/download"), nil, nil, { output = dir .. "/x" }))
    assert.equal(404, r.status)
    assert.equal("api.job.unable_to_download_job", cjson.decode(r.body).id)
    assert.is_nil(r.file)
    assert.same({}, files.list(dir))
  end)

  it("a file that cannot be written is kind 'file' naming it", function()
    local r, err = new():request("GET", api("/jobs/" .. J(6) .. "/download"), nil, nil,
                                 { output = dir .. "/none/x.zip" })
    assert.is_nil(r)
    assert.same({ curl_code = 23, kind = "file",
                  message = "cannot write " .. dir .. "/none/x.zip: No such file or directory" }, err)
  end)

  it("close with a download in flight removes its partial file", function()
    local id = stub.store_job({ file = { size = 1024 ^ 3, content = "zeros" } }).job.id
    local c = new()
    local target = dir .. "/big.zip"
    local slot = c:start("big", "GET", api("/jobs/" .. id .. "/download"), nil, nil, { output = target })
    repeat c:wait_for(slot, 0.001) until c:progress(slot) > 0
    local during = files.list(dir)
    c:close()
    assert.equal(1, #during)
    assert.matches("^%.big%.zip%.mm%-%x+%.part$", during[1])
    assert.same({}, files.list(dir))
  end)
end)

describe("core close", function()
  it("with transfers in flight: at once, idempotent; the client is unusable after", function()
    local c = new()
    for i = 1, 3 do c:start(i, "GET", fault("slow_headers:5", "/jobs/" .. J(i))) end
    local took = timed(function()
      c:close()
      c:close()
    end)
    assert.is_true(took < 1, "took " .. took)
    assert.equal("mm.core.client (closed)", tostring(c))
    for _, m in ipairs{ "request", "start", "wait", "wait_for", "progress", "abort", "pending" } do
      raises("attempt to use a closed mm client", c[m], c, "GET", api("/jobs"))
    end
  end)

  it("closing from a scope (Lua 5.4 <close>) and by the collector", function()
    if _VERSION == "Lua 5.4" then
      local c = assert(load([[
        local core, url, auth = ...
        local c <close> = core.new{ headers = { auth } }
        c:start(1, "GET", url)
        return c
      ]]))(core, fault("slow_headers:5", "/jobs/" .. J(1)), AUTH)
      assert.equal("mm.core.client (closed)", tostring(c))
    end
    do
      local c = new()
      c:start(1, "GET", fault("slow_headers:5", "/jobs/" .. J(1)))
    end
    collectgarbage()
    collectgarbage()
  end)
end)

describe("core answers no sane server gives", function()
  it("HTTP/0.9 (no status line) is kind 'protocol'", function()
    local srv = rawserver.start{ "hello there\n" }
    local r, err = core.new{}:request("GET", srv.url .. "/x")
    srv:finish()
    assert.is_nil(r)
    assert.equal("protocol", err.kind)
    assert.equal(1, err.curl_code)
    assert.matches("HTTP/0%.9", err.message)
  end)

  it("a status line libcurl cannot read is kind 'protocol'; a URL it cannot use, 'url'", function()
    local srv = rawserver.start{ "HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n" }
    local _, err = core.new{}:request("GET", srv.url .. "/x")
    srv:finish()
    assert.same({ kind = "protocol", curl_code = 1, message = "Unsupported HTTP version in response" }, err)
    _, err = core.new{}:request("GET", "ftp://127.0.0.1/x")
    assert.equal("url", err.kind)
    assert.equal(1, err.curl_code) -- CURLE_UNSUPPORTED_PROTOCOL, as above
    _, err = core.new{}:request("GET", "http://[::1/x")
    assert.equal("url", err.kind)
  end)

  it("a connection closed without a byte is kind 'network'", function()
    local _, err = new():request("GET", fault("close_before", "/jobs"))
    assert.equal("network", err.kind)
    assert.equal(52, err.curl_code) -- CURLE_GOT_NOTHING
  end)

  it("a header line over libcurl's limit (100 KiB) is kind 'too_large'", function()
    local srv = rawserver.start{ answer("[]", "X-Big: " .. ("a"):rep(100 * 1024) .. "\r\n"),
                                 answer("[]", "X-Big: " .. ("a"):rep(99 * 1024) .. "\r\n") }
    local c = core.new{}
    local r, err = c:request("GET", srv.url .. "/x")
    assert.is_nil(r)
    assert.equal("too_large", err.kind)
    assert.equal("response header line longer than libcurl's limit (102400 bytes)", err.message)
    -- CURLE_OUT_OF_MEMORY before libcurl 8.6, CURLE_TOO_LARGE since
    assert.is_true(err.curl_code == 27 or err.curl_code == 100, tostring(err.curl_code))
    r = assert(c:request("GET", srv.url .. "/x"))
    srv:finish()
    assert.equal(99 * 1024, #core.parse_headers(r.head)["x-big"])
  end)

  it("headers over 256 KiB in all are kind 'too_large'", function()
    local line = "X-Many: " .. ("b"):rep(1000) .. "\r\n"
    local srv = rawserver.start{ answer("[]", line:rep(300)), answer("[]", line:rep(200)) }
    local c = core.new{}
    local r, err = c:request("GET", srv.url .. "/x")
    assert.is_nil(r)
    assert.equal("too_large", err.kind)
    assert.equal(23, err.curl_code)
    r = assert(c:request("GET", srv.url .. "/x")) -- 200 KiB is fine
    srv:finish()
    assert.equal("[]", r.body)
  end)
end)

describe("core signal watchers", function()
  it("sleep returns false when a watched signal arrives; caught names it; close restores the mask", function()
    local before = blocked()
    local w = core.signals{ "INT" }
    finally(function()
      w:caught() -- nothing may stay pending when the mask is restored
      w:close()
    end)
    assert.is_nil(w:caught())
    assert.is_true(core.sleep(0.01, w))
    assert.is_true(core.sleep(0, w))
    signal_later("INT", 0.2)
    local took, ok = timed(function() return core.sleep(10, w) end)
    assert.is_false(ok)
    assert.is_true(took < 5, "took " .. took)
    local name, count = w:caught()
    assert.equal("INT", name)
    assert.equal(1, count)
    w:close()
    w:close()
    assert.equal(before, blocked())
    raises("closed signal watcher", core.sleep, 0.01, w)
  end)

  it("wait returns when a signal arrives, the transfer still in flight", function()
    local w = core.signals{ "TERM", "HUP" }
    finally(function()
      w:caught()
      w:close()
    end)
    local c = new()
    local slot = c:start("slow", "GET", fault("slow_headers:5", "/jobs/" .. J(1)))
    signal_later("HUP", 0.2)
    local took, n = timed(function() return select("#", c:wait(10, w)) end)
    assert.equal(0, n)
    assert.is_true(took < 4, "took " .. took)
    assert.equal("HUP", (w:caught()))
    assert.same({ 1, 0 }, { c:pending() })
    c:abort(slot)
    assert.equal("aborted", select(3, c:wait_for(slot)).kind)
  end)

  it("counts every signal; the first one names the catch", function()
    local w = core.signals{ "INT", "TERM", "QUIT" }
    finally(function()
      w:caught()
      w:close()
    end)
    signal_later("QUIT", 0.1)
    assert.is_false(core.sleep(10, w))
    signal_later("TERM", 0)
    core.sleep(0.5)
    local name, count = w:caught()
    assert.equal("QUIT", name)
    assert.equal(2, count)
  end)

  it("raise on names they do not know", function()
    raises("signal names must be among INT, TERM, HUP, QUIT", core.signals, { "KILL" })
    raises("signal names must be among INT, TERM, HUP, QUIT", core.signals, { "INT", 2 })
    raises("bad argument #1 to '.-' %(table expected", core.signals, "INT")
  end)

  it("sleep checks its arguments", function()
    raises("bad argument #1 to '.-' %(must be a non%-negative number of seconds%)", core.sleep, -1)
    raises("must be a non%-negative number of seconds", core.sleep, 1e9)
    raises("must be a non%-negative number of seconds", core.sleep, 0 / 0)
    raises("bad argument #2 to '.-'", core.sleep, 0, {})
    local took = timed(function() return core.sleep(0.1) end)
    assert.is_true(took >= 0.09, "took " .. took)
  end)
end)
