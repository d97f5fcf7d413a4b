-- Batches over curl_multi: regen_tokens, create_jobs and the general batch,
-- against the stub server.
local mm = require "mm"
local socket = require "socket"
local stub = require "support.stubctl"
local clients = require "support.client"
local raises = require("support.check").raises

local cmd, UNKNOWN = clients.cmd, clients.UNKNOWN

before_each(stub.reset)

describe("regen_tokens", function()
  it("returns tokens and errors in input order; one failure fails nothing else", function()
    local ids = { cmd("C_admin"), cmd("C_deleted"), cmd("C_other"), UNKNOWN, cmd("C_basic") }
    local results, failed = clients.new():regen_tokens(ids, { concurrency = 3 })
    assert.equal(5, #results)
    assert.equal(2, failed)
    for _, i in ipairs{ 1, 3, 5 } do
      assert.is_string(results[i])
      assert.equal(26, #results[i])
    end
    for _, i in ipairs{ 2, 4 } do
      assert.is_true(mm.is_error(results[i]))
      assert.equal(404, results[i].status)
      assert.equal("store.sql_command.save.get.app_error", results[i].id)
      assert.matches(ids[i], results[i].path, 1, true)
    end
    -- each token is the one now in force for its own command
    local now = stub.fixtures().commands
    assert.equal(now.C_admin.token, results[1])
    assert.equal(now.C_other.token, results[3])
    assert.equal(now.C_basic.token, results[5])
    assert.equal(5, #stub.requests())
  end)

  it("an empty list is an empty result, with nothing sent", function()
    local results, failed = clients.new():regen_tokens({})
    assert.same({}, results)
    assert.equal(0, failed)
    assert.same({}, stub.requests())
  end)

  it("retries what is retryable, per request, and reports attempts", function()
    local c = clients.fault("flaky503:1", "sysadmin", { retries = 1, max_retry_wait = 0.01 })
    local ids = { cmd("C_admin"), cmd("C_other"), cmd("C_basic") }
    local results, failed = c:regen_tokens(ids, { concurrency = 2 })
    assert.equal(0, failed)
    for i = 1, 3 do assert.equal(26, #results[i]) end
    -- every path failed once and then succeeded
    assert.equal(6, #stub.requests())
  end)
end)

describe("create_jobs", function()
  it("creates the jobs in order and returns errors in place", function()
    local list = { { type = "active_users" }, { type = "no_such_type" }, { type = "expiry_notify", data = { a = 1 } } }
    local jobs, failed = clients.new():create_jobs(list, { concurrency = 2 })
    assert.equal(1, failed)
    assert.equal("active_users", jobs[1].type)
    assert.equal("pending", jobs[1].status)
    assert.equal(400, jobs[2].status)
    assert.equal("api.job.unable_to_create_job.incorrect_job_type", jobs[2].id)
    assert.equal("expiry_notify", jobs[3].type)
    assert.same({ a = "1" }, jobs[3].data)
    assert.are_not.equal(jobs[1].id, jobs[3].id)
  end)

  it("never retries a POST that reached the server", function()
    local c = clients.fault("flaky503:1", "sysadmin", { retries = 3, max_retry_wait = 0.01 })
    -- one at a time: the stub fails the first POST to /api/v4/jobs only
    local jobs, failed = c:create_jobs({ { type = "active_users" }, { type = "active_users" } }, { concurrency = 1 })
    assert.equal(1, failed)
    assert.equal(503, jobs[1].status)
    assert.equal(1, jobs[1].attempts)
    assert.equal("pending", jobs[2].status)
    assert.equal(2, #stub.requests())
  end)
end)

describe("batch", function()
  it("mixes operations and keeps the order", function()
    local c = clients.new()
    local job = assert(c:create_job{ type = "active_users" })
    local results, failed = c:batch({
      { "get_job", job.id }, { "regen_token", cmd("C_admin") }, { "create_job", { type = "active_users" } },
      { "get_job", UNKNOWN },
    })
    assert.equal(1, failed)
    assert.equal(job.id, results[1].id)
    assert.equal(26, #results[2])
    assert.equal("pending", results[3].status)
    assert.equal("app.job.get.app_error", results[4].id)
  end)

  it("calls on_progress after each call, between transfers, up to the total", function()
    local seen = {}
    local ids = {}
    for i = 1, 10 do ids[i] = cmd(i % 2 == 0 and "C_admin" or "C_other") end
    clients.new():regen_tokens(ids, { concurrency = 4, on_progress = function(done, total)
      seen[#seen + 1] = { done, total }
    end })
    assert.equal(10, #seen)
    for i, s in ipairs(seen) do assert.same({ i, 10 }, s) end
  end)

  it("an error in on_progress propagates, and the client stays usable", function()
    local c = clients.new()
    local ok, msg = pcall(c.regen_tokens, c, { cmd("C_admin"), cmd("C_other") }, {
      concurrency = 1, on_progress = function() error("stop here") end,
    })
    assert.is_false(ok)
    assert.matches("stop here", msg)
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
    local results = c:regen_tokens({ cmd("C_admin"), cmd("C_other") })
    assert.equal(26, #results[2])
  end)
end)

describe("using the client from its own on_progress", function()
  it("a single call from the callback joins the batch's transfers", function()
    local c = clients.new()
    local seen = {}
    local results, failed = c:regen_tokens({ cmd("C_admin"), cmd("C_other"), cmd("C_basic") }, {
      concurrency = 2, on_progress = function() local _, e = c:get_job(UNKNOWN); seen[#seen + 1] = e.status end,
    })
    assert.equal(0, failed)
    for i = 1, 3 do assert.equal(26, #results[i]) end
    assert.same({ 404, 404, 404 }, seen)
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
  end)

  it("a batch from the callback of another raises a clear error; the client stays usable", function()
    local c = clients.new()
    local ok, msg = pcall(c.regen_tokens, c, { cmd("C_admin"), cmd("C_other") }, {
      on_progress = function() c:regen_tokens({ cmd("C_basic") }) end,
    })
    assert.is_false(ok)
    assert.matches("a batch cannot be started from a callback of another batch", msg)
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
    assert.equal(0, select(2, c:regen_tokens({ cmd("C_admin"), cmd("C_other") })))
  end)

  it("close() from on_progress takes effect when the transfers end", function()
    local c = clients.new()
    local ids = {}
    for i = 1, 6 do ids[i] = cmd("C_admin") end
    local results = c:regen_tokens(ids, { concurrency = 2, on_progress = function(done)
      if done == 1 then c:close() end
    end })
    assert.equal(26, #results[1])
    assert.equal("mm.client (closed)", tostring(c))
    local ok, msg = pcall(c.regen_token, c, cmd("C_admin"))
    assert.is_false(ok)
    assert.matches("closed client", msg)
  end)
end)

describe("concurrency and connections", function()
  it("keeps the concurrency limit: never more connections, rounds take their time", function()
    local c = clients.fault("slow_headers:0.25")
    local ids = {}
    for i = 1, 12 do ids[i] = cmd("C_admin") end
    local t0 = socket.gettime()
    local results, failed = c:regen_tokens(ids, { concurrency = 4 })
    local dt = socket.gettime() - t0
    assert.equal(0, failed)
    assert.equal(12, #results)
    assert.is_true(#stub.connections() <= 4, "connections: " .. #stub.connections())
    assert.is_true(dt >= 0.7, "12 slow calls at 4 at a time took only " .. dt) -- three rounds of 0.25 s
  end)

  it("runs calls at once up to the limit", function()
    local c = clients.fault("slow_headers:0.3")
    local ids = {}
    for i = 1, 16 do ids[i] = cmd("C_admin") end
    local t0 = socket.gettime()
    local _, failed = c:regen_tokens(ids, { concurrency = 16 })
    local dt = socket.gettime() - t0
    assert.equal(0, failed)
    assert.is_true(dt < 1.5, "16 calls of 0.3 s, all at once, took " .. dt)
  end)

  it("reuses connections across batches and single calls", function()
    local c = clients.new()
    local ids = {}
    for i = 1, 40 do ids[i] = cmd("C_admin") end
    c:regen_tokens(ids, { concurrency = 4 })
    c:regen_tokens(ids, { concurrency = 4 })
    for _ = 1, 5 do assert(c:regen_token(cmd("C_admin"))) end
    local conns = stub.connections()
    local total = 0
    for _, k in ipairs(conns) do total = total + k.requests end
    assert.equal(85, total)
    assert.is_true(#conns <= 4, "connections: " .. #conns)
  end)

  it("keeps every connection of a wide batch for the next one", function()
    -- libcurl alone keeps 4 idle connections per transfer still added:
    -- as a batch winds down it would close most, and the next reconnect
    local c = clients.new()
    local ids = {}
    for i = 1, 16 do ids[i] = cmd("C_admin") end
    for _ = 1, 3 do assert.equal(0, select(2, c:regen_tokens(ids, { concurrency = 16 }))) end
    assert.is_true(#stub.connections() <= 16, "connections: " .. #stub.connections())
  end)
end)

describe("batch arguments raise and send nothing", function()
  it("checks every item before sending any", function()
    local c = clients.new()
    raises("bad argument #1 to 'regen_tokens' %(item #3: id must be 26 characters, got 4%)",
      c.regen_tokens, c, { cmd("C_admin"), cmd("C_other"), "1234" })
    raises("bad argument #1 to 'create_jobs' %(item #2: field 'type' must be a non%-empty string%)",
      c.create_jobs, c, { { type = "active_users" }, {} })
    raises("bad argument #1 to 'batch' %(call #1 must be", c.batch, c, { { "delete_everything", "x" } })
    raises("bad argument #1 to 'regen_tokens' %(table expected, got string%)", c.regen_tokens, c, "abc")
    assert.same({}, stub.requests())
  end)

  it("checks the options", function()
    local c = clients.new()
    local ids = { cmd("C_admin") }
    raises("bad argument #2 to 'regen_tokens' %(unknown option 'concurency'%)", c.regen_tokens, c, ids,
      { concurency = 2 })
    for _, n in ipairs{ 0, 1025, 2.5 } do
      raises("option 'concurrency' must be a whole number from 1 to 1024", c.regen_tokens, c, ids, { concurrency = n })
    end
    raises("option 'on_progress' must be a function", c.regen_tokens, c, ids, { on_progress = true })
    raises("call regen_tokens with a colon", c.regen_tokens, ids)
    assert.same({}, stub.requests())
  end)
end)
