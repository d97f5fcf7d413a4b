-- The client through its public API, against the stub server.
-- Rows refer to the condition tables of the contract (2.7, 2.8, 3.4) and
-- the numbered cases of its section 7.
local mm = require "mm"
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local bad_values = require "support.bad_values"

local raises, assert_http_error, ALPHABET = check.raises, check.http_error, check.ALPHABET

local fx -- fixtures, read from the stub

local cmd, UNKNOWN = clients.cmd, clients.UNKNOWN

before_each(function()
  stub.reset()
  fx = clients.fixtures()
end)

describe("create_job (POST /api/v4/jobs)", function()
  it("2.7#11 case 1: sysadmin creates a job and gets it as a plain table", function()
    local c = clients.new("sysadmin")
    local before = os.time() * 1000
    local job, err = c:create_job{ type = "active_users", data = { thing = "stuff" } }
    assert.is_nil(err)
    assert.equal(26, #job.id)
    assert.matches(ALPHABET, job.id)
    assert.equal("active_users", job.type)
    assert.equal("pending", job.status)
    assert.same({ thing = "stuff" }, job.data)
    for _, k in ipairs{ "priority", "create_at", "start_at", "last_activity_at", "progress" } do
      assert.is_number(job[k])
      -- Lua 5.3+ has integers: the client must give them, not floats
      if math.type then assert.equal("integer", math.type(job[k]), k .. " should be an integer") end
    end
    assert.is_true(job.create_at >= before - 1000 and job.create_at <= before + 5000)
    assert.equal(0, job.start_at)
    -- the stub stored exactly what the client asked for
    assert.same(job.data, stub.job(job.id).data)
  end)

  it("sends byte-exact requests: method, path, headers and a stable JSON body", function()
    local c = clients.new("sysadmin")
    assert(c:create_job{ type = "active_users",
      data = { thing = "stuff", n = 5, on = true, x = 1.5, big = 2 ^ 53, tenth = 0.1 } })
    local reqs = stub.requests()
    assert.equal(1, #reqs)
    local r = reqs[1]
    assert.equal("POST", r.method)
    assert.equal("/api/v4/jobs", r.uri)
    assert.equal('{"type":"active_users","data":{"big":"9007199254740992","n":"5","on":"true",'
      .. '"tenth":"0.1","thing":"stuff","x":"1.5"}}', r.body)
    assert.equal("Bearer " .. fx.users.sysadmin.token, stub.header(r, "Authorization"))
    assert.equal("application/json", stub.header(r, "Accept"))
    assert.equal("application/json", stub.header(r, "Content-Type"))
    assert.equal(tostring(#r.body), stub.header(r, "Content-Length"))
    assert.matches("^lua%-mattermost/%d+%.%d+%.%d+ ", stub.header(r, "User-Agent"))
    assert.is_nil(stub.header(r, "Expect"))
  end)

  it("case 2: no data sends an empty object, never an array", function()
    local c = clients.new("sysadmin")
    local job = assert(c:create_job{ type = "active_users" })
    assert.equal('{"type":"active_users","data":{}}', stub.requests()[1].body)
    assert.same({}, job.data)
  end)

  it("2.7#8 cases 4-5: sysmanager and basic get 403 permissions", function()
    for _, user in ipairs{ "sysmanager", "basic" } do
      local job, err = clients.new(user):create_job{ type = "active_users", data = { thing = "stuff" } }
      assert.is_nil(job)
      assert_http_error(err, 403, "api.context.permissions.app_error")
      assert.equal("You do not have the appropriate permissions.", err.message)
      assert.equal("", err.detailed_error)
    end
  end)

  it("2.7#7 cases 6, 7, 9: an unknown type is 400 incorrect_job_type", function()
    local _, err = clients.new("sysadmin"):create_job{ type = "no_such_type" }
    assert_http_error(err, 400, "api.job.unable_to_create_job.incorrect_job_type")
    _, err = clients.new("basic"):create_job{ type = "cleanup_desktop_tokens" }
    assert_http_error(err, 400, "api.job.unable_to_create_job.incorrect_job_type")
  end)

  it("2.7#9 case 10: an enterprise type on Team Edition is 400 model.job.is_valid.type", function()
    local _, err = clients.new("sysadmin"):create_job{ type = "data_retention" }
    assert_http_error(err, 400, "model.job.is_valid.type.app_error")
    stub.config{ enterprise = true }
    local job = assert(clients.new("sysadmin"):create_job{ type = "data_retention" })
    assert.equal("data_retention", job.type)
  end)

  it("2.7#5 case 17: a body over the server's limit is 413", function()
    local _, err = clients.new("sysadmin"):create_job{ type = "active_users", data = { big = ("x"):rep(300600) } }
    assert_http_error(err, 413, "api.context.request_body_too_large.app_error")
  end)

  it("2.7#1-2 cases 18-19: a bad token is 401 session_expired", function()
    local _, err = clients.new(nil, { token = "garbage" }):create_job{ type = "active_users" }
    assert_http_error(err, 401, "api.context.session_expired.app_error")
    assert.equal("Invalid or expired session, please login again.", err.message)
  end)

  it("2.7#12 case 44: the plain-text 429 still gives a useful error, with Retry-After", function()
    stub.config{ rate_limit = { per_sec = 1, burst = 2 } }
    local err
    for _ = 1, 6 do
      -- a new client each time, whose pacer has not seen the limiter yet
      -- (a client that has paces itself to avoid the 429); no waiting for
      -- the limiter: the 429 itself
      local job
      job, err = clients.new("sysadmin", { max_rate_wait = 0 }):create_job{ type = "active_users" }
      if not job then break end
    end
    assert.equal("http", err.kind)
    assert.equal(429, err.status)
    assert.is_nil(err.id)
    assert.equal("limit exceeded", err.message)
    assert.equal("limit exceeded\n", err.body)
    assert.is_true(err.retry_after > 0)
    assert.equal("mm: HTTP 429: limit exceeded (POST /api/v4/jobs)", tostring(err))
  end)
end)

describe("get_job and wait_job (GET /api/v4/jobs/{id})", function()
  it("2.8 case 25: returns the job; successive reads move it on", function()
    local c = clients.new("sysadmin")
    local job = assert(c:create_job{ type = "active_users" })
    local seen = assert(c:get_job(job.id))
    assert.equal(job.id, seen.id)
    assert.equal("in_progress", seen.status)
    assert.is_true(seen.start_at > 0)
    seen = assert(c:get_job(job.id))
    assert.equal("success", seen.status)
    assert.equal(100, seen.progress)
  end)

  it("2.8 case 27: an unknown id is 404 app.job.get", function()
    local _, err = clients.new("sysadmin"):get_job(UNKNOWN)
    assert_http_error(err, 404, "app.job.get.app_error")
  end)

  it("2.8 case 28: basic cannot read an active_users job (403)", function()
    local job = assert(clients.new("sysadmin"):create_job{ type = "active_users" })
    local _, err = clients.new("basic"):get_job(job.id)
    assert_http_error(err, 403, "api.context.permissions.app_error")
  end)

  it("wait_job returns the job once it succeeds", function()
    local c = clients.new("sysadmin")
    local job = assert(c:create_job{ type = "active_users" })
    local done, err = c:wait_job(job.id, { timeout = 10, interval = 0.05 })
    assert.is_nil(err)
    assert.equal("success", done.status)
    assert.equal(job.id, done.id)
  end)

  it("wait_job returns nil, err with the job when it ends in error", function()
    stub.config{ job_outcome = "error" }
    local c = clients.new("sysadmin")
    local job = assert(c:create_job{ type = "active_users" })
    local done, err = c:wait_job(job.id, { timeout = 10, interval = 0.05 })
    assert.is_nil(done)
    assert.equal("job", err.kind)
    assert.equal("error", err.job.status)
    assert.equal(job.id, err.job.id)
    assert.is_string(err.job.data.error)
    assert.matches("ended in error", tostring(err))
  end)

  it("wait_job gives up after its timeout with kind 'wait_timeout'", function()
    stub.config{ job_outcome = "never" }
    local c = clients.new("sysadmin")
    local job = assert(c:create_job{ type = "active_users" })
    local t0 = os.time()
    local done, err = c:wait_job(job.id, { timeout = 0.3, interval = 0.1 })
    assert.is_nil(done)
    assert.equal("wait_timeout", err.kind)
    assert.equal("in_progress", err.job.status)
    assert.is_true(os.time() - t0 <= 2)
  end)

  it("wait_job returns the error of a failed poll", function()
    local _, err = clients.new("basic"):wait_job(UNKNOWN, { timeout = 1 })
    assert_http_error(err, 404, "app.job.get.app_error")
  end)
end)

describe("regen_token (PUT /api/v4/commands/{id}/regen_token)", function()
  it("3.4#10 case 30: sysadmin gets a new token each time", function()
    local c = clients.new("sysadmin")
    local t1 = assert(c:regen_token(cmd("C_admin")))
    local t2 = assert(c:regen_token(cmd("C_admin")))
    assert.matches(ALPHABET, t1)
    assert.equal(26, #t1)
    assert.are_not.equal(fx.commands.C_admin.token, t1)
    assert.are_not.equal(t1, t2)
  end)

  it("sends a PUT with no body and no Content-Type", function()
    assert(clients.new("sysadmin"):regen_token(cmd("C_admin")))
    local r = stub.requests()[1]
    assert.equal("PUT", r.method)
    assert.equal("/api/v4/commands/" .. cmd("C_admin") .. "/regen_token", r.uri)
    assert.equal("", r.body)
    assert.is_nil(stub.header(r, "Content-Type"))
    assert.equal("0", stub.header(r, "Content-Length"))
    assert.equal("Bearer " .. fx.users.sysadmin.token, stub.header(r, "Authorization"))
  end)

  it("3.4#4,6 cases 31, 36, 38, 39: hidden, foreign, unknown and deleted commands are 404", function()
    local cases = {
      { "basic", cmd("C_admin") }, { "outsider", cmd("C_admin") },
      { "sysadmin", UNKNOWN }, { "sysadmin", cmd("C_deleted") },
    }
    for _, case in ipairs(cases) do
      local token, err = clients.new(case[1]):regen_token(case[2])
      assert.is_nil(token)
      assert_http_error(err, 404, "store.sql_command.save.get.app_error")
      assert.equal("Unable to get the command.", err.message)
    end
  end)

  it("3.4#7 cases 32-35: manage_own and manage_others decide", function()
    stub.config{ grant = { role = "team_user", permissions = { "manage_own_slash_commands" } } }
    assert(clients.new("basic"):regen_token(cmd("C_basic")))
    local _, err = clients.new("basic"):regen_token(cmd("C_other"))
    assert_http_error(err, 403, "api.context.permissions.app_error")
    stub.config{ grant = { role = "team_user", permissions = { "manage_others_slash_commands" } } }
    assert(clients.new("basic"):regen_token(cmd("C_other")))
    assert(clients.new("tadmin"):regen_token(cmd("C_other")))
  end)

  it("3.4#5 case 40: commands disabled is 404", function()
    stub.config{ enable_commands = false }
    local _, err = clients.new("sysadmin"):regen_token(cmd("C_admin"))
    assert_http_error(err, 404, "store.sql_command.save.get.app_error")
  end)

  it("3.4#1 case 41: a bad token is 401", function()
    local _, err = clients.new(nil, { token = "garbage" }):regen_token(cmd("C_admin"))
    assert_http_error(err, 401, "api.context.session_expired.app_error")
  end)
end)

describe("argument checks raise and send nothing", function()
  it("regen_token, get_job and wait_job check the id", function()
    local c = clients.new("sysadmin")
    for _, case in ipairs(bad_values.IDS) do
      raises("bad argument #1 to 'regen_token' %(.-" .. case[2], c.regen_token, c, case[1])
      raises("bad argument #1 to 'get_job' %(.-" .. case[2], c.get_job, c, case[1])
      raises("bad argument #1 to 'wait_job' %(.-" .. case[2], c.wait_job, c, case[1])
    end
    assert.same({}, stub.requests())
  end)

  it("create_job checks the job table", function()
    local c = clients.new("sysadmin")
    local bad = {
      { nil, "table expected, got no value" }, { "active_users", "table expected, got string" },
      { {}, "field 'type' must be a non%-empty string" }, { { type = "" }, "non%-empty string" },
      { { type = 5 }, "non%-empty string" }, { { type = "a", dat = {} }, "unknown field 'dat'" },
      { { type = "a", data = "x" }, "field 'data' must be a table, got string" },
      { { type = "a", data = { [1] = "x" } }, "string keys, got a number key" },
      { { type = "a", data = { k = {} } }, "field 'data.k' must be a string, number or boolean, got table" },
      { { type = "a", data = { k = 0 / 0 } }, "field 'data.k' must be a finite number" },
      { { type = "a", data = { k = math.huge } }, "field 'data.k' must be a finite number" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #1 to 'create_job' %(.-" .. case[2], c.create_job, c, case[1])
    end
    assert.same({}, stub.requests())
  end)

  it("wait_job checks its options", function()
    local c = clients.new("sysadmin")
    local id = UNKNOWN
    raises("bad argument #2 to 'wait_job' %(unknown option 'timout'%)", c.wait_job, c, id, { timout = 1 })
    raises("option 'interval' must be a number", c.wait_job, c, id, { interval = "1" })
    raises("option 'interval' must be a number of seconds from 0.001", c.wait_job, c, id, { interval = 0 })
    raises("options table expected, got string", c.wait_job, c, id, "fast")
    assert.same({}, stub.requests())
  end)

  it("mm.new rejects unknown options, bad types, bad URLs and unsafe tokens", function()
    local ok = { url = stub.url, token = "abc" }
    local function with(k, v)
      local t = {}
      for key, val in pairs(ok) do t[key] = val end
      t[k] = v
      return t
    end
    local cases = {
      { with("tiemout", 1), "unknown option 'tiemout'" },
      { with("timeout", "1"), "option 'timeout' must be a number, got string" },
      { with("timeout", 0), "option 'timeout' must be a number of seconds above 0" },
      { with("retries", 1.5), "option 'retries' must be a whole number" },
      { with("max_body", 2 ^ 31), "option 'max_body' must be a whole number of bytes from 1 to 1000000000" },
      { with("token", nil), "option 'token' is required" },
      { with("url", nil), "option 'url' is required" },
      { with("url", "ftp://example.com"), "must start with http:// or https://" },
      { with("url", "http://user:pw@example.com"), "must not carry credentials" },
      { with("url", "http://example.com/?x=1"), "must not have a query" },
      { with("user_agent", "a\nb"), "option 'user_agent' must not contain control characters" },
      { "x", "options table expected, got string" },
    }
    for _, case in ipairs(cases) do
      raises("bad argument #1 to 'new' %(.-" .. case[2], mm.new, case[1])
    end
    for _, bad in ipairs{ "tok\r\nX-Evil: 1", "tok\n", "tok en", "tok\0", "" } do
      local ok2, msg = pcall(mm.new, with("token", bad))
      assert.is_false(ok2)
      assert.matches("option 'token'", msg)
      if #bad > 3 then assert.is_nil(msg:find(bad, 1, true)) end
    end
  end)

  it("a method called with a dot says to use a colon", function()
    local c = clients.new("sysadmin")
    raises("call create_job with a colon: client:create_job%(%.%.%.%)", c.create_job, { type = "x" })
    raises("call regen_token with a colon", c.regen_token, cmd("C_admin"))
    raises("call regen_token with a colon", c.regen_token, nil)
    -- a table dressed as a client is not one: nothing is sent
    local forged = setmetatable({ _root = c._root, _core = c._core }, getmetatable(c))
    raises("call regen_token with a colon", forged.regen_token, forged, cmd("C_admin"))
    raises("use c:close%(%), not c.close%(%)", forged.close, forged)
    assert.same({}, stub.requests())
  end)

  it("the error names the caller's line", function()
    local c = clients.new("sysadmin")
    local ok, msg = pcall(function()
      local token = c:regen_token("x") -- not a tail call: this line is blamed
      return token
    end)
    assert.is_false(ok)
    assert.matches("client_spec%.lua:%d+: bad argument #1 to 'regen_token'", msg)
  end)
end)

describe("error objects", function()
  it("carry the AppError fields and print one line with status, id and message", function()
    local _, err = clients.new("basic"):regen_token(cmd("C_admin"))
    assert.equal(404, err.status)
    assert.equal("store.sql_command.save.get.app_error", err.id)
    assert.equal("", err.detailed_error)
    assert.equal(1, err.attempts)
    assert.equal("PUT", err.method)
    local s = tostring(err)
    assert.equal(("mm: HTTP 404 store.sql_command.save.get.app_error: Unable to get the command. "
      .. "(PUT /api/v4/commands/%s/regen_token, request_id %s)"):format(cmd("C_admin"), err.request_id), s)
    assert.is_nil(s:find("\n"))
  end)

  it("never show the token, even when the server echoes it (developer mode)", function()
    stub.config{ developer = true }
    local secret = "zz9yzz9yzz9yzz9yzz9yzz9yzz"
    local _, err = clients.new(nil, { token = secret }):regen_token(cmd("C_admin"))
    assert.equal(401, err.status)
    assert.matches("%[redacted%]", err.detailed_error)
    for _, v in pairs(err) do
      assert.is_nil(tostring(v):find(secret, 1, true))
    end
    assert.is_nil(tostring(err):find(secret, 1, true))
  end)

  it("never show the token when it is passed by mistake as an id", function()
    local secret = "zz9yzz9yzz9yzz9yzz9yzz9yzz"
    local lines = {}
    local c = clients.new(nil, { token = secret, debug = function(l) lines[#lines + 1] = l end })
    for _, call in ipairs{ "regen_token", "get_job", "wait_job" } do
      local _, err = c[call](c, secret)
      assert.equal(401, err.status)
      assert.is_nil(tostring(err):find(secret, 1, true), call)
      assert.is_nil(err.path:find(secret, 1, true), call)
    end
    assert.is_nil(table.concat(lines, "\n"):find(secret, 1, true))
  end)

  it("a refused connection is kind 'connect' with curl's code", function()
    local c = clients.new("sysadmin", { url = "http://127.0.0.1:1" })
    local _, err = c:regen_token(cmd("C_admin"))
    assert.equal("connect", err.kind)
    assert.equal(7, err.curl_code)
    assert.is_nil(err.status)
    assert.matches("^mm: connect: ", tostring(err))
  end)
end)

describe("URL forms", function()
  it("accepts a trailing slash and a URL already ending in /api/v4", function()
    for _, url in ipairs{ stub.url .. "/", stub.url .. "//", stub.url .. "/api/v4", stub.url .. "/api/v4/" } do
      assert(clients.new("sysadmin", { url = url }):regen_token(cmd("C_admin")))
    end
    for _, r in ipairs(stub.requests()) do
      assert.equal("/api/v4/commands/" .. cmd("C_admin") .. "/regen_token", r.uri)
    end
  end)

  it("keeps a sub-path (https://example.com/mattermost)", function()
    -- The stub also serves the API under /mattermost, as a server whose
    -- SiteURL has that sub-path does.
    local c = clients.new("sysadmin", { url = stub.url .. "/mattermost" })
    assert(c:regen_token(cmd("C_admin")))
    assert.equal("/mattermost/api/v4/commands/" .. cmd("C_admin") .. "/regen_token", stub.requests()[1].uri)
  end)
end)

describe("clients", function()
  it("100 sequential calls on one client use one connection", function()
    local c = clients.new("sysadmin")
    for _ = 1, 100 do assert(c:regen_token(cmd("C_admin"))) end
    local conns = stub.connections()
    assert.equal(1, #conns)
    assert.equal(100, conns[1].requests)
  end)

  it("close is idempotent, tostring says closed, and use after close raises", function()
    local c = clients.new("sysadmin")
    assert.matches("^mm%.client %(http://127%.0%.0%.1:%d+/api/v4%)$", tostring(c))
    c:close()
    c:close()
    assert.equal("mm.client (closed)", tostring(c))
    local ok, msg = pcall(c.regen_token, c, cmd("C_admin"))
    assert.is_false(ok)
    assert.matches("closed client", msg)
  end)

  it("closes at the end of a <close> scope (Lua 5.4)", function()
    if _VERSION ~= "Lua 5.4" then return pending("<close> needs Lua 5.4") end
    local chunk = load([[
      local mm, opts = ...
      local c <close> = mm.new(opts)
      return c
    ]])
    local c = chunk(mm, { url = stub.url, token = "abc" })
    assert.equal("mm.client (closed)", tostring(c))
  end)
end)

describe("module-level functions and the default client", function()
  it("raise a clear error naming MM_URL when nothing is configured", function()
    -- The default client comes from MM_URL/MM_TOKEN, which busted does not set here.
    if os.getenv("MM_URL") then return pending("MM_URL is set in this environment") end
    local ok, msg = pcall(mm.regen_token, cmd("C_admin"))
    assert.is_false(ok)
    assert.matches("MM_URL", msg)
    assert.same({}, stub.requests())
  end)

  it("use mm.configure", function()
    mm.configure{ url = stub.url, token = fx.users.sysadmin.token, retries = 0 }
    local token = assert(mm.regen_token(cmd("C_admin")))
    assert.equal(26, #token)
    local job = assert(mm.create_job{ type = "active_users", data = { thing = "stuff" } })
    assert.equal("pending", job.status)
    assert(mm.wait_job(job.id, { timeout = 5, interval = 0.01 }))
    local bad, err = pcall(mm.configure, { url = stub.url })
    assert.is_false(bad)
    assert.matches("bad argument #1 to 'configure' %(option 'token' is required%)", err)
  end)
end)
