-- examples/openresty under a real nginx, against the stub server: mm built
-- for LuaJIT, called through ngx.run_worker_thread and from ngx.timer.at.
-- Run: bin/mm-stub run -- spec/run lua5.4 /usr/bin/busted spec/openresty_spec.lua
-- Needs: nginx, libnginx-mod-http-lua, libluajit2-5.1-dev (to build mm.core for LuaJIT).
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

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

local function stub(method, path)
  local chunks = {}
  local _, status = http.request{ url = STUB .. path, method = method, sink = ltn12.sink.table(chunks) }
  assert(status == 200, "stub " .. path .. ": " .. tostring(status))
  return cjson.decode(table.concat(chunks))
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

describe("examples/openresty", function()
  local root, prefix, port, fx, error_log

  local function nginx_pid()
    return tonumber(slurp(prefix .. "/nginx.pid"):match("%d+"))
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
    fx = stub("GET", "/__stub/fixtures")

    local conf = template(slurp(root .. "/examples/openresty/nginx.conf"), {
      -- one event loop: a call that blocked it would delay every request
      { "worker_processes auto;", "worker_processes 1;" },
      { "pid nginx.pid;", "pid " .. prefix .. "/nginx.pid;" },
      { "error_log stderr notice;", "error_log " .. error_log .. " notice;" },
      { "listen 127.0.0.1:8080;", "listen 127.0.0.1:@PORT@;" },
    })
    -- (LD_PRELOAD is dropped: make test-asan preloads the sanitizer for Lua only)
    -- as root, workers would otherwise run as nobody, who may not read the checkout
    if sh("test \"$(id -u)\" = 0") then conf = "user root;\n" .. conf end
    for _ = 1, 5 do -- another process may take the port between free_port() and nginx's bind
      port = free_port()
      local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
      f:write((conf:gsub("@PORT@", port)))
      f:close()
      -- the example runs with its own directory as the prefix, as its README says
      ok, out = sh(("env -u LD_PRELOAD MM_URL=%s MM_TOKEN=%s nginx -p %s/examples/openresty/ -c %s/nginx.conf -e %s")
        :format(
        MM_URL, fx.users.sysadmin.token, root, prefix, error_log))
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

  before_each(function() stub("POST", "/__stub/reset") end)

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
    -- 16 threads: two rounds of calls, not twenty
    assert.is_true(total < 8 * SLOW, ("20 calls took %.2f s"):format(total))

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
    local seen = 0
    for _, req in ipairs(stub("GET", "/__stub/requests")) do
      if req.method == "PUT" and req.uri:find("/api/v4/commands/" .. id .. "/regen_token", 1, true) then
        seen = seen + 1
        local auth
        for _, h in ipairs(req.headers) do
          if h[1]:lower() == "authorization" then auth = h[2] end
        end
        assert.are.equal("Bearer " .. fx.users.sysadmin.token, auth)
      end
    end
    assert.are.equal(20, seen)
    assert.is_true(tokens[stub("GET", "/__stub/fixtures").commands.C_admin.token])
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

  it("follows a job to its end in the background with ngx.timer.at", function()
    local r = http_all(port, { { "POST", "/jobs?type=active_users" } }, 10)[1]
    assert.are.equal(202, r.status, r.body)
    local job = cjson.decode(r.body)
    assert.are.equal("pending", job.status)
    -- the request is answered; only the watcher timer polls the server now
    local last
    for _ = 1, 100 do
      last = http_all(port, { { "GET", "/jobs/" .. job.id } }, 10)[1]
      assert.are.equal(200, last.status)
      if cjson.decode(last.body).status == "success" then break end
      socket.sleep(0.1)
    end
    local seen = cjson.decode(last.body)
    assert.are.equal("success", seen.status, last.body)
    assert.are.equal(100, seen.progress)
    assert.are.equal("success", stub("GET", "/__stub/jobs/" .. job.id).status)

    r = http_all(port, { { "POST", "/jobs" } }, 10)[1]
    assert.are.equal(400, r.status)
    r = http_all(port, { { "GET", "/jobs/" .. ("a"):rep(26) } }, 10)[1]
    assert.are.equal(404, r.status)
  end)
end)
