-- The stub's rate-limit arithmetic (stub/lua/mmstub/gcra.lua), pure, on
-- every Lua: the same numbers as throttled's own TestRateLimit (rate.go's
-- tests, v2) for requests of volume 1, and the headers as Mattermost's
-- setRateLimitHeaders derives them (durations rounded up to whole seconds).
-- Times are nanoseconds, as gcra.check takes them.
package.path = "stub/lua/?.lua;" .. package.path
local gcra = require "mmstub.gcra"

describe("stub GCRA", function()
  it("follows throttled's TestRateLimit: PerSec(1), MaxBurst 4", function()
    -- now (ms), remaining, reset (ms, before rounding up to seconds), retry_after or nil
    local cases = {
      { 0, 4, 1000 }, { 0, 3, 2000 }, { 0, 2, 3000 }, { 0, 1, 4000 }, { 0, 0, 5000 },
      { 0, 0, 5000, 1 },
      { 3000, 2, 3000 }, { 3100, 1, 3900 }, { 4000, 1, 4000 }, { 8000, 4, 1000 }, { 9500, 4, 1000 },
    }
    local tat
    for i, c in ipairs(cases) do
      local limited, new_tat, limit, remaining, reset, retry_after = gcra.check(1, 4, tat, c[1] * 1e6)
      local what = "case " .. i
      assert.are.equal(c[4] ~= nil, limited, what)
      assert.are.equal(5, limit, what)
      assert.are.equal(c[2], remaining, what)
      assert.are.equal(math.ceil(c[3] / 1000), reset, what)
      assert.are.equal(c[4], retry_after, what)
      if limited then assert.is_nil(new_tat, what) else tat = new_tat end
    end
  end)

  it("lets MaxBurst + 1 through at once, then one per emission interval", function()
    local tat, passed = nil, 0
    for _ = 1, 200 do
      local limited, new_tat = gcra.check(100, 50, tat, 0)
      if not limited then passed, tat = passed + 1, new_tat end
    end
    assert.are.equal(51, passed)
    -- 10 ms later exactly one more, with Remaining 0 and Reset 1
    local limited, new_tat, _, remaining, reset = gcra.check(100, 50, tat, 1e7)
    assert.is_false(limited)
    assert.are.equal(0, remaining)
    assert.are.equal(1, reset)
    local again, _, _, _, _, retry_after = gcra.check(100, 50, new_tat, 1e7)
    assert.is_true(again)
    assert.are.equal(1, retry_after) -- 10 ms, rounded up to a whole second
  end)

  it("reports the default limiter's Reset in whole seconds, rounded up", function()
    -- 10/s, burst 100: after 101 requests at once the bucket needs 10.1 s
    local tat, reset
    for _ = 1, 101 do
      local limited
      limited, tat, _, _, reset = gcra.check(10, 100, tat, 0)
      assert.is_false(limited)
    end
    assert.are.equal(11, reset)
  end)
end)
