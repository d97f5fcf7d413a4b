-- bin/mm-stub as a program: its ports, its fixtures file, its refusals. Each case starts
-- stubs of its own; the suite's stub (MM_STUB_URL) serves as a port that is
-- taken.
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted spec/mm_stub_spec.lua
local cli = require "support.mmcli"
local cjson = require "cjson"

local URL = assert(os.getenv("MM_STUB_URL"), "run under bin/mm-stub run (MM_STUB_URL unset)")

-- Runs bin/mm-stub with these (already quoted) arguments; returns
-- { code, out, err }. LD_PRELOAD is dropped: make test-asan preloads the
-- sanitizer for Lua only.
local function stub(args)
  local out, err = cli.tmpfile(), cli.tmpfile()
  local code = cli.sh("env -u LD_PRELOAD bin/mm-stub " .. args .. " >" .. out .. " 2>" .. err .. " </dev/null")
  return { code = code, out = cli.slurp(out), err = cli.slurp(err) }
end

after_each(function() cli.cleanup() end)

describe("mm-stub ports", function()
  it("takes its random ports outside the kernel's ephemeral range", function()
    local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
    local lo, hi = 32768, 60999
    if f then
      lo, hi = f:read("*n", "*n")
      f:close()
    end
    -- 3 starts, 4 random ports each: by chance all 12 outside would be rare
    for _ = 1, 3 do
      local r = stub("start")
      assert.are.equal(0, r.code, r.err)
      local n = 0
      for port in r.out:gmatch("https?://127%.0%.0%.[12]:(%d+)") do
        port = tonumber(port)
        assert.is_true(port >= 20000 and port <= 65535, r.out)
        if lo >= 20000 or hi < 65535 then -- else there is no choice
          assert.is_true(port < lo or port > hi, ("port %d in the ephemeral range %d-%d"):format(port, lo, hi))
        end
        n = n + 1
      end
      assert.are.equal(4, n, r.out)
      local prefix = assert(r.out:match("export MM_STUB_PREFIX='([^']+)'"), r.out)
      assert.are.equal(0, stub("stop --prefix " .. cli.q(prefix)).code)
    end
  end)

  it("--port that is taken: one line naming it, exit 1", function()
    local port = URL:match(":(%d+)$")
    for _, cmd in ipairs({ "start", "run", "serve" }) do
      local r = stub(cmd .. " --no-tls --port " .. port .. (cmd == "run" and " -- true" or ""))
      assert.are.equal(1, r.code, cmd)
      assert.are.equal("", r.out, cmd)
      assert.are.equal("mm-stub: --port " .. port .. ": 127.0.0.1:" .. port .. " is already in use\n", r.err)
    end
  end)
end)

describe("mm-stub --fixtures", function()
  local USER = '{"id":"71c86ngttcg4irougjzk1dquqy","roles":"system_user","token":"tok1"}'
  local TEAM = '{"id":"ymbimrbuij4et6xscgixpeeibo","members":{"u":"team_user"}}'

  it("a bad file: exit 2 and one line naming the file and what is wrong, before the stub starts", function()
    for _, case in ipairs({
      { "", "not valid JSON: " },
      { "{", "not valid JSON: " },
      { "[1]", "not a JSON object" },
      { "{}", "users is missing" },
      { '{"user":{}}', "unknown section user" },
      { '{"users":{"u":{"roles":"system_user"}}}', "users.u.id is missing" },
      { '{"users":{"u":{"id":"short","roles":"system_user"}}}', "users.u.id must be 26 letters or digits" },
      { '{"users":{"u":{"id":"71c86ngttcg4irougjzk1dquqy","roles":"system_user","toke":"x"}}}',
        "users.u has an unknown field toke" },
      { '{"users":{"u":' .. USER .. ',"v":{"id":"n5osftkxds9n65mgqhdz1qsrzh","roles":"system_user",'
        .. '"oauth_token":"tok1"}}}', "token is also users." },
      { '{"users":{"u":' .. USER .. '},"teams":{"T":{"id":"ymbimrbuij4et6xscgixpeeibo",'
        .. '"members":{"nobody":"team_user"}}}}', "teams.T.members names 'nobody', not one of the fixtures' users" },
      { '{"users":{"u":' .. USER .. '},"teams":{"T":' .. TEAM .. '},"commands":{"C":{"id":"uq3zru31gm4c5hipqrwibnbhnr",'
        .. '"creator":"u","team":"T2"}}}', "commands.C.team 'T2' is not one of the fixtures' teams" },
      { '{"users":{"u":' .. USER .. '},"teams":{"T":' .. TEAM .. '},"commands":{"C":{"id":"uq3zru31gm4c5hipqrwibnbhnr",'
        .. '"creator":"u","team":"T","url":5}}}', "commands.C.url must be a string" },
      { '{"users":{"u":' .. USER .. '},"roles":{"r":"create_post"}}', "roles.r must be an array of permission names" },
      { '{"users":{"u":' .. USER .. '},"jobs":{"J":{"id":"9z433778imzaffoebn43e6hj9y","type":"active_users",'
        .. '"status":"pending"}}}', "jobs.J.create_at is missing" },
    }) do
      local file = cli.tmpfile(case[1])
      local r = stub("run --no-tls --fixtures " .. cli.q(file) .. " -- echo ran")
      assert.are.equal(2, r.code, case[1] .. "\n" .. r.err)
      assert.are.equal("", r.out, case[1])
      local line = r.err:match("^mm%-stub: fixtures file '" .. file:gsub("%p", "%%%0") .. "': ([^\n]*)\n$")
      assert.is_truthy(line, case[1] .. "\n" .. r.err)
      assert.is_truthy(line:find(case[2], 1, true), case[1] .. "\n" .. r.err)
    end
  end)

  it("a small valid file: comments anywhere, missing sections empty; the stub serves that world", function()
    local file = cli.tmpfile('{"_c":"world","users":{"_c":"x","u":' .. USER .. '},"teams":{"T":' .. TEAM .. '},'
      .. '"roles":{"_comment":"x","system_user":[]}}')
    local r = stub("run --no-tls --fixtures " .. cli.q(file) .. [[ -- sh -c 'curl -sS --noproxy "*" ]]
      .. [["$MM_STUB_URL/__stub/fixtures"; echo; curl -sS --noproxy "*" -H "Authorization: Bearer tok1" ]]
      .. [["$MM_STUB_URL/api/v4/jobs/9z433778imzaffoebn43e6hj9y"']])
    assert.are.equal(0, r.code, r.err)
    local fx, job = r.out:match("^([^\n]*)\n(.*)$")
    fx, job = cjson.decode(fx), cjson.decode(job)
    assert.are.equal("u", next(fx.users))
    assert.is_nil(next(fx.users, "u"))
    assert.are.equal("ymbimrbuij4et6xscgixpeeibo", fx.teams.T.id)
    assert.are.same({ system_user = {} }, fx.roles)
    -- the user's token is taken (no 401); there are no fixture jobs
    assert.are.equal("app.job.get.app_error", job.id)
  end)
end)
