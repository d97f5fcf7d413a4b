-- bin/mm, run as a subprocess against the stub server, on the Lua that
-- runs this spec (make test-all runs it on each): bin/mm runs on all of
-- them. It finds the core make builds for that Lua in the checkout.
-- Run: bin/mm-stub run -- spec/run lua5.4 /usr/bin/busted spec/cli_spec.lua
--
-- The `mm commands` specs other than regen-token need the stub's commands
-- routes (branch stub-commands); without them they are reported pending.
local cjson = require "cjson"
local socket = require "socket"
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

local fx = S.reset()

-- Every credential the stub knows: no run of bin/mm may print any of them.
cli.secrets = { "zz3kq8bogustokenbogus5yyyy" }
for _, u in pairs(fx.users) do
  for _, k in ipairs{ "token", "session_token", "csrf_token", "oauth_token" } do
    if u[k] then cli.secrets[#cli.secrets + 1] = u[k] end
  end
end

local C = {}
for name, c in pairs(fx.commands) do C[name] = c.id end
local TEAM = fx.teams.T.id

-- Whether the stub has the commands routes beyond regen_token.
local HAS_COMMANDS = S.call("GET", "/api/v4/commands?team_id=" .. TEAM, { as = "sysadmin" }).status == 200
local it_commands = HAS_COMMANDS and it or pending

-- As a fixture user: the URL from MM_URL (or `url`), the token from MM_TOKEN.
local function as(user, args, opts)
  opts = opts or {}
  return cli.run(args, { MM_URL = opts.url or URL, MM_TOKEN = fx.users[user].token }, opts)
end

local function spawn_as(user, args, url)
  return cli.spawn(args, { MM_URL = url or URL, MM_TOKEN = fx.users[user].token })
end

local function lines(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

local function one_json(r)
  assert.are.equal(1, #lines(r.out), "expected one line of JSON: " .. r.out)
  return cjson.decode(r.out)
end

local function one_line(s)
  assert.is_truthy(s:match("^[^\n]+\n$"), "expected one line: " .. s)
  return s
end

local function has(s, text) return s:find(text, 1, true) ~= nil end

local function command_token(name)
  return S.control("GET", "/__stub/fixtures").commands[name].token
end

local function store_job(job)
  return S.control("POST", "/__stub/jobs", cjson.encode(job)).job
end

-- Waits until the stub has received n API requests (it records each as it arrives).
local function await_requests(n)
  local deadline = socket.gettime() + 10
  while #S.control("GET", "/__stub/requests") < n do
    assert(socket.gettime() < deadline, "the stub did not get " .. n .. " requests")
    socket.sleep(0.02)
  end
end

before_each(S.reset)

teardown(cli.cleanup)

describe("mm help", function()
  it("documents the commands, options and exit codes in --help, -h, help and mm alone", function()
    local main = cli.run{ "--help" }
    assert.are.equal(0, main.code)
    assert.are.equal("", main.err)
    for _, s in ipairs{ "Usage: mm", "create-job", "get-job", "regen-token", "--token-file", "--json",
                        "--timeout", "--connect-timeout", "--retries", "--cacert", "--capath", "--insecure",
                        "Exit codes", "  4  network", "  7  the output", "130, 143", "api METHOD PATH" } do
      assert.is_truthy(has(main.out, s), "--help lacks " .. s)
    end
    for _, row in ipairs(mm.endpoints) do
      assert.is_truthy(has(main.out, "  " .. row.cli .. " "), "--help lacks " .. row.cli)
    end
    assert.are.same(main, cli.run{ "-h" })
    assert.are.same(main, cli.run{ "help" })
    assert.are.same(main, cli.run{})
  end)

  it("has help for every command, as `help CMD` and `CMD --help`, naming each option", function()
    local cmds = { "create-job", "get-job", "regen-token", "api", "commands rotate" }
    for _, row in ipairs(mm.endpoints) do cmds[#cmds + 1] = row.cli end
    for _, cmd in ipairs(cmds) do
      local words = {}
      for w in cmd:gmatch("%S+") do words[#words + 1] = w end
      local r = cli.run{ "help", unpack(words) }
      assert.are.equal(0, r.code, cmd)
      assert.is_truthy(has(r.out, "Usage: mm " .. cmd), r.out)
      words[#words + 1] = "--help"
      assert.are.same(r, cli.run(words))
      -- help needs no server, and shows no token even when one is configured
      assert.are.same(r, as("sysadmin", words))
    end
    -- every query and body field of a row is an option in its help
    local help = cli.run{ "help", "jobs", "list" }.out
    for _, o in ipairs{ "--page N", "--per-page N", "--type TYPE", "--status STATUS" } do
      assert.is_truthy(has(help, o), help)
    end
    help = cli.run{ "help", "commands", "create" }.out
    for _, o in ipairs{ "--team ID", "--trigger WORD", "--method P|G", "--request-url URL", "--auto-complete",
                        "--display-name TEXT" } do
      assert.is_truthy(has(help, o), help)
    end
    assert.is_falsy(has(help, "--token"), "a server-set field offered as an option")
  end)

  it("documents help itself, which the help lists", function()
    local r = cli.run{ "help", "help" }
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
    assert.is_truthy(r.out:find("^Usage: mm help %[COMMAND%]\n"), r.out)
    assert.are.same(r, cli.run{ "help", "--help" })
    assert.is_truthy(has(cli.run{ "--help" }.out, "\n  help [COMMAND]  "), "the help no longer lists help")
  end)

  it("lists a group's commands for `help jobs` and `mm commands`", function()
    local r = cli.run{ "help", "jobs" }
    assert.are.equal(0, r.code)
    assert.is_truthy(has(r.out, "mm jobs download JOB_ID FILE"), r.out)
    r = cli.run{ "commands" }
    assert.are.equal(0, r.code)
    assert.is_truthy(has(r.out, "mm commands rotate --team TEAM_ID"), r.out)
  end)

  it("has the README say exactly which verbs take several IDs and which one", function()
    local readme = slurp("README.md")
    local section = assert(readme:match("\n## The `mm` command\n(.-)\n## "), "no mm section in the README")
    section = section:gsub("%s+", " "):gsub("%b()", "")
    local function quoted(s)
      local t = {}
      for w in s:gmatch("`([^`]+)`") do t[#t + 1] = w end
      table.sort(t)
      return t
    end
    local several = quoted(assert(section:match("%. ([^.]-) take one or more IDs"),
                                  "the README lists no verbs that 'take one or more IDs'"))
    local one = quoted(assert(section:match("take exactly one, in the words of their usage: ([^.]-)%."),
                              "the README lists no verbs that 'take exactly one'"))
    local want_several, want_one = {}, {}
    for _, row in ipairs(mm.endpoints) do
      local words = {}
      for w in row.cli:gmatch("%S+") do words[#words + 1] = w end
      local usage = cli.run{ "help", unpack(words) }.out:match("^Usage: mm " .. row.cli:gsub("%-", "%%-") .. "([^\n]*)")
      local positional, id = {}, false
      for w in usage:gmatch("%S+") do
        if not w:find("^%u[%u_]*$") then break end
        positional[#positional + 1] = w
        id = id or w:find("_ID$") ~= nil
      end
      if usage:find("(%u[%u_]*) %[%1 %.%.%.%]") then
        want_several[#want_several + 1] = row.cli
      elseif id then
        want_one[#want_one + 1] = row.cli .. " " .. table.concat(positional, " ")
      end
    end
    table.sort(want_several)
    table.sort(want_one)
    assert.are.same(want_several, several)
    assert.are.same(want_one, one)
    -- regen-token with one ID prints the token alone, as its help says
    assert.is_truthy(has(section, "`regen-token` the new token"), "the README's regen-token for one ID")
    assert.is_truthy(has(cli.run{ "help", "regen-token" }.out, "Prints the new token alone for one ID"))
  end)

  it("prints the library's version", function()
    local r = cli.run{ "--version" }
    assert.are.equal(0, r.code)
    assert.are.equal("mm " .. mm._VERSION, r.out:match("^mm %S+"))
  end)

  it("finds the checkout's module through a symlink to bin/mm", function()
    local link = tmpfile()
    os.remove(link)
    local code = sh("ln -s \"$PWD/bin/mm\" " .. q(link))
    assert.are.equal(0, code)
    local r = cli.run({ "--version" }, {}, { script = link })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("mm " .. mm._VERSION, r.out:match("^mm %S+"))
  end)
end)

describe("mm usage errors", function()
  local cases = {
    { { "frobnicate" }, "unknown command 'frobnicate'" },
    { { "jobs", "frobnicate" }, "unknown command 'jobs frobnicate'" },
    { { "get-job" }, "needs JOB_ID" },
    { { "get-job", ZERO_ID, ZERO_ID }, "is given twice" },
    { { "get-job", "abc" }, "invalid ID 'abc'" },
    { { "get-job", ("A"):rep(26) }, "invalid ID" },
    { { "get-job", ZERO_ID, "--frob" }, "unknown option '--frob'" },
    { { "get-job", ZERO_ID, "-x" }, "unknown option '-x'" },
    { { "get-job", ZERO_ID, "--all" }, "'--all' does not apply to get-job" },
    { { "get-job", ZERO_ID, ("b"):rep(26), "--wait" }, "--wait takes one ID" },
    { { "get-job", ZERO_ID, "--url" }, "'--url' needs a value" },
    { { "get-job", ZERO_ID, "--json=yes" }, "takes no value" },
    { { "get-job", ZERO_ID, "--json", "--json" }, "given twice" },
    { { "create-job" }, "needs a job TYPE" },
    { { "create-job", "active_users", "novalue" }, "expected KEY=VALUE" },
    { { "create-job", "active_users", "=x" }, "expected KEY=VALUE" },
    { { "create-job", "active_users", "--interval", "5" }, "--interval goes with --wait" },
    { { "create-job", "active_users", "--wait", "--timeout", "soon" }, "'--timeout' must be a number" },
    { { "create-job", "active_users", "--wait", "--timeout", "-1" }, "'--timeout' must be a number" },
    { { "create-job", "active_users", "--wait", "--timeout", "100000" }, "'--timeout' must be a number from" },
    { { "create-job", "active_users", "--wait", "--interval", "1e-9" }, "'--interval' must be a number from" },
    { { "create-job", "active_users", "--timeout", "soon" }, "--timeout must be a number, got 'soon'" },
    { { "create-job", "active_users", "--timeout", "0" }, "--timeout must be a number of seconds above 0" },
    { { "create-job", "active_users", "--retries", "11" }, "--retries must be a whole number from 0 to 10" },
    { { "regen-token", C.C_admin, C.C_other, C.C_admin }, "is given twice" },
    { { "regen-token" }, "needs COMMAND_ID" },
    { { "regen-token", C.C_admin, "nope" }, "invalid ID 'nope'" },
    { { "regen-token", C.C_admin, "--concurrency", "0" }, "'--concurrency' must be a whole number" },
    { { "regen-token", C.C_admin, "--concurrency", "1.5" }, "'--concurrency' must be a whole number" },
    { { "regen-token", C.C_admin, C.C_other, "--concurrency", "100000" }, "concurrency" },
    { { "regen-token", C.C_admin, "--progress", "--no-progress" }, "contradict" },
    { { "help", "frobnicate" }, "no help for 'frobnicate'" },
    { { "jobs", "list", "--page", "-1" }, "option '--page': page must be a whole number" },
    { { "jobs", "list", "--per-page", "201" }, "option '--per-page': per_page must be a whole number from 0 to 200" },
    { { "jobs", "list", "--per-page", "many" }, "option '--per-page' must be a number" },
    { { "jobs", "list", "--status", "done" }, "option '--status': job status must be one of" },
    { { "jobs", "list", "--type", "a b" }, "option '--type': job type must be letters" },
    { { "jobs", "list", "extra" }, "jobs list takes no words" },
    { { "jobs", "status", ZERO_ID }, "jobs status takes JOB_ID STATUS" },
    { { "jobs", "status", ZERO_ID, "done" }, "invalid STATUS 'done'" },
    { { "jobs", "status", ZERO_ID, "pending", "--force=maybe" }, "=true or =false" },
    { { "jobs", "download", ZERO_ID }, "jobs download takes JOB_ID FILE" },
    { { "jobs", "download", ZERO_ID, "-" }, "FILE cannot be '-': a download is written whole to a named file" },
    { { "commands", "list" }, "commands list needs --team ID" },
    { { "commands", "list", "--team", "T" }, "option '--team': id must be 26 characters" },
    { { "commands", "create", "--team", TEAM, "--trigger", "/x", "--method", "P", "--request-url", "http://h" },
      "option '--trigger': trigger must not start with '/'" },
    { { "commands", "create", "--team", TEAM, "--trigger", "x", "--method", "POST", "--request-url", "http://h" },
      "option '--method': method must be" },
    { { "commands", "create", "--team", TEAM, "--trigger", "x", "--method", "P" }, "needs --request-url URL" },
    { { "commands", "update", C.C_admin }, "needs at least one field to change" },
    { { "commands", "update", C.C_admin, "--team", TEAM }, "'--team' does not apply to commands update" },
    { { "commands", "execute", "--channel", ZERO_ID, "--command", "echo hi" }, "command must start with '/'" },
    { { "commands", "rotate", "--all" }, "needs --team TEAM_ID" },
    { { "commands", "rotate", "--team", TEAM }, "needs --all or the IDs" },
    { { "commands", "rotate", "--team", TEAM, "--all", C.C_admin }, "--all or IDs, not both" },
    { { "api", "GET" }, "api takes METHOD and PATH" },
    { { "api", "FETCH", "/jobs" }, "METHOD: method must be one of" },
    { { "api", "GET", "/jobs?page=1" }, "PATH: path must not contain '?' or '#' (use --query)" },
    { { "api", "GET", "/jobs", "--query", "page" }, "--query expects KEY=VALUE" },
    { { "api", "POST", "/jobs", "--data", "{nope" }, "--data is not JSON" },
    { { "api", "GET", "/jobs", "--data", "{}" }, "a GET request has no body" },
    { { "api", "POST", "/jobs", "--data", "@/nonexistent/body.json" },
      "mm: cannot read --data /nonexistent/body.json: No such file or directory\n" },
    { { "api", "POST", "/jobs", "--data", "@/tmp" }, "mm: cannot read --data /tmp: Is a directory\n" },
  }
  for _, case in ipairs(cases) do
    it("exits 2 for mm " .. table.concat(case[1], " "), function()
      local r = as("sysadmin", case[1])
      assert.are.equal(2, r.code, r.err)
      assert.are.equal("", r.out)
      assert.is_truthy(has(r.err, case[2]), r.err)
      assert.is_truthy(has(r.err, "Try 'mm --help'"), r.err)
    end)
  end

  it("sends nothing on a usage error", function()
    for _, case in ipairs(cases) do as("sysadmin", case[1]) end
    assert.are.same({}, S.control("GET", "/__stub/requests"))
  end)

  it("escapes control characters of the command line it quotes back", function()
    local r = as("sysadmin", { "get-job", "\27[2J\rmine" })
    assert.are.equal(2, r.code)
    assert.is_falsy(r.err:find("[\27\r]"), r.err)
    assert.is_truthy(has(r.err, "invalid ID '\\x1b[2J\\x0dmine'"), r.err)
  end)
end)

describe("mm configuration errors", function()
  local args = { "get-job", ZERO_ID }

  it("exits 3 without a URL or a token", function()
    local r = cli.run(args, { MM_TOKEN = fx.users.sysadmin.token })
    assert.are.equal(3, r.code)
    assert.is_truthy(has(one_line(r.err), "MM_URL"))
    r = cli.run(args, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(has(one_line(r.err), "MM_TOKEN"))
    r = cli.run(args, { MM_URL = URL, MM_TOKEN = "" })
    assert.are.equal(3, r.code)
  end)

  it("exits 3 for a bad URL, naming where it came from", function()
    local r = cli.run({ "--url", "ftp://example.com", unpack(args) }, { MM_TOKEN = "x" })
    assert.are.equal(3, r.code)
    assert.are.equal("mm: --url must start with http:// or https://\n", r.err)
    r = cli.run(args, { MM_URL = "http://u:p@example.com", MM_TOKEN = "x" })
    assert.are.equal(3, r.code)
    assert.is_truthy(has(r.err, "MM_URL must not carry credentials"), r.err)
  end)

  it("exits 3 for a bad MM_TIMEOUT, MM_CONNECT_TIMEOUT or MM_RETRIES, naming it", function()
    for var, value in pairs{ MM_TIMEOUT = "soon", MM_CONNECT_TIMEOUT = "-1", MM_RETRIES = "2.5" } do
      local r = cli.run(args, { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token, [var] = value })
      assert.are.equal(3, r.code, var)
      assert.is_truthy(r.err:find("^mm: " .. var .. " must be"), r.err)
    end
  end)

  it("exits 3 for a missing, empty or malformed token file", function()
    local r = cli.run({ "--token-file", "/nonexistent/token", unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.are.equal("mm: cannot read the token file /nonexistent/token: No such file or directory\n", r.err)
    r = cli.run({ "--token-file", tmpfile("\n"), unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(has(r.err, "empty"))
    -- two tokens in the file: refused, and neither is shown
    local two = fx.users.basic.token .. " " .. fx.users.basic2.token
    r = cli.run({ "--token-file", tmpfile(two), unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.is_truthy(has(r.err, "white space"), r.err)
    -- a directory: the read error, not "empty"
    r = cli.run({ "--token-file", "/tmp", unpack(args) }, { MM_URL = URL })
    assert.are.equal(3, r.code)
    assert.are.equal("mm: cannot read the token file /tmp: Is a directory\n", r.err)
  end)

  it("exits 3 for a --cacert that is no readable file or a --capath that is no directory, sending nothing", function()
    local file = tmpfile("not a certificate")
    local cases = {
      { { "--cacert", "/nonexistent/ca.pem" }, {}, "--cacert /nonexistent/ca.pem: No such file or directory" },
      { { "--cacert", "/tmp" }, {}, "--cacert /tmp: Is a directory" },
      { { "--capath", "/nonexistent/certs" }, {}, "--capath /nonexistent/certs: No such file or directory" },
      { { "--capath", file }, {}, "--capath " .. file .. ": Not a directory" },
      { {}, { MM_CACERT = "/nonexistent/ca.pem" }, "MM_CACERT=/nonexistent/ca.pem: No such file or directory" },
      { {}, { MM_CAPATH = file }, "MM_CAPATH=" .. file .. ": Not a directory" },
    }
    for _, case in ipairs(cases) do
      local env = { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token }
      for k, v in pairs(case[2]) do env[k] = v end
      local r = cli.run({ "get-job", ZERO_ID, unpack(case[1]) }, env)
      assert.are.equal(3, r.code, r.err)
      assert.are.equal("mm: " .. case[3] .. "\n", r.err)
    end
    assert.are.same({}, S.control("GET", "/__stub/requests"))
  end)

  it("takes a token file saved with a byte order mark and CRLF", function()
    local file = tmpfile("\239\187\191" .. fx.users.sysadmin.token .. "\r\n")
    local r = cli.run({ "--token-file", file, "regen-token", C.C_admin }, { MM_URL = URL })
    assert.are.equal(0, r.code, r.err)
  end)

  it("prefers --token-file to MM_TOKEN and --url to MM_URL", function()
    local file = tmpfile(fx.users.sysadmin.token .. "\n") -- a trailing newline is fine
    local env = { MM_URL = "http://127.0.0.1:1", MM_TOKEN = "wrongtokenwrongtokenwrongt" }
    local r = cli.run({ "--url", URL, "--token-file", file, "create-job", "active_users" }, env)
    assert.are.equal(0, r.code, r.err)
  end)
end)

describe("mm TLS options", function()
  local tls, ca = os.getenv("MM_STUB_TLS_URL"), os.getenv("MM_STUB_CAFILE")
  local env = function(extra)
    local e = { MM_URL = tls, MM_TOKEN = fx.users.sysadmin.token }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  it("refuses the stub's self-signed certificate, trusts it with --cacert or MM_CACERT", function()
    if not tls then return pending("the stub runs without TLS") end
    local r = cli.run({ "get-job", fx.jobs.J1.id }, env())
    assert.are.equal(4, r.code)
    assert.is_truthy(r.err:find("^mm: tls"), r.err)
    r = cli.run({ "get-job", fx.jobs.J1.id, "--cacert", ca }, env())
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
    r = cli.run({ "get-job", fx.jobs.J1.id }, env{ MM_CACERT = ca })
    assert.are.equal(0, r.code, r.err)
  end)

  it("trusts a --capath directory holding the certificate by its hash", function()
    if not tls then return pending("the stub runs without TLS") end
    local dir = tmpfile()
    os.remove(dir)
    assert.are.equal(0, sh("mkdir " .. q(dir) .. " && cp " .. q(ca) .. " " .. q(dir .. "/stub.pem")
                           .. " && openssl rehash " .. q(dir)))
    local r = cli.run({ "get-job", fx.jobs.J1.id, "--capath", dir }, env())
    sh("rm -r " .. q(dir))
    assert.are.equal(0, r.code, r.err)
  end)

  it("exits 3 when libcurl cannot use the --cacert file (curl code 77)", function()
    if not tls then return pending("the stub runs without TLS") end
    -- readable, so the CLI's own check passes: libcurl finds no certificate in it
    local r = cli.run({ "get-job", fx.jobs.J1.id, "--cacert", tmpfile("not a certificate\n"), "--json" }, env())
    assert.are.equal(3, r.code, r.err)
    local e = one_json(r).error
    assert.are.equal("tls", e.kind)
    assert.are.equal(77, e.curl_code)
  end)

  it("--insecure works and says so loudly on stderr", function()
    if not tls then return pending("the stub runs without TLS") end
    local r = cli.run({ "get-job", fx.jobs.J1.id, "--insecure", "--json" }, env())
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(fx.jobs.J1.id, one_json(r).id)
    assert.is_truthy(r.err:find("^mm: WARNING: %-%-insecure: the server's TLS certificate is not checked"), r.err)
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
    assert.are.same({ thing = "stuff", n = "1=2" }, S.control("GET", "/__stub/jobs/" .. id).data)
  end)

  it("prints the job as one JSON document with --json; jobs create is the same", function()
    for _, cmd in ipairs{ { "--json", "create-job" }, { "--json", "jobs", "create" } } do
      cmd[#cmd + 1] = "active_users"
      cmd[#cmd + 1] = "a=b"
      local r = as("sysadmin", cmd)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("", r.err)
      local job = one_json(r)
      assert.are.equal("active_users", job.type)
      assert.are.equal("pending", job.status)
      assert.are.same({ a = "b" }, job.data)
      assert.are.same(job, S.control("GET", "/__stub/jobs/" .. job.id))
    end
  end)

  -- job_outcome -> exit code and final status of `create-job --wait`
  for outcome, want in pairs{ success = 0, warning = 0, error = 5, canceled = 5 } do
    it("--wait exits " .. want .. " when the job ends in " .. outcome, function()
      S.config{ job_outcome = outcome, job_steps = 1 }
      local r = as("sysadmin", { "create-job", "active_users", "--wait", "--interval", "0.05", "--json" })
      assert.are.equal(want, r.code, r.err)
      local doc = one_json(r)
      local job = outcome == "error" and doc.error.job or doc
      assert.are.equal(outcome, job.status)
      if outcome == "error" then
        assert.are.equal("job", doc.error.kind)
        assert.is_truthy(has(one_line(r.err), "ended in error"), r.err)
      end
    end)
  end

  it("--wait gives up after --timeout with exit 6", function()
    S.config{ job_outcome = "never" }
    local r = as("sysadmin", { "create-job", "active_users", "--wait", "--timeout", "0.3", "--interval", "0.05" })
    assert.are.equal(6, r.code)
    assert.is_truthy(r.out:find("status:%s+in_progress"), r.out)
    assert.is_truthy(has(one_line(r.err), "still in_progress after 0.3 s"), r.err)
  end)

  it("--wait --timeout bounds a poll the server never answers", function()
    local job = store_job{ type = "active_users", status = "pending" } -- it never moves
    local t0 = socket.gettime()
    local r = as("sysadmin", { "jobs", "get", job.id, "--wait", "--timeout", "1" },
                 { url = URL .. "/__fault/slow_headers:5" })
    assert.are.equal(6, r.code, r.err)
    assert.is_true(socket.gettime() - t0 < 4, "a poll outlived --timeout")
    assert.is_truthy(has(r.err, "after 1 s"), r.err)
  end)

  it("--wait shows the job's status as it changes, on a terminal or with --progress", function()
    S.config{ job_outcome = "success", job_steps = 2 }
    local r = as("sysadmin", { "create-job", "active_users", "--wait", "--interval", "0.05", "--progress" })
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.err:find("\rjob %w+: in_progress %d+%% %(%d+s%)\27%[K"), r.err)
    assert.is_truthy(r.err:find("\r\27%[K$"), "the status line is cleared at the end")
    r = as("sysadmin", { "create-job", "active_users", "--wait", "--interval", "0.05" })
    assert.are.equal("", r.err) -- stderr is a file
  end)

  it("reports a job id the server should never have sent, never a traceback", function()
    for _, json in ipairs{ true, false } do
      local url, done = cli.fake{ { status = 201,
        body = '{"id":"../../x","type":"active_users","status":"pending","create_at":1}' } }
      local r = as("sysadmin", { "create-job", "active_users", "--wait", json and "--json" or nil }, { url = url })
      done()
      assert.are.equal(1, r.code, r.err)
      assert.is_truthy(has(one_line(r.err), "the server's job has an invalid id"), r.err)
      if json then
        local e = one_json(r).error
        assert.are.equal("decode", e.kind)
        assert.are.equal("../../x", e.job.id)
      end
    end
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

  it("shows times in one format, as lists do: UTC in ISO 8601", function()
    local id = S.fx.jobs.J3.id
    local r = as("sysadmin", { "get-job", id })
    assert.are.equal(0, r.code, r.err)
    local created = r.out:match("\ncreated:%s+(%S+)\n")
    assert.is_truthy(created and created:find("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"), r.out)
    local listed = as("sysadmin", { "jobs", "get", id, S.fx.jobs.J1.id })
    assert.are.equal(0, listed.code, listed.err)
    assert.are.equal(created, listed.out:match(id .. " %S+ %S+ %S+ (%S+)\n"), listed.out)
    assert.is_truthy(has(cli.run{ "--help" }.out, "Times are UTC, as 2025-01-31T14:05:09Z"), "undocumented")
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
    local r = as("sysadmin", { "get-job", ZERO_ID }, { url = URL .. "/__fault/bad_json" })
    assert.are.equal(1, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: decode"), r.err)
  end)

  it("exits 4 when the server cannot be reached or hangs up", function()
    local r = cli.run({ "get-job", ZERO_ID }, { MM_URL = "http://127.0.0.1:1", MM_TOKEN = "x" })
    assert.are.equal(4, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: connect"), r.err)
    r = as("sysadmin", { "get-job", ZERO_ID, "--json" }, { url = URL .. "/__fault/close_before" })
    assert.are.equal(4, r.code)
    assert.are.equal("network", one_json(r).error.kind)
  end)

  it("--debug logs the request as it goes out and times its answer, as the library does", function()
    local id = S.fx.jobs.J3.id
    local p = spawn_as("sysadmin", { "get-job", id, "--debug" }, URL .. "/__fault/slow_headers:1")
    await_requests(1)
    socket.sleep(0.2)
    local so_far = p.err() -- the answer is 1 s late
    local r = p.wait()
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(so_far:find("^mm: > GET [^\n]*/api/v4/jobs/" .. id .. "\n"), so_far)
    assert.is_falsy(has(so_far, "< HTTP"), so_far)
    local ms = tonumber(r.err:match("\nmm: < HTTP 200 %(([%d.]+) ms%)\n"))
    assert.is_truthy(ms and ms >= 900, r.err)
  end)

  it("never shows the token, even where the server echoes it or with --debug", function()
    -- an unknown token: in developer mode the 401 carries "token=<it>" in detailed_error
    S.config{ developer = true }
    local bogus = cli.secrets[1]
    -- and given as the job id too, so it is in the request path and the error's
    local r = cli.run({ "get-job", bogus, "--json", "--debug" }, { MM_URL = URL, MM_TOKEN = bogus })
    assert.are.equal(1, r.code)
    local e = one_json(r).error
    assert.are.equal(401, e.status)
    assert.are.equal("token=[redacted]", e.detailed_error)
    assert.are.equal("/api/v4/jobs/[redacted]", e.path)
    assert.is_truthy(has(r.err, "Authorization: Bearer [redacted]"), r.err)
    assert.is_truthy(has(r.err, "mm: HTTP 401 api.context.session_expired.app_error"), r.err)
  end)
end)

describe("mm jobs", function()
  local J = {}
  before_each(function()
    for name, j in pairs(S.fx.jobs) do J[name] = j.id end
  end)

  it("lists jobs newest first, one line each, with --type, --status and paging", function()
    local r = as("sysadmin", { "jobs", "list", "--status", "pending" })
    assert.are.equal(0, r.code, r.err)
    local got = lines(r.out)
    assert.are.equal(3, #got, r.out)
    for i, name in ipairs{ "J5", "J4", "J1" } do
      assert.is_truthy(got[i]:find("^" .. J[name] .. " %S+ pending %d+%% %d%d%d%d%-%d%d%-%d%dT"), got[i])
    end
    local list = one_json(as("sysadmin", { "jobs", "list", "--type", "ldap_sync", "--json" }))
    assert.are.equal(1, #list)
    assert.are.equal(J.J4, list[1].id)
    list = one_json(as("sysadmin", { "jobs", "list", "--page", "0", "--per-page", "2", "--json" }))
    assert.are.same({ J.J10, J.J9 }, { list[1].id, list[2].id })
    local sent = S.control("GET", "/__stub/requests")
    assert.are.equal("/api/v4/jobs?page=0&per_page=2", sent[#sent].uri)
  end)

  it("prints an empty list as [] (the server's null too)", function()
    S.control("DELETE", "/__stub/jobs")
    local r = as("sysadmin", { "jobs", "list", "--json" })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("[]\n", r.out)
    r = as("sysadmin", { "jobs", "list" })
    assert.are.equal("", r.out)
  end)

  it("lists the jobs of one type", function()
    local list = one_json(as("sysadmin", { "jobs", "list-type", "active_users", "--per-page", "2", "--json" }))
    assert.are.same({ J.J3, J.J2 }, { list[1].id, list[2].id })
  end)

  it("gets several jobs, from the command line and stdin, each line after its ID", function()
    local r = as("sysadmin", { "jobs", "get", J.J1, "-" }, { stdin = J.J3 .. "\n" .. J.J10 .. "\n\n" })
    assert.are.equal(0, r.code, r.err)
    local got = lines(r.out)
    assert.are.equal(3, #got, r.out)
    table.sort(got)
    local want = { J.J1 .. " active_users pending", J.J3 .. " active_users success", J.J10 .. " cloud success" }
    table.sort(want)
    for i = 1, 3 do assert.is_truthy(has(got[i], want[i]), got[i]) end
    local doc = one_json(as("sysadmin", { "jobs", "get", "-", "--json" }, { stdin = J.J1 }))
    assert.are.equal(0, doc.failed)
    assert.are.equal(1, #doc.results)
    assert.are.equal(J.J1, doc.results[1].id)
    assert.are.equal(J.J1, doc.results[1].job.id)
    assert.are.equal("pending", doc.results[1].job.status)
  end)

  it("refuses stdin without IDs or with a bad one, sending nothing", function()
    local r = as("sysadmin", { "jobs", "get", "-" }, { stdin = "\n" })
    assert.are.equal(2, r.code)
    assert.is_truthy(has(r.err, "no IDs on stdin"), r.err)
    r = as("sysadmin", { "jobs", "get", "-" }, { stdin = J.J1 .. " nope" })
    assert.are.equal(2, r.code)
    assert.is_truthy(has(r.err, "invalid ID 'nope'"), r.err)
    r = as("sysadmin", { "jobs", "get", J.J1, "-" }, { stdin = J.J1 })
    assert.are.equal(2, r.code)
    assert.is_truthy(has(r.err, "given twice (on stdin)"), r.err)
    -- closed: its descriptor could be a socket by the time it is read
    local code, err = sh(cli.command({ "jobs", "get", "-" }, { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token })
                         .. " <&- 2>&1 >/dev/null")
    assert.are.equal(2, code)
    assert.is_truthy(has(err, "stdin is closed"), err)
    assert.are.same({}, S.control("GET", "/__stub/requests"))
  end)

  it("cancels jobs and sets a status, --force skipping the transition check", function()
    local r = as("sysadmin", { "jobs", "cancel", J.J1 })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.out)
    assert.are.equal("canceled", S.control("GET", "/__stub/jobs/" .. J.J1).status)
    r = as("sysadmin", { "jobs", "cancel", J.J2, J.J3 })
    assert.are.equal(1, r.code)
    assert.are.equal(J.J2 .. " OK\n", r.out)
    assert.is_truthy(has(r.err, "mm: " .. J.J3 .. ": HTTP 500 jobs.request_cancellation.status.error"), r.err)
    assert.are.same({ status = "OK" }, one_json(as("sysadmin", { "jobs", "status", J.J4, "cancel_requested",
                                                                 "--json" })))
    r = as("sysadmin", { "jobs", "status", J.J3, "pending" })
    assert.are.equal(1, r.code)
    assert.is_truthy(has(r.err, "api.job.status.invalid"), r.err)
    r = as("sysadmin", { "jobs", "status", J.J3, "pending", "--force" })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("pending", S.control("GET", "/__stub/jobs/" .. J.J3).status)
    local sent = S.control("GET", "/__stub/requests")
    assert.are.same({ status = "pending", force = true }, cjson.decode(sent[#sent].body))
  end)

  it("--wait on an existing job", function()
    S.config{ job_outcome = "success", job_steps = 1 }
    local job = one_json(as("sysadmin", { "create-job", "active_users", "--json" }))
    local r = as("sysadmin", { "jobs", "get", job.id, "--wait", "--interval", "0.05", "--json" })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("success", one_json(r).status)
  end)

  describe("download", function()
    before_each(function() S.config{ download_export_results = true } end)

    it("writes the export to FILE, whole", function()
      local file = tmpfile()
      local r = as("sysadmin", { "jobs", "download", J.J6, file })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("wrote 607 bytes to " .. file .. " (application/zip)\n", r.out)
      assert.are.equal("", r.err) -- stderr is a file: no meter
      local _, sum = sh("sha256sum " .. q(file))
      assert.are.equal(S.fx.jobs.J6.file.sha256, sum:match("^%x+"))
      local doc = one_json(as("sysadmin", { "jobs", "download", J.J6, file, "--json" }))
      assert.are.same({ file = file, bytes = 607, content_type = "application/zip" }, doc)
    end)

    it("refuses - for FILE (never a file named -, never a partial stdout)", function()
      assert.is_nil(io.open("-"), "a file named - is in the way")
      local r = as("sysadmin", { "jobs", "download", J.J6, "-" })
      assert.are.equal(2, r.code, r.err)
      assert.are.equal("", r.out)
      assert.is_nil(io.open("-"), "a file named - was written")
      -- DIR/- names such a file
      local dir = tmpfile()
      os.remove(dir)
      assert.are.equal(0, sh("mkdir " .. q(dir)))
      r = as("sysadmin", { "jobs", "download", J.J6, dir .. "/-" })
      local size = #slurp(dir .. "/-")
      sh("rm -r " .. q(dir))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(607, size)
    end)

    it("leaves FILE as it was when the download fails", function()
      local file = tmpfile("before")
      local r = as("sysadmin", { "jobs", "download", J.J8, file })
      assert.are.equal(1, r.code)
      assert.is_truthy(has(r.err, "api.job.unable_to_download_job"), r.err)
      assert.are.equal("before", slurp(file))
    end)

    it("shows bytes, total, rate and time left with --progress", function()
      local job = store_job{ type = "message_export", status = "success", file = { size = 3 * 1024 * 1024 } }
      local r = as("sysadmin", { "jobs", "download", job.id, tmpfile(), "--progress" },
                   { url = URL .. "/__fault/slow_body:1" })
      assert.are.equal(0, r.code, r.err)
      assert.is_truthy(has(r.err, "\r0 B of 3.0 MiB"), r.err)
      assert.is_truthy(r.err:find("\r3%.0 MiB of 3%.0 MiB, [%d.]+ [KMG]?i?B/s"), r.err)
      assert.is_truthy(r.err:find("\r\27%[K$"), "the meter is cleared at the end")
    end)

    it("stops at once on SIGINT, FILE untouched, exit 130", function()
      local file = tmpfile("before")
      local p = spawn_as("sysadmin", { "jobs", "download", J.J6, file }, URL .. "/__fault/slow_body:5")
      await_requests(1)
      local t0 = socket.gettime()
      p.signal("INT")
      local r = p.wait()
      assert.are.equal(130, r.code, r.err)
      assert.is_true(socket.gettime() - t0 < 3, "the download went on after the signal")
      assert.are.equal("before", slurp(file))
      assert.is_truthy(has(r.err, "download of job " .. J.J6 .. " stopped"), r.err)
      assert.is_truthy(has(r.err, "mm: interrupted by SIGINT"), r.err)
    end)
  end)
end)

describe("mm regen-token", function()
  -- Team users may regenerate their own commands' tokens but not others':
  -- basic gets 200 for C_basic, 403 for C_other and 404 for C_deleted.
  local function grant_manage_own()
    S.config{ grant = { role = "team_user", permissions = { "manage_own_slash_commands" } } }
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

  it("regenerates several concurrently, printing ID TOKEN as each answer arrives", function()
    local ids = { C.C_other, C.C_admin, C.C_basic }
    local r = as("sysadmin", { "regen-token", "--concurrency", "2", unpack(ids) })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err) -- stderr is a file: no progress bar
    local printed = {}
    for id, token in r.out:gmatch("(%w+) (%w+)\n") do printed[id] = token end
    assert.are.equal(3, #lines(r.out))
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      assert.are.equal(command_token(name), printed[C[name]], name)
    end
  end)

  it("takes IDs from stdin with -, and commands regen-token is the same", function()
    local r = as("sysadmin", { "commands", "regen-token", "-" }, { stdin = C.C_admin .. "\n" .. C.C_basic .. "\n" })
    assert.are.equal(0, r.code, r.err)
    local printed = {}
    for id, token in r.out:gmatch("(%w+) (%w+)\n") do printed[id] = token end
    assert.are.equal(command_token("C_admin"), printed[C.C_admin])
    assert.are.equal(command_token("C_basic"), printed[C.C_basic])
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
    local err = lines(r.err)
    assert.are.equal(3, #err, r.err)
    local deleted = r.err:match("mm: " .. C.C_deleted .. ": ([^\n]*)")
    local other = r.err:match("mm: " .. C.C_other .. ": ([^\n]*)")
    assert.is_truthy(deleted and deleted:find("^HTTP 404 store%.sql_command%.save%.get%.app_error"), r.err)
    assert.is_truthy(other and other:find("^HTTP 403 api%.context%.permissions%.app_error"), r.err)
    assert.are.equal("mm: 2 of 3 failed", err[3])
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

  it("takes the exit code of the first failed id", function()
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic }, { url = URL .. "/__fault/close_before" })
    assert.are.equal(4, r.code)
    assert.are.equal("", r.out)
  end)

  it("names the IDs whose answer never came: their state on the server is unknown", function()
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, "--timeout", "0.3", "--retries", "0" },
                 { url = URL .. "/__fault/slow_headers:2" })
    assert.are.equal(4, r.code)
    assert.are.equal("", r.out)
    local unknown = r.err:match("their state on the server is unknown: ([^\n]*)")
    assert.is_truthy(unknown, r.err)
    assert.is_truthy(has(unknown, C.C_admin) and has(unknown, C.C_basic), unknown)
  end)

  it("says only 'no answer came' for reads, whose state on the server no answer changes", function()
    local J1, J3 = S.fx.jobs.J1.id, S.fx.jobs.J3.id
    local url, close = cli.silent()
    local slow = { url = url }
    local r = as("sysadmin", { "jobs", "get", J1, J3, "--timeout", "0.3", "--retries", "0" }, slow)
    assert.are.equal(4, r.code)
    local ids = r.err:match("mm: no answer came for these: ([^\n]*)")
    assert.is_truthy(ids and has(ids, J1) and has(ids, J3), r.err)
    r = as("sysadmin", { "jobs", "get", J1, "--timeout", "0.3", "--retries", "0" }, slow)
    assert.are.equal(4, r.code)
    assert.is_truthy(has(r.err, "mm: no answer came for these: " .. J1 .. "\n"), r.err)
    r = as("sysadmin", { "jobs", "list", "--timeout", "0.3", "--retries", "0" }, slow)
    close()
    assert.are.equal(4, r.code)
    assert.is_truthy(one_line(r.err):find("^mm: timeout: "), r.err)
  end)

  it("says a call without an ID that got no answer may have taken effect", function()
    local want = "mm: no answer came: whether POST /api/v4/jobs took effect on the server is unknown\n"
    local url, close = cli.silent()
    for _, wait in ipairs{ {}, { "--wait" } } do
      local r = as("sysadmin", { "jobs", "create", "active_users", "--timeout", "0.3", "--retries", "0", unpack(wait) },
                   { url = url })
      assert.are.equal(4, r.code)
      assert.are.equal(want, r.err:match("\n(.*)$"), r.err)
    end
    close()
  end)

  it("draws a progress bar on stderr only when asked or on a terminal", function()
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, C.C_other, "--progress" })
    assert.are.equal(0, r.code)
    assert.is_truthy(has(r.err, "\r[" .. ("#"):rep(30) .. "] 3/3"), r.err)
    assert.are.equal(3, #lines(r.out))
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
    assert.is_truthy(has(slurp(out), "[" .. ("#"):rep(30) .. "] 2/2"), slurp(out))
    assert.are.equal(2, #lines(slurp(tokens)))
  end)

  it("says on the status line when the rate limiter holds requests back", function()
    S.config{ rate_limit = { per_sec = 2, burst = 1 } }
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, C.C_other, "--progress" })
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.err:find("\r%[[#.]+%] %d/3, holding [%d.]+ s for the rate limit\27%[K"), r.err)
  end)
end)

describe("mm output", function()
  local function run_to(redirect, args)
    local err = tmpfile()
    local code = sh(cli.command(args, { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token })
                    .. " " .. redirect .. " 2>" .. err)
    return code, slurp(err)
  end

  it("exits 7 when stdout is full, naming the token that was lost", function()
    local code, e = run_to(">/dev/full", { "regen-token", C.C_admin })
    assert.are.equal(7, code, e)
    assert.is_truthy(e:find("^mm: cannot write the output: [^\n]+\n"), e)
    assert.is_truthy(has(e, "not written, regenerate them: " .. C.C_admin), e)
    assert.are_not.equal(fx.commands.C_admin.token, command_token("C_admin"))
  end)

  it("says what was not written when a call without an ID cannot print its result", function()
    local njobs = #one_json(as("sysadmin", { "jobs", "list", "--json" }))
    local want = "mm: results not written: the list of " .. njobs .. " jobs\n"
    for _, redirect in ipairs{ ">/dev/full", "| head -0" } do
      for _, args in ipairs{ { "jobs", "list" }, { "jobs", "list", "--json" } } do
        local err = tmpfile()
        local cmd = cli.command(args, { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token })
        -- head has exited when mm writes its first line
        local code = sh("bash -c " .. q("set -o pipefail; (sleep 0.2; exec " .. cmd .. " 2>" .. err .. ") "
                                        .. redirect))
        local e = slurp(err)
        assert.are.equal(7, code, e)
        assert.is_truthy(e:find("^mm: cannot write the output: [^\n]+\n"), e)
        assert.are.equal(want, e:match("\n(.*)$"), redirect .. " " .. table.concat(args, " "))
      end
    end
    if HAS_COMMANDS then
      local ncmds = #one_json(as("sysadmin", { "commands", "list", "--team", TEAM, "--json" }))
      local code, e = run_to(">/dev/full", { "commands", "list", "--team", TEAM })
      assert.are.equal(7, code, e)
      assert.is_truthy(has(e, "mm: results not written: the list of " .. ncmds .. " commands\n"), e)
    end
    -- something was made: its id is named
    local code, e = run_to(">/dev/full", { "jobs", "create", "active_users" })
    assert.are.equal(7, code, e)
    local id = e:match("mm: results not written: the job (%w+)\n")
    assert.is_truthy(id, e)
    assert.are.equal("active_users", S.control("GET", "/__stub/jobs/" .. id).type)
  end)

  it("exits 7 at once, sending nothing, when stdout is closed", function()
    local code, e = run_to(">&-", { "regen-token", C.C_admin })
    assert.are.equal(7, code, e)
    assert.are.equal("mm: cannot write the output: stdout is closed\n", e)
    assert.are.same({}, S.control("GET", "/__stub/requests"))
  end)

  it("runs with stderr closed as with 2>/dev/null: results on stdout, the exit code tells", function()
    local env = { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token }
    local code, out = sh(cli.command({ "jobs", "list", "--debug" }, env) .. " 2>&-")
    assert.are.equal(0, code, out)
    assert.are.equal(as("sysadmin", { "jobs", "list" }).out, out) -- debug lines never reached the socket
    code, out = sh(cli.command({ "get-job", ZERO_ID }, env) .. " 2>&-")
    assert.are.equal(1, code, out)
    assert.are.equal("", out)
    -- stdin closed too: still refused when read, nothing sent
    S.reset()
    code = sh(cli.command({ "jobs", "get", "-" }, env) .. " <&- 2>&-")
    assert.are.equal(2, code)
    assert.are.same({}, S.control("GET", "/__stub/requests"))
    assert.is_truthy(has(cli.run{ "--help" }.out, "With stderr closed (2>&-)"), "undocumented")
  end)

  it("exits 7 on a closed pipe (never a silent 141) and starts nothing more", function()
    local err = tmpfile()
    local cmd = cli.command({ "regen-token", C.C_admin, C.C_basic, C.C_other, "--concurrency", "1" },
                            { MM_URL = URL, MM_TOKEN = fx.users.sysadmin.token })
    -- head has exited when mm writes its first line
    local code = sh("bash -c " .. q("set -o pipefail; (sleep 0.3; exec " .. cmd .. " 2>" .. err .. ") | head -0"))
    assert.are.equal(7, code, slurp(err))
    local e = slurp(err)
    assert.is_truthy(has(e, "mm: cannot write the output: Broken pipe"), e)
    assert.is_truthy(has(e, "not written, regenerate them: " .. C.C_admin), e)
    assert.is_truthy(has(e, "not sent: " .. C.C_basic .. " " .. C.C_other), e)
    assert.are.equal(1, #S.control("GET", "/__stub/requests"))
  end)

  it("escapes control characters in server text: job fields, job errors", function()
    local nasty = "boom\27[2J\nfake: line\r\194\155x\226\128\174y\0z"
    local job = store_job{ type = "active_users", status = "error", data = { error = nasty, ["k\27"] = "v" } }
    local r = as("sysadmin", { "get-job", job.id })
    assert.are.equal(0, r.code, r.err)
    for _, raw in ipairs{ "\0", "\27", "\r", "\194\155", "\226\128\174" } do assert.is_falsy(has(r.out, raw), r.out) end
    assert.is_truthy(has(r.out, "\ndata.error:         boom\\x1b[2J\\x0afake: line\\x0d\\u009bx\\u202ey\\x00z\n"),
                     r.out)
    assert.is_truthy(has(r.out, "\ndata.k\\x1b:"), r.out)
    for _, line in ipairs(lines(r.out)) do assert.is_truthy(line:find("^[%w. ]+\\?[%w]*:%s"), line) end
    -- --wait reports the job's error on one line
    r = as("sysadmin", { "jobs", "get", job.id, "--wait" })
    assert.are.equal(5, r.code)
    local last = lines(r.err)[#lines(r.err)]
    assert.is_truthy(has(last, "ended in error: boom"), r.err)
    for _, raw in ipairs{ "\0", "\27", "\r", "\194\155" } do assert.is_falsy(has(r.err, raw), r.err) end
    -- --json carries the text exactly
    assert.are.equal(nasty, one_json(as("sysadmin", { "get-job", job.id, "--json" })).data.error)
  end)

  it("keeps ID TOKEN lines two words, whatever the server's token holds", function()
    local url, done = cli.fake{
      { body = '{"token":"abc\\u001b]0;pwned\\u0007 def\\nxyz"}' },
      { body = '{"token":""}' },
    }
    local r = as("sysadmin", { "regen-token", C.C_admin, C.C_basic, "--concurrency", "1" }, { url = url })
    done()
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(C.C_admin .. " abc\\x1b]0;pwned\\x07\\x20def\\x0axyz\n" .. C.C_basic .. " -\n", r.out)
  end)

  it("prints suggestions without trailing white space when a field is empty", function()
    local url, done = cli.fake{ { body = '[{"Complete":"echo","Suggestion":"echo","Description":"","Hint":""},'
                                         .. '{"Complete":"away","Description":"","Hint":"[text]"},'
                                         .. '{"Complete":"code","Description":"Code block","Hint":"[text]"}]' } }
    local r = as("sysadmin", { "commands", "suggest", TEAM, "--user-input", "/" }, { url = url })
    done()
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("echo\naway ([text])\ncode Code block ([text])\n", r.out)
  end)

  it("escapes the server's error messages", function()
    local url, done = cli.fake{ { status = 400, body = '{"id":"x.y","message":"bad\\u001b[31m \\u009b1m",'
                                                       .. '"detailed_error":"","request_id":"","status_code":400}' } }
    local r = as("sysadmin", { "get-job", ZERO_ID }, { url = url })
    done()
    assert.are.equal(1, r.code)
    assert.is_falsy(r.err:find("\27") or has(r.err, "\194\155"), r.err)
    assert.is_truthy(has(one_line(r.err), "\\u009b1m"), r.err)
  end)

  it("shows unexpected server data, never a traceback", function()
    local body = '{"id":"' .. ZERO_ID .. '","type":"a\\u0000b","status":"pending","progress":{"done":[1,2]},'
      .. '"create_at":1e300,"start_at":-5,"last_activity_at":"yesterday","data":{"k":[true,null,3]}}'
    local url, done = cli.fake{ { body = body }, { body = body } }
    local r = as("sysadmin", { "get-job", ZERO_ID }, { url = url })
    local j = as("sysadmin", { "get-job", ZERO_ID, "--json" }, { url = url })
    done()
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(has(r.out, "type:               a\\x00b\n"), r.out)
    assert.is_truthy(has(r.out, 'progress:           {"done":[1,2]}\n'), r.out)
    assert.is_truthy(has(r.out, "created:            1e+300\n"), r.out)
    assert.is_truthy(has(r.out, "started:            -5\n"), r.out)
    assert.is_truthy(has(r.out, "last activity:      yesterday\n"), r.out)
    assert.is_truthy(has(r.out, "data.k:             [true,null,3]\n"), r.out)
    assert.are.equal(0, j.code, j.err)
    local doc = one_json(j)
    assert.are.equal("a\0b", doc.type)
    assert.are.equal(1e300, doc.create_at)
  end)

  it("keeps --json valid UTF-8 when the server's page is not", function()
    -- a proxy's Latin-1 error page ("Passerelle échouée"), for every attempt
    local page = "<html><head><title>Passerelle \233chou\233e</title></head></html>"
    local answer = { status = 502, type = "text/html; charset=iso-8859-1", body = page }
    local url, done = cli.fake{ answer, answer, answer }
    local r = as("sysadmin", { "get-job", ZERO_ID, "--json" }, { url = url })
    done()
    assert.are.equal(1, r.code, r.err)
    assert.is_falsy(r.out:find("[\128-\255]"), r.out) -- the page had no other non-ASCII
    local e = one_json(r).error
    assert.are.equal(502, e.status)
    assert.are.equal("Passerelle ?chou?e", e.message)
    assert.is_falsy(r.err:find("[\128-\255]"), r.err)
  end)
end)

describe("mm interrupted", function()
  -- Three commands regenerated one at a time, each answer 1 s late: the
  -- signal comes when the second request is in flight.
  local ids = { C.C_admin, C.C_basic, C.C_other }
  local slow = URL .. "/__fault/slow_headers:1"

  -- Every token the stub changed was printed on stdout as "ID TOKEN", or
  -- its ID named on stderr as unknown.
  local function check_tokens(r, unknown)
    local printed = {}
    for id, token in r.out:gmatch("(%w+) (%w+)\n") do printed[id] = token end
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      local live = command_token(name)
      if printed[C[name]] then
        assert.are.equal(live, printed[C[name]], name)
      elseif live ~= fx.commands[name].token then
        assert.is_truthy(unknown and has(unknown, C[name]), name .. " changed but neither printed nor named")
      end
    end
    return printed
  end

  for _, sig in ipairs{ { "INT", 130 }, { "TERM", 143 } } do
    it("by SIG" .. sig[1] .. " half-way: prints each token as it came, finishes the one in flight, exits "
       .. sig[2], function()
      local p = spawn_as("sysadmin", { "regen-token", "--concurrency", "1", unpack(ids) }, slow)
      await_requests(2)
      -- the first answer is already printed, the second request in flight
      assert.are.equal(C.C_admin .. " " .. command_token("C_admin") .. "\n", p.out())
      p.signal(sig[1])
      local r = p.wait()
      assert.are.equal(sig[2], r.code, r.err)
      local printed = check_tokens(r)
      assert.is_truthy(printed[C.C_admin] and printed[C.C_basic], r.out)
      assert.are.equal(2, #lines(r.out))
      assert.are.equal(fx.commands.C_other.token, command_token("C_other"))
      assert.is_truthy(has(r.err, "mm: not sent: " .. C.C_other .. "\n"), r.err)
      assert.is_truthy(r.err:find("mm: interrupted by SIG" .. sig[1] .. "\n$"), r.err)
      assert.is_falsy(has(r.err, "Try 'mm --help'"), r.err)
      assert.are.equal(2, #S.control("GET", "/__stub/requests"))
    end)
  end

  it("by a second SIGINT: stops what is in flight and names it as unknown", function()
    local p = spawn_as("sysadmin", { "regen-token", "--concurrency", "1", unpack(ids) }, slow)
    await_requests(2)
    p.signal("INT")
    socket.sleep(0.2)
    p.signal("INT")
    local r = p.wait()
    assert.are.equal(130, r.code, r.err)
    local unknown = r.err:match("their state on the server is unknown: ([^\n]*)")
    assert.are.equal(C.C_basic, unknown, r.err)
    assert.is_truthy(has(r.err, "mm: not sent: " .. C.C_other .. "\n"), r.err)
    socket.sleep(1.2) -- the stub answers the aborted request, changing its token
    check_tokens(r, unknown)
    assert.are.equal(1, #lines(r.out))
  end)

  it("with one id: prints the token that came, no traceback, exit 130", function()
    local p = spawn_as("sysadmin", { "regen-token", C.C_admin }, slow)
    await_requests(1)
    p.signal("INT")
    local r = p.wait()
    assert.are.equal(130, r.code, r.err)
    assert.are.equal(command_token("C_admin") .. "\n", r.out)
    assert.are.equal("mm: interrupted by SIGINT\n", r.err)
  end)

  it("while --wait polls: prints the last job seen and exits 130; the job goes on", function()
    S.config{ job_outcome = "never" }
    local p = spawn_as("sysadmin", { "create-job", "active_users", "--wait", "--interval", "5", "--json" })
    await_requests(2) -- created, and polled once
    p.signal("INT")
    local r = p.wait()
    assert.are.equal(130, r.code, r.err)
    local e = one_json(r).error
    assert.are.equal("canceled", e.kind)
    assert.are.equal("in_progress", e.job.status)
    assert.is_truthy(has(r.err, "stopped waiting for job " .. e.job.id), r.err)
  end)
end)

describe("mm api", function()
  it("GETs any route with query parameters and prints the JSON", function()
    local r = as("sysadmin", { "api", "GET", "/jobs", "--query", "per_page=1", "--query", "status=pending" })
    assert.are.equal(0, r.code, r.err)
    local list = one_json(r)
    assert.are.equal(1, #list)
    assert.are.equal(S.fx.jobs.J5.id, list[1].id)
    local sent = S.control("GET", "/__stub/requests")
    assert.are.equal("/api/v4/jobs?per_page=1&status=pending", sent[1].uri)
  end)

  it("sends --data, inline or from a file or stdin, as the JSON body", function()
    local r = as("sysadmin", { "api", "POST", "/api/v4/jobs", "--data", '{"type":"active_users"}' })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("active_users", one_json(r).type)
    r = as("sysadmin", { "api", "POST", "jobs", "--data", "@" .. tmpfile('{"type":"expiry_notify"}') })
    assert.are.equal("expiry_notify", one_json(r).type)
    r = as("sysadmin", { "api", "POST", "/jobs", "--data", "@-" }, { stdin = '{"type":"active_users"}' })
    assert.are.equal("active_users", one_json(r).type)
  end)

  it("prints a body that is not JSON as it came, escaped on a terminal", function()
    local answer = { type = "text/plain", body = "plain\27[31m text" }
    local url, done = cli.fake{ answer, answer }
    local r = as("sysadmin", { "api", "GET", "/system/ping" }, { url = url })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("plain\27[31m text\n", r.out) -- stdout is a file
    local out = tmpfile()
    local cmd = cli.command({ "api", "GET", "/system/ping" }, { MM_URL = url, MM_TOKEN = fx.users.sysadmin.token })
    assert.are.equal(0, sh("script -qec " .. q(cmd) .. " /dev/null >" .. out .. " </dev/null"))
    done()
    assert.is_truthy(has(slurp(out), "plain\\x1b[31m text"), slurp(out))
  end)

  it("reports the server's error as every command does", function()
    local r = as("sysadmin", { "api", "GET", "/no/such/route", "--json" })
    assert.are.equal(1, r.code)
    assert.are.equal("api.context.404.app_error", one_json(r).error.id)
    assert.is_truthy(one_line(r.err):find("^mm: HTTP 404"), r.err)
  end)
end)

describe("mm commands (needs the stub's commands routes)", function()
  local function requests() return S.control("GET", "/__stub/requests") end

  it_commands("lists a team's commands, tokens only with --custom-only --json", function()
    local r = as("sysadmin", { "commands", "list", "--team", TEAM, "--custom-only" })
    assert.are.equal(0, r.code, r.err)
    local got = lines(r.out)
    assert.are.equal(3, #got, r.out)
    assert.is_truthy(r.out:find(C.C_admin .. " " .. S.fx.commands.C_admin.trigger .. " P http", 1, true), r.out)
    assert.is_falsy(has(r.out, S.fx.commands.C_admin.token), "a token in the text list")
    local list = one_json(as("sysadmin", { "commands", "list", "--team", TEAM, "--custom-only", "--json" }))
    assert.are.equal(3, #list)
    assert.are.equal("/api/v4/commands?team_id=" .. TEAM .. "&custom_only=true", requests()[2].uri)
  end)

  it_commands("creates, gets, updates (sending the whole command), moves and deletes", function()
    local r = as("sysadmin", { "commands", "create", "--team", TEAM, "--trigger", "deploy", "--method", "P",
                               "--request-url", "https://hooks.example.com/deploy", "--description", "ship it",
                               "--json" })
    assert.are.equal(0, r.code, r.err)
    local cmd = one_json(r)
    assert.are.equal("deploy", cmd.trigger)
    assert.are.equal("ship it", cmd.description)

    r = as("sysadmin", { "commands", "get", cmd.id })
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(has(r.out, "\ntrigger:            deploy\n"), r.out)
    assert.is_truthy(has(r.out, "\ndescription:        ship it\n"), r.out)

    local before = #requests()
    r = as("sysadmin", { "commands", "update", C.C_basic, "--display-name", "Basic", "--auto-complete=false" })
    assert.are.equal(0, r.code, r.err)
    local sent = requests()
    assert.are.equal(before + 2, #sent)
    assert.are.equal("GET", sent[before + 1].method)
    assert.are.equal("PUT", sent[before + 2].method)
    local body = cjson.decode(sent[before + 2].body)
    local stored = S.fx.commands.C_basic
    for _, k in ipairs{ "id", "team_id", "trigger", "method", "url", "username", "icon_url", "auto_complete_desc",
                        "auto_complete_hint", "description" } do
      assert.are.equal(stored[k], body[k], k)
    end
    assert.are.equal("Basic", body.display_name)
    assert.is_false(body.auto_complete)
    assert.is_truthy(has(r.out, "\ndisplay_name:       Basic\n"), r.out)

    r = as("sysadmin", { "commands", "move", cmd.id, S.fx.teams.T2.id })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.out)
    assert.are.equal(S.fx.teams.T2.id, one_json(as("sysadmin", { "commands", "get", cmd.id, "--json" })).team_id)

    r = as("sysadmin", { "commands", "delete", C.C_other, "--json" })
    assert.are.same({ status = "OK" }, one_json(r))
    r = as("sysadmin", { "commands", "get", C.C_other })
    assert.are.equal(1, r.code)
    assert.is_truthy(has(r.err, "HTTP 404"), r.err)
  end)

  it_commands("executes a command and shows the response", function()
    local r = as("basic", { "commands", "execute", "--channel", S.fx.channels.CH.id, "--command", "/shrug hi" })
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(has(r.out, "response_type:      in_channel\n"), r.out)
    assert.is_truthy(has(r.out, "text:               hi "), r.out)
  end)

  it_commands("rotate --all prints ID TRIGGER TOKEN for each, and the stub has those tokens", function()
    local r = as("sysadmin", { "commands", "rotate", "--team", TEAM, "--all" })
    assert.are.equal(0, r.code, r.err)
    local got = {}
    for id, trigger, token in r.out:gmatch("(%w+) (%S+) (%w+)\n") do got[id] = { trigger, token } end
    assert.are.equal(3, #lines(r.out))
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      assert.are.same({ S.fx.commands[name].trigger, command_token(name) }, got[C[name]], name)
    end
    local doc = one_json(as("sysadmin", { "commands", "rotate", "--team", TEAM, C.C_admin, C.C_deleted, "--json" }))
    assert.are.equal(1, #doc.rotated)
    assert.are.same({ id = C.C_admin, trigger = S.fx.commands.C_admin.trigger, token = command_token("C_admin") },
                    doc.rotated[1])
    assert.are.equal(C.C_deleted, doc.failed[1].id)
    assert.are.equal("not_found", doc.failed[1].error.kind)
  end)

  it_commands("update interrupted while reading the command names the PUT it never sent", function()
    local p = spawn_as("sysadmin", { "commands", "update", C.C_basic, "--display-name", "X" },
                       URL .. "/__fault/slow_headers:1")
    await_requests(1) -- the GET, answered 1 s late
    p.signal("INT")
    local r = p.wait()
    assert.are.equal(130, r.code, r.err)
    assert.are.equal("mm: not sent: PUT /api/v4/commands/" .. C.C_basic .. "\nmm: interrupted by SIGINT\n", r.err)
    assert.are.equal(1, #requests())
  end)

  it_commands("rotate interrupted half-way by SIGINT printed every token the stub changed", function()
    local p = spawn_as("sysadmin", { "commands", "rotate", "--team", TEAM, "--all", "--concurrency", "1" },
                       URL .. "/__fault/slow_headers:1")
    await_requests(3) -- listed, one rotated, one in flight
    p.signal("INT")
    local r = p.wait()
    assert.are.equal(130, r.code, r.err)
    local printed = {}
    for id, _, token in r.out:gmatch("(%w+) (%S+) (%w+)\n") do printed[id] = token end
    local changed = 0
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      local live = command_token(name)
      if live ~= fx.commands[name].token then
        changed = changed + 1
        assert.are.equal(live, printed[C[name]], name)
      else
        assert.is_nil(printed[C[name]], name)
        assert.is_truthy(has(r.err, C[name]), "unsent " .. name .. " not named")
      end
    end
    assert.are.equal(2, changed)
    assert.is_truthy(has(r.err, "mm: not sent: "), r.err)
  end)
end)
