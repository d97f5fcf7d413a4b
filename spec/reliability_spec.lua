-- Work is never lost (issue 10): results as they arrive, cancelled items,
-- interrupts, bounded waits, error kinds that say what happened, and no
-- process-wide surprises. Each numbered problem of the issue is a case
-- here that failed on the code before it.
local mm = require "mm"
local stub = require "support.stubctl"
local clients = require "support.client"
local raises = require("support.check").raises

local fx

local cmd, UNKNOWN = clients.cmd, clients.UNKNOWN

local timed = clients.timed

-- The token the stub holds now for fixture command `name`.
local function live_token(name)
  return stub.fixtures().commands[name].token
end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
end)

describe("results as they arrive", function()
  it("on_result(i, value, err) is called once per item as each answer arrives", function()
    local c = clients.new()
    local ids = { cmd("C_admin"), UNKNOWN, cmd("C_other") }
    local seen = {}
    local results, failed = c:regen_tokens(ids, { concurrency = 1, on_result = function(i, value, err)
      -- the value is final when it is reported: the stub holds that token already
      if value then assert.equal(value, live_token(i == 1 and "C_admin" or "C_other")) end
      seen[#seen + 1] = { i, value, err and err.status }
    end })
    assert.equal(1, failed)
    assert.same({ { 1, results[1] }, { 2, nil, 404 }, { 3, results[3] } }, seen)
  end)

  it("a list with holes is an argument error, and nothing is sent", function()
    local c = clients.new()
    raises("bad argument #1 to 'regen_tokens' %(a list without holes expected %(2 items, highest index 3%)%)",
      c.regen_tokens, c, { [1] = cmd("C_admin"), [3] = cmd("C_other") })
    raises("bad argument #1 to 'batch' %(a list expected %(key x%)%)",
      c.batch, c, { x = { "get_job", cmd("C_admin") } })
    assert.same({}, stub.requests())
  end)

  it("a script's `arg` (keys 0 and -1 besides the list) is a list", function()
    local c = clients.new()
    local list = { [-1] = "lua5.4", [0] = "script.lua", cmd("C_admin"), cmd("C_other") }
    local results, failed = c:regen_tokens(list)
    assert.equal(0, failed)
    assert.equal(2, #results)
  end)
end)

describe("issue 10 #3: closing the client from a callback", function()
  it("items that never started come back as 'canceled' and count as failed; no holes", function()
    local c = clients.new()
    local ids = { cmd("C_admin"), cmd("C_other"), cmd("C_basic") }
    local results, failed = c:regen_tokens(ids, { concurrency = 1, on_progress = function(done)
      if done == 1 then c:close() end
    end })
    assert.equal(2, failed)
    assert.equal(3, #results)
    assert.equal(live_token("C_admin"), results[1])
    for i = 2, 3 do
      assert.is_true(mm.is_error(results[i]))
      assert.equal("canceled", results[i].kind)
      assert.equal(0, results[i].attempts)
      assert.matches("not sent: the client was closed", results[i].message, 1, true)
    end
    -- the other two were never sent
    assert.equal(1, #stub.requests())
  end)

  it("an item in flight when the client closes comes back as 'aborted'", function()
    local c = clients.fault("slow_headers:1")
    local ids = { cmd("C_admin"), cmd("C_other") }
    local results, failed = c:batch({ { "get_job", UNKNOWN }, { "regen_token", ids[1] },
      { "regen_token", ids[2] } }, { concurrency = 2, on_result = function(i) if i == 1 then c:close() end end })
    assert.equal(3, failed)
    assert.equal(404, results[1].status)
    assert.equal("aborted", results[2].kind)
    assert.equal(1, results[2].attempts)
    assert.equal("canceled", results[3].kind)
  end)
end)

describe("a Lua error while a batch runs", function()
  it("propagates, leaves nothing in flight and the client usable", function()
    local c = clients.fault("slow_headers:0.3")
    local ok, msg = pcall(c.regen_tokens, c, { cmd("C_admin"), cmd("C_other"), cmd("C_basic") }, {
      concurrency = 2, on_result = function() error("boom in on_result") end,
    })
    assert.is_false(ok)
    assert.matches("boom in on_result", msg)
    assert.same({ 0, 0 }, { c._core:pending() })
    assert.equal(26, #assert(c:regen_token(cmd("C_admin"))))
  end)
end)

describe("interrupts through a signal watcher", function()
  it("a SIGINT mid-batch: no new request, the one in flight finishes, the rest is canceled", function()
    local watcher = mm.catch_signals{ "INT" }
    local c = clients.fault("slow_headers:0.5", "sysadmin", { interrupt = watcher })
    local names = { "C_admin", "C_other", "C_basic" }
    local ids = {}
    for i, n in ipairs(names) do ids[i] = cmd(n) end
    -- the signal arrives while the second request is in flight
    os.execute("(sleep 0.7; kill -INT " .. clients.pid() .. ") >/dev/null 2>&1 &")
    local results, failed = c:regen_tokens(ids, { concurrency = 1 })
    local sig = watcher:caught()
    watcher:close()
    assert.equal("INT", sig)
    assert.equal(1, failed)
    assert.equal(live_token("C_admin"), results[1])
    assert.equal(live_token("C_other"), results[2]) -- in flight at the signal: finished, not lost
    assert.equal("canceled", results[3].kind)
    assert.equal(2, #stub.requests())
  end)

  it("a single call waiting for its retry stops at the signal with the last error", function()
    local watcher = mm.catch_signals{ "TERM" }
    local c = clients.fault("503", "sysadmin", { interrupt = watcher, retries = 3, max_retry_wait = 5 })
    os.execute("(sleep 0.3; kill -TERM " .. clients.pid() .. ") >/dev/null 2>&1 &")
    local dt, _, err = timed(function() return c:get_job(UNKNOWN) end)
    assert.equal("TERM", (watcher:caught()))
    watcher:close()
    assert.equal(503, err.status)
    assert.is_true(dt < 2, "took " .. dt)
    -- and once the watcher has caught a signal, nothing more is sent
    local before = #stub.requests()
    local _, err2 = c:get_job(UNKNOWN)
    assert.equal("canceled", err2.kind)
    assert.equal(before, #stub.requests())
  end)
end)

describe("issue 10 #4: wait_job is bounded by its timeout", function()
  it("returns 'wait_timeout' after the timeout even when a poll never answers", function()
    local c = clients.fault("slow_headers:30", "sysadmin", { timeout = 4 })
    local dt, done, err = timed(function() return c:wait_job(UNKNOWN, { timeout = 1 }) end)
    assert.is_nil(done)
    assert.equal("wait_timeout", err.kind)
    assert.is_true(dt >= 0.99 and dt < 1.6, "took " .. dt)
    assert.equal("timeout", err.cause.kind) -- the poll cut short by the deadline
  end)

  it("a retry that would outlast the deadline is not waited for", function()
    local c = clients.fault("503", "sysadmin", { retries = 5, max_retry_wait = 10 })
    local dt, _, err = timed(function() return c:wait_job(UNKNOWN, { timeout = 0.5 }) end)
    assert.is_true(dt < 1, "took " .. dt)
    assert.is_true(err.kind == "wait_timeout" or err.status == 503, tostring(err))
  end)
end)

describe("error kinds say what happened", function()
  it("an answer that is not HTTP is 'protocol'", function()
    local _, err = clients.fault("not_http"):get_job(UNKNOWN)
    assert.equal("protocol", err.kind)
  end)

  it("one header line over libcurl's limit is 'too_large'", function()
    local _, err = clients.fault("huge_header:200"):get_job(fx.jobs.J1.id)
    assert.equal("too_large", err.kind)
  end)

  it("a Content-Length over max_body is refused at once, before the body comes", function()
    local c = clients.fault("slow_body:3", "sysadmin", { max_body = 1024, timeout = 10 })
    local dt, _, err = timed(function() return c:get_jobs{ per_page = 200 } end)
    assert.equal("too_large", err.kind)
    assert.is_true(dt < 1, "took " .. dt)
  end)
end)

describe("no process-wide surprises", function()
  it("mm.defaults is read-only", function()
    raises("mm.defaults is read%-only", function() mm.defaults.timeout = 1 end)
    assert.equal(30, mm.defaults.timeout)
  end)

  it("each client draws its own retry jitter, whatever math.randomseed says", function()
    -- two waits each, to the millisecond: two clients drawing the same
    -- numbers would tie on both, which chance alone does about once in 30,000
    local waits = {}
    for k = 1, 2 do
      math.randomseed(1)
      local lines = {}
      local c = clients.fault("503", "sysadmin", { retries = 2, max_retry_wait = 1,
        debug = function(line) lines[#lines + 1] = line end })
      c:get_job(UNKNOWN)
      local drawn = {}
      for _, l in ipairs(lines) do drawn[#drawn + 1] = l:match("^retrying in (%S+) s") end
      waits[k] = table.concat(drawn, " ")
    end
    assert.matches("^%d%.%d%d%d %d%.%d%d%d$", waits[1])
    assert.are_not.equal(waits[1], waits[2])
  end)

  it("scrubbing a short token never garbles other text", function()
    stub.config{ developer = true }
    local c = clients.new(nil, { token = "c" })
    local _, err = c:get_job(UNKNOWN)
    assert.equal("api.context.session_expired.app_error", err.id)
    assert.equal("token=[redacted]", err.detailed_error)
  end)
end)

describe("issue 10 #1: pacing to the server's rate limiter", function()
  local function ids(n)
    local list, names = {}, { "C_admin", "C_other", "C_basic" }
    for i = 1, n do list[i] = cmd(names[(i - 1) % 3 + 1]) end
    return list
  end

  it("300 calls at 200/s burst 20 and concurrency 16: none fails, none is refused", function()
    stub.config{ rate_limit = { per_sec = 200, burst = 20 } }
    local c = clients.new()
    local dt, results, failed = timed(function() return c:regen_tokens(ids(300), { concurrency = 16 }) end)
    assert.equal(0, failed)
    assert.equal(300, #results)
    -- every request reached the server once: no 429 was needed
    assert.equal(300, #stub.requests())
    -- the limiter was really on: at best (300 - 21) / 200 s (the figure
    -- against 1.15x of it is bench/'s: timing is not asserted here)
    assert.is_true(dt >= 1.39, "took " .. dt)
  end)

  it("single calls pace themselves too, once the first answer shows the limiter", function()
    stub.config{ rate_limit = { per_sec = 50, burst = 5 } }
    local c = clients.new()
    for i = 1, 30 do
      assert(c:get_jobs{ per_page = 1 }, "call " .. i)
    end
    assert.equal(30, #stub.requests())
  end)

  it("a bucket drained by someone else mid-batch: a pause, then every call succeeds", function()
    stub.config{ rate_limit = { per_sec = 100, burst = 10 } }
    local c = clients.new()
    local other = clients.new("basic")
    local drained = false
    local _, failed = c:regen_tokens(ids(60), { concurrency = 8, on_result = function(i)
      if i == 10 and not drained then
        drained = true
        for _ = 1, 15 do other:get_jobs{ per_page = 1 } end -- spends the bucket from the same address
      end
    end })
    assert.equal(0, failed)
  end)
end)

describe("a single call and signals", function()
  it("a second signal aborts a single call in flight; the first lets it finish", function()
    local watcher = mm.catch_signals{ "INT" }
    local c = clients.fault("slow_headers:3", "sysadmin", { interrupt = watcher, timeout = 10 })
    os.execute("(sleep 0.3; kill -INT " .. clients.pid() .. "; sleep 0.3; kill -INT " .. clients.pid()
      .. ") >/dev/null 2>&1 &")
    local dt, _, err = timed(function() return c:get_job(UNKNOWN) end)
    local sig, count = watcher:caught()
    watcher:close()
    assert.equal("INT", sig)
    assert.equal(2, count)
    assert.equal("aborted", err.kind)
    assert.is_true(dt < 2, "took " .. dt)
  end)
end)

describe("holding back for the rate limiter", function()
  it("on_hold tells a batch's caller how long the client holds back", function()
    stub.config{ rate_limit = { per_sec = 20, burst = 2 } }
    local holds = {}
    local _, failed = clients.new():regen_tokens({ cmd("C_admin"), cmd("C_other"), cmd("C_basic"), cmd("C_admin"),
      cmd("C_other"), cmd("C_basic") }, { concurrency = 4, on_hold = function(s) holds[#holds + 1] = s end })
    assert.equal(0, failed)
    assert.is_true(#holds > 0)
    for _, s in ipairs(holds) do assert.is_true(s > 0 and s < 10, "held " .. s) end
  end)
end)

describe("downloads and the timeout", function()
  it("a download slower than the timeout succeeds while bytes keep coming", function()
    stub.config{ download_export_results = true }
    -- four seconds in all, a part every 0.4 s: twice the timeout
    local c = clients.fault("trickle:4", "sysadmin", { timeout = 2 })
    local file = os.tmpname()
    local n, ctype = c:download_job(fx.jobs.J6.id, file)
    assert.equal("application/zip", ctype, tostring(ctype))
    assert.equal(fx.jobs.J6.file.size, n)
    os.remove(file)
  end)

  it("a download with nothing coming for the timeout fails with 'timeout', leaving nothing", function()
    stub.config{ download_export_results = true }
    local c = clients.fault("slow_body:3", "sysadmin", { timeout = 1 })
    local file = os.tmpname()
    os.remove(file)
    local dt, _, err = timed(function() return c:download_job(fx.jobs.J6.id, file) end)
    assert.equal("timeout", err.kind)
    assert.is_true(dt < 2.5, "took " .. dt)
    assert.is_nil(io.open(file))
  end)

  it("a file replaced keeps its permissions", function()
    stub.config{ download_export_results = true }
    local file = os.tmpname() -- mode 0600
    os.execute("chmod 0640 '" .. file .. "'")
    assert(clients.new():download_job(fx.jobs.J6.id, file))
    local p = io.popen("stat -c %a '" .. file .. "'")
    local mode = p:read("*l")
    p:close()
    os.remove(file)
    assert.equal("640", mode)
  end)
end)
