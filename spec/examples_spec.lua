-- The examples (examples/*.lua, examples/demo.sh) run as their headers
-- say, on the Lua running the specs, against the stub; a mistake is one
-- line on stderr, never a traceback.
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted spec/examples_spec.lua
local cli = require "support.mmcli"
local child = require "support.child"
local stub = require "support.stubctl"

-- The directory of the core the specs run with: the first mm/core.so on
-- package.cpath (busted --cpath='build/<lua>/?.so').
local function build_dir()
  for template in package.cpath:gmatch("[^;]+") do
    local f = io.open((template:gsub("%?", "mm/core")), "rb")
    if f then
      f:close()
      return (template:gsub("/%?%.so$", ""))
    end
  end
  error("no mm/core.so on package.cpath: " .. package.cpath)
end

after_each(function()
  cli.cleanup()
  stub.reset()
end)

describe("examples/demo.sh (make demo)", function()
  it("runs every example on this Lua and its build", function()
    local code, out = cli.sh("examples/demo.sh " .. cli.q(child.lua) .. " " .. cli.q(build_dir()) .. " 2>&1")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("finished: success", 1, true), out)
    assert.is_truthy(out:find("3 rotated, 0 failed", 1, true), out)
  end)
end)

describe("examples/*.lua", function()
  local fx

  before_each(function() fx = stub.fixtures() end)

  -- The header's `export LUA_PATH=... LUA_CPATH=...` line, for this Lua's build.
  local function header_paths(example)
    local text = cli.slurp("examples/" .. example)
    local line = assert(text:match("\n%-%-%s+(export LUA_PATH='[^\n]*)\n"), example .. ": no export line")
    return (line:gsub("build/lua5%.4/", build_dir() .. "/"))
  end

  -- Runs an example from the checkout after `setup` (an export line) with
  -- the MM_* variables of `env` only.
  local function run(example, args, env, setup)
    local out, err = cli.tmpfile(), cli.tmpfile()
    local words = { "env -u LUA_PATH -u LUA_CPATH -u MM_URL -u MM_TOKEN" }
    for k, v in pairs(env) do words[#words + 1] = cli.q(k .. "=" .. v) end
    words[#words + 1] = "sh -c " .. cli.q(setup .. "; exec " .. cli.q(child.lua) .. ' examples/' .. example .. ' "$@"')
      .. " sh"
    for _, a in ipairs(args) do words[#words + 1] = cli.q(a) end
    local code = cli.sh(table.concat(words, " ") .. " >" .. out .. " 2>" .. err)
    return { code = code, out = cli.slurp(out), err = cli.slurp(err) }
  end

  local function server() return { MM_URL = stub.url, MM_TOKEN = fx.users.sysadmin.token } end

  it("run from the checkout with their header's LUA_PATH and LUA_CPATH", function()
    local r = run("create_job.lua", { "active_users" }, server(), header_paths("create_job.lua"))
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("finished: success", 1, true), r.out)
    r = run("rotate_token.lua", { fx.commands.C_admin.id }, server(), header_paths("rotate_token.lua"))
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("new token (26 characters", 1, true), r.out)
    r = run("rotate_team.lua", { fx.teams.T.id }, server(), header_paths("rotate_team.lua"))
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("3 rotated, 0 failed", 1, true), r.out)
  end)

  it("say a mistake in one line and exit 1: no server, a malformed id, no mm module", function()
    local id, team = fx.commands.C_admin.id, fx.teams.T.id
    local none = {} -- no MM_URL, no MM_TOKEN
    for _, case in ipairs({
      { "create_job.lua", {}, none, "mm: no server configured: set MM_URL and MM_TOKEN" },
      { "rotate_token.lua", { id }, none, "mm: no server configured: set MM_URL and MM_TOKEN" },
      { "rotate_team.lua", { team }, none, "mm: no server configured: set MM_URL and MM_TOKEN" },
      { "rotate_token.lua", { "bad" }, server(), "bad argument #1 to 'regen_token' (id must be 26 characters, got 3)" },
      { "rotate_token.lua", { id, "bad" }, server(), "bad argument #1 to 'regen_tokens' (item #2: id must be 26" },
      { "rotate_team.lua", { "bad" }, server(), "bad argument #1 to 'rotate_team_tokens' (team id must be 26" },
    }) do
      local example, args, env, want = case[1], case[2], case[3], case[4]
      local r = run(example, args, env, header_paths(example))
      assert.are.equal(1, r.code, example .. " " .. r.err)
      assert.are.equal(example .. ": " .. want, r.err:sub(1, #example + 2 + #want), r.err)
      assert.is_truthy(r.err:match("^[^\n]*\n$"), "not one line: " .. r.err)
      assert.are.equal("", r.out)
      -- without the module (a path where it is not)
      r = run(example, args, env, "export LUA_PATH='/nonexistent/?.lua' LUA_CPATH='/nonexistent/?.so'")
      assert.are.equal(1, r.code, r.err)
      assert.is_truthy(r.err:match("^" .. example:gsub("%p", "%%%0") .. ": module 'mm' not found:[^\n]*\n$"), r.err)
    end
    assert.are.same({}, stub.requests()) -- nothing was sent
  end)
end)
