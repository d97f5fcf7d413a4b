-- bin/mm-stub as a program: its ports and its refusals. Each case starts
-- stubs of its own; the suite's stub (MM_STUB_URL) serves as a port that is
-- taken.
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted spec/mm_stub_spec.lua
local cli = require "support.mmcli"

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
