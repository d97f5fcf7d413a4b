-- bin/mm, run as a subprocess against the stub server, on the Lua that
-- runs this spec (make test-all runs it on each): bin/mm runs on all of
-- them. It finds the core make builds for that Lua in the checkout.
-- Run: bin/mm-stub run -- spec/run lua5.4 /usr/bin/busted spec/cli_spec.lua
local cjson = require "cjson"
local cli = require "support.mmcli"
local S = require "support.stubapi"

local sh, q, tmpfile, slurp, LUA = cli.sh, cli.q, cli.tmpfile, cli.slurp, cli.LUA

do
  -- without the settings of a calling make (make test LUA_VERSION=5.3)
  local code, out = sh(("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s all "
    .. "LUA_VERSION=%s LUA_NAME=%s LUA_INCDIR=%s 2>&1"):format(cli.VERSION, LUA.name, LUA.incdir))
  assert(code == 0, "building mm.core for " .. LUA.name .. " failed:\n" .. out)
end

local mm = require "mm" -- this Lua's build, for the version bin/mm must print

local URL = S.URL
local unpack = table.unpack or unpack -- luacheck: compat
local ZERO_ID = ("a"):rep(26) -- well-formed, never issued by the stub

local control = S.control

local fx = S.reset()

-- Every credential the stub knows: no run of bin/mm may print any of them.
cli.secrets = { "zz3kq8bogustokenbogus5yyyy" }
for _, u in pairs(fx.users) do
  for _, k in ipairs{ "token", "session_token", "csrf_token", "oauth_token" } do
    if u[k] then cli.secrets[#cli.secrets + 1] = u[k] end
  end
end
local SECRETS = cli.secrets

local function mm_run(args, env, script) return cli.run(args, env, { script = script }) end

-- As a fixture user: the URL from MM_URL, the token from MM_TOKEN.
local function as(user, args) return mm_run(args, { MM_URL = URL, MM_TOKEN = fx.users[user].token }) end

local function one_json(r)
  assert.are.equal(1, select(2, r.out:gsub("\n", "")), "expected one line of JSON: " .. r.out)
  return cjson.decode(r.out)
end

local function one_line(s)
  assert.is_truthy(s:match("^[^\n]+\n$"), "expected one line: " .. s)
  return s
end

local function command_token(name)
  return control("GET", "/__stub/fixtures").commands[name].token
end

local C = {}
for name, c in pairs(fx.commands) do C[name] = c.id end

before_each(S.reset)

teardown(cli.cleanup)

describe("mm help", function()
  it("documents the commands, options and exit codes in --help, -h and help", function()
    local main = mm_run{ "--help" }
    assert.are.equal(0, main.code)
    assert.are.equal("", main.err)
    for _, s in ipairs{ "Usage: mm", "create-job", "get-job", "regen-token", "--token-file", "--json",
                        "Exit codes", "  4  network" } do
      assert.is_truthy(main.out:find(s, 1, true), "--help lacks " .. s)
    end
    assert.are.same(main, mm_run{ "-h" })
    assert.are.same(main, mm_run{ "help" })
  end)

  it("has help for every command, as `help CMD` and `CMD --help`", function()
    for _, cmd in ipairs{ "create-job", "get-job", "regen-token" } do
      local r = mm_run{ "help", cmd }
      assert.are.equal(0, r.code)
      assert.is_truthy(r.out:find("Usage: mm " .. cmd, 1, true), r.out)
      assert.are.same(r, mm_run{ cmd, "--help" })
      -- help needs no server, and shows no token even when one is configured
      assert.are.same(r, as("sysadmin", { cmd, "--help" }))
    end
  end)

  it("prints the library's version", function()
    local r = mm_run{ "--version" }
    assert.are.equal(0, r.code)
    assert.are.equal("mm " .. mm._VERSION, r.out:match("^mm %S+"))
  end)

  it("finds the checkout's module through a symlink to bin/mm", function()
    local link = tmpfile()
    os.remove(link)
    local code = sh("ln -s \"$PWD/bin/mm\" " .. q(link))
    assert.are.equal(0, code)
    local r = mm_run({ "--version" }, {}, link)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("mm " .. mm._VERSION, r.out:match("^mm %S+"))
  end)
end)

describe("mm usage errors", function()
  local cases = {
    { {}, "no command" },
    { { "frobnicate" }, "unknown command 'frobnicate'" },
    { { "get-job" }, "one ID" },
    { { "get-job", ZERO_ID, ZERO_ID }, "one ID" },
    { { "get-job", "abc" }, "invalid ID 'abc'" },
    { { "get-job", ("A"):rep(26) }, "invalid ID" },
    { { "get-job", ZERO_ID, "--frob" }, "unknown option '--frob'" },
    { { "get-job", ZERO_ID, "-x" }, "unknown option '-x'" },
    { { "get-job", ZERO_ID, "--wait" }, "'--wait' does not apply to get-job" },
    { { "get-job", ZERO_ID, "--url" }, "'--url' needs a value" },
    { { "get-job", ZERO_ID, "--json=yes" }, "takes no value" },
    { { "create-job" }, "needs a job TYPE" },
    { { "create-job", "active_users", "novalue" }, "expected KEY=VALUE" },
    { { "create-job", "active_users", "=x" }, "expected KEY=VALUE" },
    { { "create-job", "active_users", "--timeout", "5" }, "go with --wait" },
    { { "create-job", "active_users", "--wait", "--timeout", "soon" }, "'--timeout' must be a number" },
    { { "create-job", "active_users", "--wait", "--timeout", "-1" }, "'--timeout' must be a number" },
    { { "create-job", "active_users", "--wait", "--timeout", "100000" }, "'--timeout' must be a number from" },
    { { "create-job", "active_users", "--wait", "--interval", "1e-9" }, "'--interval' must be a number from" },
    { { "regen-token", C.C_admin, C.C_other, C.C_admin }, "is given twice" },
    { { "regen-token" }, "at least one ID" },
    { { "regen-token", C.C_admin, "nope" }, "invalid ID 'nope'" },
    { { "regen-token", C.C_admin, "--concurrency", "0" }, "'--concurrency' must be a whole number" },
    { { "regen-token", C.C_admin, "--concurrency", "1.5" }, "'--concurrency' must be a whole number" },
    { { "regen-token", C.C_admin, C.C_other, "--concurrency", "100000" }, "concurrency" },
    { { "regen-token", C.C_admin, "--progress", "--no-progress" }, "contradict" },
    { { "help", "frobnicate" }, "no help for 'frobnicate'" },
  }
  for _, case in ipairs(cases) do
    it("exits 2 for mm " .. table.concat(case[1], " "), function()
      local r = as("sysadmin", case[1])
      assert.are.equal(2, r.code)
      assert.are.equal("", r.out)
      assert.is_truthy(r.err:find(case[2], 1, true), r.err)
    end)
  end

  it("sends nothing on a usage error", function()
    as("sysadmin", { "regen-token", C.C_admin, "bad" })
    as("sysadmin", { "create-job", "active_users", "--wait", "--timeout", "100000" })
    as("sysadmin", { "regen-token", C.C_admin, C.C_admin })
    assert.are.same({}, control("GET", "/__stub/requests"))
  end)
end)

describe("mm configuration errors", function()
  local args = { "get-job", ZERO_ID }

  it("exits 3 without a URL or a token", function()
    local r = mm_run(args, { MM_TOKEN = fx.users.sysadmin.token })
    assert.are.equal(3, r.code)
    assert.is_truthy(one_line(r.err):find("MM_URL", 1, true))
    r = mm_run(args, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(one_line(r.err):find("MM_TOKEN", 1, true))
    r = mm_run(args, { MM_URL = URL, MM_TOKEN = "" })
    assert.are.equal(3, r.code)
  end)

  it("exits 3 for a bad URL, naming where it came from", function()
    local r = mm_run({ "--url", "ftp://example.com", unpack(args) }, { MM_TOKEN = "x" })
    assert.are.equal(3, r.code)
    assert.are.equal("mm: --url must start with http:// or https://\n", r.err)
    r = mm_run(args, { MM_URL = "http://u:p@example.com", MM_TOKEN = "x" })
    assert.are.equal(3, r.code)
    assert.is_truthy(r.err:find("MM_URL must not carry credentials", 1, true), r.err)
  end)

  it("exits 3 for a missing, empty or malformed token file", function()
    local r = mm_run({ "--token-file", "/nonexistent/token", unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(one_line(r.err):find("/nonexistent/token", 1, true))
    r = mm_run({ "--token-file", tmpfile("\n"), unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(r.err:find("empty", 1, true))
    -- two tokens in the file: refused, and neither is shown
    local two = fx.users.basic.token .. " " .. fx.users.basic2.token
    r = mm_run({ "--token-file", tmpfile(two), unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(r.err:find("white space", 1, true), r.err)
    -- a directory: the read error, not "empty"
    r = mm_run({ "--token-file", "/tmp", unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(r.err:find("cannot read the token file", 1, true), r.err)
  end)

  it("takes a token file saved with a byte order mark and CRLF", function()
    local file = tmpfile("\239\187\191" .. fx.users.sysadmin.token .. "\r\n")
    local r = mm_run({ "--token-file", file, "regen-token", C.C_admin }, { MM_URL = URL })
    assert.are.equal(0, r.code, r.err)
  end)

  it("prefers --token-file to MM_TOKEN and --url to MM_URL", function()
    local file = tmpfile(fx.users.sysadmin.token .. "\n") -- a trailing newline is fine
    local env = { MM_URL = "http://127.0.0.1:1", MM_TOKEN = "wrongtokenwrongtokenwrongt" }
    local r = mm_run({ "--url", URL, "--token-file", file, "create-job", "active_users" }, env)
    assert.are.equal(0, r.code, r.err)
  end)
end)

describe("mm create-job", function()
  it("creates a job with data and prints it", function()
    local r = as("sysadmin", { "create-job", "active_users", "thing=stuff", "n=1=2" })
    assert.are.equal(0, r.code, r.err)
    local id = r.out:match("^id:%s+(%w+)\n")
    assert.is_truthy(id, r.out)
    assert.is_truthy(r.out:find("\ntype:%s+active_users\n"))
    assert.is_truthy(r.out:find("\nstatus:%s+pending\n"))
    assert.is_truthy(r.out:find("\ndata.n:%s+1=2\n"))
    local stored = control("GET", "/__stub/jobs/" .. id)
    assert.are.same({ thing = "stuff", n = "1=2" }, stored.data)
  end)

  it("prints the job as one JSON document with --json", function()
    local r = as("sysadmin", { "--json", "create-job", "active_users", "a=b" })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
    local job = one_json(r)
    assert.are.equal("active_users", job.type)
    assert.are.equal("pending", job.status)
    assert.are.same({ a = "b" }, job.data)
    assert.are.same(job, control("GET", "/__stub/jobs/" .. job.id))
  end)

  -- job_outcome -> exit code and final status of `create-job --wait`
  for outcome, want in pairs{ success = 0, warning = 0, error = 5, canceled = 5 } do
    it("--wait exits " .. want .. " when the job ends in " .. outcome, function()
      control("PUT", "/__stub/config", cjson.encode{ job_outcome = outcome, job_steps = 1 })
      local r = as("sysadmin", { "create-job", "active_users", "--wait", "--interval", "0.05", "--json" })
      assert.are.equal(want, r.code, r.err)
      local doc = one_json(r)
      local job = outcome == "error" and doc.error.job or doc
      assert.are.equal(outcome, job.status)
      if outcome == "error" then
        assert.are.equal("job", doc.error.kind)
        assert.is_truthy(one_line(r.err):find("ended in error", 1, true), r.err)
      end
    end)
  end

  it("--wait gives up after --timeout with exit 6", function()
    control("PUT", "/__stub/config", cjson.encode{ job_outcome = "never" })
    local r = as("sysadmin", { "create-job", "active_users", "--wait", "--timeout", "0.3", "--interval", "0.05" })
    assert.are.equal(6, r.code)
    assert.is_truthy(r.out:find("status:%s+in_progress"), r.out)
    assert.is_truthy(one_line(r.err):find("still in_progress after 0.3 s", 1, true), r.err)
  end)

  it("reports a 403 with Mattermost's error id and exits 1", function()
    local r = as("basic", { "create-job", "active_users" })
    assert.are.equal(1, r.code)
    assert.are.equal("", r.out)
    assert.is_truthy(one_line(r.err):find("^mm: HTTP 403 api%.context%.permissions%.app_error: "), r.err)
    r = as("basic", { "create-job", "active_users", "--json" })
    assert.are.equal(1, r.code)
    local e = one_json(r).error
    assert.are.equal("http", e.kind)
    assert.are.equal(403, e.status)
    assert.are.equal("api.context.permissions.app_error", e.id)
    assert.are.equal("POST", e.method)
  end)
end)

describe("mm get-job", function()
  it("shows a job, which the server advances on each read", function()
    local job = one_json(as("sysadmin", { "--json", "create-job", "active_users" }))
    local r = as("sysadmin", { "get-job", job.id })
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("^id:%s+" .. job.id .. "\n"), r.out)
    assert.is_truthy(r.out:find("\nstatus:%s+in_progress\n"), r.out)
    local again = one_json(as("sysadmin", { "get-job", job.id, "--json" }))
    assert.are.equal(job.id, again.id)
    assert.are.equal("success", again.status)
  end)

  it("reports a 404 with the error id, as a line and as JSON", function()
    local r = as("sysadmin", { "get-job", ZERO_ID })
    assert.are.equal(1, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: HTTP 404 app%.job%.get%.app_error: .*request_id %w+"), r.err)
    r = as("sysadmin", { "get-job", ZERO_ID, "--json" })
    local e = one_json(r).error
    assert.are.equal(404, e.status)
    assert.are.equal("app.job.get.app_error", e.id)
    assert.are.equal("/api/v4/jobs/" .. ZERO_ID, e.path)
    assert.is_string(e.request_id)
  end)

  it("exits 1 for an answer that is not JSON", function()
    local env = { MM_URL = URL .. "/__fault/bad_json", MM_TOKEN = fx.users.sysadmin.token }
    local r = mm_run({ "get-job", ZERO_ID }, env)
    assert.are.equal(1, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: decode"), r.err)
  end)

  it("exits 4 when the server cannot be reached or hangs up", function()
    local r = mm_run({ "get-job", ZERO_ID }, { MM_URL = "http://127.0.0.1:1", MM_TOKEN = "x" })
    assert.are.equal(4, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: connect"), r.err)
    r = mm_run({ "get-job", ZERO_ID, "--json" },
               { MM_URL = URL .. "/__fault/close_before", MM_TOKEN = fx.users.sysadmin.token })
    assert.are.equal(4, r.code)
    assert.are.equal("network", one_json(r).error.kind)
  end)

  it("never shows the token, even where the server echoes it or with --debug", function()
    -- an unknown token: in developer mode the 401 carries "token=<it>" in detailed_error
    control("PUT", "/__stub/config", cjson.encode{ developer = true })
    local bogus = SECRETS[1]
    -- and given as the job id too, so it is in the request path and the error's
    local r = mm_run({ "get-job", bogus, "--json", "--debug" }, { MM_URL = URL, MM_TOKEN = bogus })
    assert.are.equal(1, r.code)
    local e = one_json(r).error
    assert.are.equal(401, e.status)
    assert.are.equal("token=[redacted]", e.detailed_error)
    assert.are.equal("/api/v4/jobs/[redacted]", e.path)
    assert.is_truthy(r.err:find("Authorization: Bearer [redacted]", 1, true), r.err)
    assert.is_truthy(r.err:find("mm: HTTP 401 api.context.session_expired.app_error", 1, true), r.err)
  end)
end)

describe("mm regen-token", function()
  -- Team users may regenerate their own commands' tokens but not others':
  -- basic gets 200 for C_basic, 403 for C_other and 404 for C_deleted.
  local function grant_manage_own()
    control("PUT", "/__stub/config",
            cjson.encode{ grant = { role = "team_user", permissions = { "manage_own_slash_commands" } } })
  end

  it("prints the new token alone for one id, and the server has it", function()
    local r = as("sysadmin", { "regen-token", C.C_admin })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
    local token = r.out:match("^(%w+)\n$")
    assert.is_truthy(token, r.out)
    assert.are_not.equal(fx.commands.C_admin.token, token)
    assert.are.equal(command_token("C_admin"), token)
  end)

  it("regenerates several concurrently, printing ID TOKEN in input order", function()
    local ids = { C.C_other, C.C_admin, C.C_basic }
    local r = as("sysadmin", { "regen-token", "--concurrency", "2", unpack(ids) })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err) -- stderr is a file: no progress bar
    local seen, i = {}, 0
    for id, token in r.out:gmatch("(%w+) (%w+)\n") do
      i = i + 1
      assert.are.equal(ids[i], id)
      assert.is_nil(seen[token])
      seen[token] = true
    end
    assert.are.equal(3, i)
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      local live = command_token(name)
      assert.is_true(seen[live], name)
    end
  end)

  it("--json has the same shape for one id and for several", function()
    local one = one_json(as("sysadmin", { "regen-token", C.C_admin, "--json" }))
    assert.are.same({ failed = 0, results = { { id = C.C_admin, token = command_token("C_admin") } } }, one)
    local two = one_json(as("sysadmin", { "regen-token", C.C_admin, C.C_basic, "--json" }))
    assert.are.equal(0, two.failed)
    assert.are.equal(command_token("C_basic"), two.results[2].token)
  end)

  it("reports each failure, keeps the successes and exits nonzero", function()
    grant_manage_own()
    local r = as("basic", { "regen-token", C.C_basic, C.C_deleted, C.C_other })
    assert.are.equal(1, r.code)
    local token = r.out:match("^" .. C.C_basic .. " (%w+)\n$")
    assert.are.equal(command_token("C_basic"), token)
    local lines = {}
    for line in r.err:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(3, #lines, r.err)
    assert.is_truthy(lines[1]:find("^mm: " .. C.C_deleted .. ": HTTP 404 store%.sql_command%.save%.get%.app_error"))
    assert.is_truthy(lines[2]:find("^mm: " .. C.C_other .. ": HTTP 403 api%.context%.permissions%.app_error"))
    assert.are.equal("mm: 2 of 3 failed", lines[3])
    -- the other commands kept their tokens
    assert.are.equal(fx.commands.C_other.token, command_token("C_other"))

    local doc = one_json(as("basic", { "regen-token", C.C_basic, C.C_deleted, "--json" }))
    assert.are.equal(1, doc.failed)
    assert.are.equal(C.C_deleted, doc.results[2].id)
    assert.are.equal(404, doc.results[2].error.status)
    assert.is_nil(doc.results[2].token)
  end)

  it("exits 1 for a single failed id, with the plain error line", function()
    grant_manage_own()
    local r = as("basic", { "regen-token", C.C_other })
    assert.are.equal(1, r.code)
    assert.are.equal("", r.out)
    assert.is_truthy(one_line(r.err):find("^mm: HTTP 403 api%.context%.permissions%.app_error: "), r.err)
  end)

  it("exits 7 when the new token cannot be written out", function()
    local code = sh(("env -u MM_URL -u MM_TOKEN MM_URL=%s MM_TOKEN=%s %s bin/mm regen-token %s >/dev/full 2>%s")
      :format(q(URL), q(fx.users.sysadmin.token), LUA.name, C.C_admin, tmpfile()))
    assert.are.equal(7, code)
  end)

  it("takes the exit code of the first failed id", function()
    local r = mm_run({ "regen-token", C.C_admin, C.C_basic },
                     { MM_URL = URL .. "/__fault/close_before", MM_TOKEN = fx.users.sysadmin.token })
    assert.are.equal(4, r.code)
    assert.are.equal("", r.out)
  end)

  it("draws a progress bar on stderr only when asked or on a terminal", function()
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, C.C_other, "--progress" })
    assert.are.equal(0, r.code)
    assert.is_truthy(r.err:find("\r[" .. ("#"):rep(30) .. "] 3/3", 1, true), r.err)
    assert.are.equal(3, select(2, r.out:gsub("\n", "")))
    r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, "--no-progress" })
    assert.are.equal("", r.err)
  end)

  it("draws the progress bar by itself when stderr is a terminal", function()
    -- script(1) gives mm a terminal and copies what mm draws on it to out
    local out, tokens = tmpfile(), tmpfile()
    local cmd = ("env TERM=xterm MM_URL=%s MM_TOKEN=%s %s bin/mm regen-token %s %s >%s"):format(
      q(URL), q(fx.users.sysadmin.token), LUA.name, C.C_admin, C.C_basic, tokens)
    local code = sh("script -qec " .. q(cmd) .. " /dev/null >" .. out .. " </dev/null")
    assert.are.equal(0, code)
    assert.is_truthy(slurp(out):find("[" .. ("#"):rep(30) .. "] 2/2", 1, true), slurp(out))
    assert.are.equal(2, select(2, slurp(tokens):gsub("\n", "")))
  end)
end)

describe("mm output", function()
  it("keeps --json valid UTF-8 when the server's page is not", function()
    -- a proxy's Latin-1 error page ("Passerelle échouée"), for every attempt
    local page = "<html><head><title>Passerelle \233chou\233e</title></head></html>"
    local answer = { status = 502, type = "text/html; charset=iso-8859-1", body = page }
    local url, done = cli.fake{ answer, answer, answer }
    local r = mm_run({ "get-job", ZERO_ID, "--json" }, { MM_URL = url, MM_TOKEN = fx.users.sysadmin.token })
    done()
    assert.are.equal(1, r.code, r.err)
    assert.is_falsy(r.out:find("[\128-\255]"), r.out) -- the page had no other non-ASCII
    local e = one_json(r).error
    assert.are.equal(502, e.status)
    assert.are.equal("Passerelle ?chou?e", e.message)
  end)
end)

describe("mm without its module", function()
  it("exits 3 with Lua's whole error, the interpreter and the paths searched", function()
    local script = tmpfile(slurp("bin/mm")) -- a copy outside the checkout
    local r = mm_run({ "--version" }, { LUA_PATH = "/nonexistent/?.lua", LUA_CPATH = "/nonexistent/?.so",
                                        LUA_PATH_5_2 = false, LUA_PATH_5_3 = false, LUA_PATH_5_4 = false,
                                        LUA_CPATH_5_2 = false, LUA_CPATH_5_3 = false, LUA_CPATH_5_4 = false,
                                        LUA_INIT = false }, script)
    assert.are.equal(3, r.code)
    assert.are.equal("", r.out)
    local version = rawget(_G, "jit") and jit.version or _VERSION
    assert.is_truthy(r.err:find("^mm: cannot load the mm Lua module %(" .. version:gsub("%p", "%%%0")
                                .. ", " .. LUA.name .. "%):\n"), r.err)
    assert.is_truthy(r.err:find("module 'mm' not found", 1, true), r.err)
    assert.is_truthy(r.err:find("no file '/nonexistent/mm.lua'", 1, true), r.err)
    assert.is_truthy(r.err:find("no file '/nonexistent/mm.so'", 1, true), r.err)
  end)
end)
