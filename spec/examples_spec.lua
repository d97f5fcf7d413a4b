-- The examples (examples/*.lua, examples/demo.sh) run as their headers
-- say, on the Lua running the specs, against the stub.
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
