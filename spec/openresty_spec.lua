-- mm.ngx and examples/openresty under a real nginx, against the stub
-- server: mm built for LuaJIT, its calls run in nginx's thread pool from
-- request handlers and timers. The example's nginx.conf also serves the
-- test locations of spec/support/ngx_probe.lua.
-- Run: bin/mm-stub run -- spec/run lua5.4 /usr/bin/busted spec/openresty_spec.lua
-- Needs: nginx, libnginx-mod-http-lua, libluajit2-5.1-dev (to build mm.core for LuaJIT).
local socket = require "socket"
local http = require "socket.http"
local cjson = require "cjson"
local stubctl = require "support.stubctl"

local STUB = assert(os.getenv("MM_STUB_URL"), "run under bin/mm-stub run (MM_STUB_URL unset)")
-- Every Mattermost call takes this long, so that calls overlap and a
-- blocked event loop would show.
local SLOW = 0.5
local MM_URL = STUB .. "/__fault/slow_headers:" .. SLOW

-- Whether a shell command succeeded, and its output (portable: pclose
-- reports differently across Lua versions).
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit $?\"")
  local out = p:read("*a")
  p:close()
  local text, code = out:match("^(.-)exit (%d+)\n$")
  return code == "0", text
end

local function slurp(name)
  local f = io.open(name, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end


-- Requests to nginx, run concurrently as coroutines over non-blocking
-- sockets. Each task is { method, path, at = seconds after start }; the
-- result of each is { status, body, elapsed = seconds from its own start }.
local function http_all(port, tasks, limit)
  local results, waiting, started = {}, {}, socket.gettime()
  local function exchange(method, path)
    local c = socket.tcp()
    c:settimeout(0)
    local ok, err = c:connect("127.0.0.1", port)
    if not ok and err ~= "timeout" then error(err) end
    coroutine.yield(c, "w")
    local req = method .. " " .. path .. " HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    local i = 1
    while i <= #req do
      local n, serr, last = c:send(req, i)
      i = (n or last) + 1
      if not n then
        if serr ~= "timeout" then error(serr) end
        coroutine.yield(c, "w")
      end
    end
    local parts = {}
    while true do
      local data, rerr, partial = c:receive(8192)
      parts[#parts + 1] = data or partial
      if rerr == "closed" then break end
      if rerr and rerr ~= "timeout" then error(rerr) end
      if not data then coroutine.yield(c, "r") end
    end
    c:close()
    local raw = table.concat(parts)
    return { status = tonumber(raw:match("^HTTP/1%.%d (%d+)")), body = raw:match("\r\n\r\n(.*)$") }
  end
  local pending, running = {}, 0
  for i, t in ipairs(tasks) do pending[i] = t end
  local function step(co, i, t0)
    local ok, a, b = coroutine.resume(co)
    assert(ok, a)
    if coroutine.status(co) == "dead" then
      a.elapsed = socket.gettime() - t0
      results[i] = a
      running = running - 1
    else
      waiting[a] = { co = co, mode = b, i = i, t0 = t0 }
    end
  end
  while next(pending) or running > 0 do
    local now = socket.gettime() - started
    assert(now < limit, "requests still running after " .. limit .. " s")
    for i, t in pairs(pending) do
      if (t.at or 0) <= now then
        pending[i] = nil
        running = running + 1
        local method, path = t[1], t[2]
        step(coroutine.create(function() return exchange(method, path) end), i, socket.gettime())
      end
    end
    local r, w = {}, {}
    for s, wt in pairs(waiting) do
      if wt.mode == "r" then r[#r + 1] = s else w[#w + 1] = s end
    end
    if #r + #w > 0 then
      local rr, ww = socket.select(r, w, 0.01)
      for _, list in ipairs{ rr, ww } do
        for _, s in ipairs(list) do
          local wt = waiting[s]
          waiting[s] = nil
          step(wt.co, wt.i, wt.t0)
        end
      end
    else
      socket.sleep(0.01)
    end
  end
  return results
end

-- The example's nginx.conf with these replacements, each of which must
-- match exactly once, so that a change to the example is noticed here.
local function template(conf, replacements)
  for _, r in ipairs(replacements) do
    local from, to = r[1], r[2]
    local i = conf:find(from, 1, true)
    assert(i and not conf:find(from, i + 1, true), "examples/openresty/nginx.conf: expected one '" .. from .. "'")
    conf = conf:sub(1, i - 1) .. to .. conf:sub(i + #from)
  end
  return conf
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- The token of a header list of a recorded request.
local function bearer(req)
  return stubctl.header(req, "authorization")
end

describe("mm.ngx in examples/openresty", function()
  local root, prefix, port, fx, error_log

  local function nginx_pid()
    return tonumber(slurp(prefix .. "/nginx.pid"):match("%d+"))
  end

  local function get(path, limit)
    return http_all(port, { { "GET", path } }, limit or 10)[1]
  end

  local function json(path, limit)
    local r = get(path, limit)
    assert.are.equal(200, r.status, r.body)
    return cjson.decode(r.body)
  end

  local function regens_seen(id)
    local seen = {}
    for _, req in ipairs(stubctl.requests()) do
      if req.method == "PUT" and req.uri:find("/api/v4/commands/" .. id .. "/regen_token", 1, true) then
        seen[#seen + 1] = req
      end
    end
    return seen
  end

  setup(function()
    local ok, out = sh("pwd")
    assert(ok)
    root = out:gsub("%s+$", "")
    assert(io.open("/usr/include/luajit-2.1/lua.h"), "LuaJIT headers missing: apt-get install -y libluajit2-5.1-dev")
    ok, out = sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s all " -- not the settings of a calling make
      .. "LUA_VERSION=5.1 LUA_NAME=luajit LUA_INCDIR=/usr/include/luajit-2.1")
    assert(ok, "building mm.core for LuaJIT failed:\n" .. out)

    ok, out = sh("mktemp -d")
    assert(ok)
    prefix = out:gsub("%s+$", "")
    assert(sh("chmod 755 " .. prefix)) -- workers may not run as root
    error_log = prefix .. "/error.log"
    stubctl.reset()
    fx = stubctl.fixtures()

    local conf = template(slurp(root .. "/examples/openresty/nginx.conf"), {
      -- one event loop: a call that blocked it would delay every request
      { "worker_processes auto;", "worker_processes 1;" },
      { "pid nginx.pid;", "pid " .. prefix .. "/nginx.pid;" },
      { "error_log stderr notice;", "error_log " .. error_log .. " notice;" },
      { "listen 127.0.0.1:8080;", "listen 127.0.0.1:@PORT@;" },
      -- the test locations: their module, URLs and pools
      { 'lua_package_path "', 'lua_package_path "' .. root .. '/spec/support/?.lua;' },
      { "env MM_TOKEN;", "env MM_TOKEN;\nenv MM_TEST_URL;\nenv MM_TEST_SLOW_URL;" },
      { "thread_pool mm threads=4;",
        "thread_pool mm threads=4;\nthread_pool mmw threads=2;\nthread_pool mmb threads=1;" },
      { "        location = /ping {", [=[
        location ~ "^/t/(regen|wait)/([a-z0-9]+)$" {
            content_by_lua_block { require("ngx_probe")[ngx.var[1]](ngx.var[2]) }
        }
        location = /t/errors { content_by_lua_block { require("ngx_probe").errors() } }
        location = /t/create { content_by_lua_block { require("ngx_probe").create() } }
        location = /t/stats { content_by_lua_block { require("ngx_probe").stats() } }

        location = /ping {]=] },
    })
    -- as root, workers would otherwise run as nobody, who may not read the checkout
    if sh("test \"$(id -u)\" = 0") then conf = "user root;\n" .. conf end
    for _ = 1, 5 do -- another process may take the port between free_port() and nginx's bind
      port = free_port()
      local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
      f:write((conf:gsub("@PORT@", port)))
      f:close()
      -- the example runs with its own directory as the prefix, as its README says
      -- (LD_PRELOAD is dropped: make test-asan preloads the sanitizer for Lua only)
      ok, out = sh(("env -u LD_PRELOAD MM_URL=%s MM_TOKEN=%s MM_TEST_URL=%s MM_TEST_SLOW_URL=%s "
        .. "nginx -p %s/examples/openresty/ -c %s/nginx.conf -e %s"):format(
        MM_URL, fx.users.sysadmin.token, STUB, STUB .. "/__fault/slow_headers:1", root, prefix, error_log))
      if ok or not out:find("in use", 1, true) then break end
    end
    assert(ok, "nginx did not start:\n" .. out .. slurp(error_log))
    for _ = 1, 100 do
      local body = http.request("http://127.0.0.1:" .. port .. "/ping")
      if body == "pong\n" then return end
      socket.sleep(0.05)
    end
    error("nginx does not answer /ping:\n" .. slurp(error_log))
  end)

  teardown(function()
    local pid = prefix and nginx_pid()
    if pid then
      sh("kill -TERM " .. pid)
      for _ = 1, 100 do
        if not sh("kill -0 " .. pid) then break end
        socket.sleep(0.05)
      end
    end
    if prefix then sh("rm -rf " .. prefix) end
  end)

  before_each(function() stubctl.reset() end)

  it("regenerates tokens under 20 concurrent requests without blocking the event loop", function()
    local id = fx.commands.C_admin.id
    local tasks = {}
    for i = 1, 20 do tasks[i] = { "PUT", "/commands/" .. id .. "/regen_token" } end
    -- while all 20 wait on the (slow) server, nginx must still answer at once
    tasks[21] = { "GET", "/ping", at = 0.1 }
    local t0 = socket.gettime()
    local results = http_all(port, tasks, 30)
    local total = socket.gettime() - t0

    assert.are.equal(200, results[21].status)
    assert.is_true(results[21].elapsed < SLOW / 2, ("/ping took %.3f s"):format(results[21].elapsed))
    -- the calls overlap in the pool: about one server latency, not twenty
    assert.is_true(total < 4 * SLOW, ("20 calls took %.2f s"):format(total))

    local tokens = {}
    for i = 1, 20 do
      local r = results[i]
      assert.are.equal(200, r.status, r.body .. slurp(error_log))
      local v = cjson.decode(r.body)
      assert.are.equal(id, v.id)
      assert.is_truthy(v.token:match("^[a-z0-9]+$") and #v.token == 26, v.token)
      assert.is_nil(tokens[v.token], "token returned twice: " .. v.token)
      tokens[v.token] = true
    end
    assert.is_nil(tokens[fx.commands.C_admin.token])

    -- the stub saw 20 regenerations with the token from nginx's environment,
    -- and the command's token in force is one of those returned
    local seen = regens_seen(id)
    assert.are.equal(20, #seen)
    for _, req in ipairs(seen) do assert.are.equal("Bearer " .. fx.users.sysadmin.token, bearer(req)) end
    assert.is_true(tokens[stubctl.fixtures().commands.C_admin.token])
  end)

  it("answers every one of 500 concurrent requests, in few thread calls and without a log line", function()
    local id = fx.commands.C_admin.id
    local before = json("/t/stats?pool=mm")
    local log_before = #slurp(error_log)
    local tasks = {}
    for i = 1, 500 do tasks[i] = { "PUT", "/commands/" .. id .. "/regen_token" } end
    local t0 = socket.gettime()
    local results = http_all(port, tasks, 60)
    local total = socket.gettime() - t0

    local tokens, n = {}, 0
    for i = 1, 500 do
      local r = results[i]
      assert.are.equal(200, r.status, r.body)
      local token = cjson.decode(r.body).token
      assert.is_nil(tokens[token], "token returned twice: " .. token)
      tokens[token], n = true, n + 1
    end
    assert.are.equal(500, n)
    assert.are.equal(500, #regens_seen(id))
    assert.is_true(tokens[stubctl.fixtures().commands.C_admin.token])
    -- each thread call carried many: 500 calls at 0.5 s each in a few seconds
    local after = json("/t/stats?pool=mm")
    assert.are.equal(500, after.calls - before.calls)
    assert.is_true(after.dispatches - before.dispatches <= 50, tostring(after.dispatches - before.dispatches))
    assert.are.equal(0, after.busy - before.busy)
    assert.is_true(total < 12 * SLOW, ("500 calls took %.2f s"):format(total))
    assert.are.equal("", slurp(error_log):sub(log_before + 1))
  end)

  it("passes Mattermost's refusal on with its status and error id, and logs no token", function()
    local r = http_all(port, { { "PUT", "/commands/" .. fx.commands.C_deleted.id .. "/regen_token" } }, 10)[1]
    assert.are.equal(404, r.status)
    local e = cjson.decode(r.body).error
    assert.are.equal("http", e.kind)
    assert.are.equal("store.sql_command.save.get.app_error", e.id)
    assert.is_string(e.request_id)
    assert.is_nil(r.body:find(fx.users.sysadmin.token, 1, true))
    local log = slurp(error_log)
    assert.is_truthy(log:find("HTTP 404 store.sql_command.save.get.app_error", 1, true), log)
    assert.is_nil(log:find(fx.users.sysadmin.token, 1, true))
    -- only PUT regenerates
    r = http_all(port, { { "GET", "/commands/" .. fx.commands.C_admin.id .. "/regen_token" } }, 10)[1]
    assert.are.equal(403, r.status)
  end)

  it("follows jobs to their end with one watcher timer", function()
    local tasks = {}
    for i = 1, 3 do tasks[i] = { "POST", "/jobs?type=active_users" } end
    local started = http_all(port, tasks, 10)
    local ids = {}
    for i, r in ipairs(started) do
      assert.are.equal(202, r.status, r.body)
      local job = cjson.decode(r.body)
      assert.are.equal("pending", job.status)
      ids[i] = job.id
    end
    -- the requests are answered; only the watcher polls the server now
    for _, id in ipairs(ids) do
      local seen
      for _ = 1, 100 do
        seen = json("/jobs/" .. id)
        if seen.status == "success" then break end
        socket.sleep(0.1)
      end
      assert.are.equal("success", seen.status, cjson.encode(seen))
      assert.are.equal(100, seen.progress)
      assert.are.equal("success", stubctl.job(id).status)
    end

    assert.are.equal(400, http_all(port, { { "POST", "/jobs" } }, 10)[1].status)
    assert.are.equal(404, get("/jobs/" .. ("a"):rep(26)).status)
  end)

  it("POST /jobs sends the job type decoded; one type or none is a 400", function()
    local r = http_all(port, { { "POST", "/jobs?type=bad%20type" } }, 10)[1]
    assert.are.equal(400, r.status, r.body)
    assert.are.equal("api.job.unable_to_create_job.incorrect_job_type", cjson.decode(r.body).error.id, r.body)
    local sent = stubctl.requests()
    assert.are.equal(1, #sent)
    assert.are.equal("bad type", cjson.decode(sent[1].body).type)
    for _, path in ipairs({ "/jobs", "/jobs?type=", "/jobs?type", "/jobs?type=a&type=b" }) do
      r = http_all(port, { { "POST", path } }, 10)[1]
      assert.are.equal(400, r.status, path)
      assert.are.equal("give one ?type=JOB_TYPE", cjson.decode(r.body).error.message, path)
    end
    assert.are.equal(1, #stubctl.requests()) -- nothing more sent
  end)

  it("returns real error objects and raises for bad arguments", function()
    local o = json(("/t/errors?deleted=%s&live=%s"):format(fx.commands.C_deleted.id, fx.commands.C_admin.id), 20)
    local e = o.e404
    assert.is_true(e.is_error)
    assert.is_true(o.e404.same_type)
    assert.are.equal("http", e.kind)
    assert.are.equal(404, e.status)
    assert.are.equal("store.sql_command.save.get.app_error", e.id)
    assert.are.equal("PUT", e.method)
    assert.are.equal("/api/v4/commands/" .. fx.commands.C_deleted.id .. "/regen_token", e.path)
    assert.is_string(e.request_id)
    assert.are.equal(("mm: HTTP 404 store.sql_command.save.get.app_error: %s (PUT %s, request_id %s)"):format(
      e.message, e.path, e.request_id), e.text)
    assert.is_nil(cjson.encode(o):find(fx.users.sysadmin.token, 1, true))

    assert.are.equal("bad argument #1 to 'regen_token' (id must be 26 characters, got 1)", o.bad_id)
    assert.are.equal("mm: call regen_token with a colon: client:regen_token(...), not client.regen_token(...)",
      o.dot_call)
    assert.are.equal("bad argument #1 to 'new' (option 'url' must be a string, got number)", o.bad_new)
    assert.are.equal("bad argument #1 to 'new' (option 'queue_timeout' must be a number of seconds above 0 "
      .. "(at most 86400))", o.bad_option)
    assert.are.equal("bad argument #1 to 'create_job' (a function cannot be passed to the thread pool)",
      o.not_crossing)
    assert.is_truthy(o.bad_batch:find("^bad argument #1 to 'batch' %("), o.bad_batch)
    assert.is_truthy(o.on_progress:find("option 'on_progress' is not available in mm.ngx", 1, true), o.on_progress)
    assert.are.equal("bad argument #1 to 'wait_job' (id must be 26 characters, got 1)", o.bad_wait)

    local trace = table.concat(o.debug, "\n")
    assert.is_truthy(trace:find("> PUT " .. STUB .. "/api/v4/commands/" .. fx.commands.C_admin.id .. "/regen_token", 1,
      true), trace)
    assert.is_truthy(trace:find("> Authorization: Bearer [redacted]", 1, true), trace)
    assert.is_truthy(trace:find("< HTTP 200", 1, true), trace)

    assert.are.equal(1, o.batch.failed)
    assert.are.equal("string", o.batch.first)
    assert.is_true(o.batch.second.is_error)
    assert.are.equal(404, o.batch.second.status)

    -- a call that finds no pool thread in queue_timeout: an error of its own
    -- kind, nothing sent, nothing logged
    assert.is_true(o.busy.is_error)
    assert.are.equal("busy", o.busy.kind)
    assert.are.equal("mm: busy: no thread of pool 'mmb' free within 0.2 s", o.busy.text)
    assert.are.equal("string", o.busy_first)
    assert.are.equal(1, o.stats.busy)
    -- the batch's, the traced one, the slow one; not the busy one
    assert.are.equal(3, #regens_seen(fx.commands.C_admin.id))
    assert.is_nil(slurp(error_log):find("mmb", 1, true))
  end)

  it("waits for jobs with ngx.sleep: 50 waits on a 2-thread pool leave it free for other calls", function()
    stubctl.config{ job_steps = 6 }
    local made = json("/t/create?n=50")
    assert.are.equal(0, made.failed)
    local ids = made.ids
    local tasks = {}
    for i, id in ipairs(ids) do tasks[i] = { "GET", "/t/wait/" .. id .. "?interval=0.25&timeout=30" } end
    -- while the 50 sleep between polls, 10 calls through the same 2 threads
    for i = 1, 10 do tasks[50 + i] = { "GET", "/t/regen/" .. fx.commands.C_admin.id, at = 0.3 + 0.05 * i } end
    local t0 = socket.gettime()
    local results = http_all(port, tasks, 60)
    local total = socket.gettime() - t0
    for i = 1, 50 do
      local r = results[i]
      assert.are.equal(200, r.status, r.body)
      local v = cjson.decode(r.body)
      assert.are.equal("success", v.status, r.body)
      -- 6 polls in progress, then the outcome: slept at least 6 intervals
      assert.is_true(v.elapsed >= 6 * 0.25, r.body)
    end
    for i = 51, 60 do
      local v = cjson.decode(results[i].body)
      assert.is_string(v.token, results[i].body)
      assert.is_true(results[i].elapsed < 1, ("a call during the waits took %.2f s"):format(results[i].elapsed))
    end
    -- had each wait held a thread, the 2 threads would take 25 rounds of 1.75 s
    assert.is_true(total < 10, ("50 waits took %.2f s"):format(total))
  end)

  it("reports a job that fails or does not finish as mm's wait_job does", function()
    stubctl.config{ job_outcome = "error", job_steps = 1 }
    local failing = json("/t/create?n=1").ids[1]
    stubctl.config{ job_outcome = "never" }
    local stuck = json("/t/create?n=1").ids[1]
    local v = json("/t/wait/" .. failing .. "?interval=0.05&timeout=10")
    assert.is_true(v.error.is_error)
    assert.are.equal("job", v.error.kind)
    assert.are.equal("error", v.error.job_status)
    assert.are.equal("/api/v4/jobs/" .. failing, v.error.path)
    assert.is_truthy(v.error.text:find("^mm: job: job " .. failing .. " ended in error"), v.error.text)

    v = json("/t/wait/" .. stuck .. "?interval=0.05&timeout=0.5")
    assert.is_true(v.error.is_error)
    assert.is_truthy(v.error.kind == "timeout" or v.error.kind == "wait_timeout", v.error.kind)
    assert.are.equal("in_progress", v.error.job_status)
    assert.is_true(v.elapsed >= 0.5 and v.elapsed < 2, tostring(v.elapsed))
    assert.are.equal(("mm: %s: job %s still in_progress after 0.5 s (GET /api/v4/jobs/%s)"):format(
      v.error.kind, stuck, stuck), v.error.text)
  end)
end)
