-- mm.pacer: the client's pacing of requests to Mattermost's rate limiter.
-- Pure: a virtual clock and a simulated server running the stub's own
-- limiter arithmetic (spec/support/ratesim.lua), so the timings below are
-- exact and the same on every run and every Lua. The same targets run for
-- real, against the stub, in bench/ (bench/ratelimit.lua).
local pacer = require "mm.pacer"
local sim = require "support.ratesim"

local huge = math.huge

-- The issue's targets: at most 1.15x the limiter's own minimum, which is
-- (n - burst) / per_sec: the burst goes at once, the rest at the rate.
local function minimum(n, limiter) return (n - limiter.burst) / limiter.per_sec end

local function events_of(r, what, from, to)
  local out = {}
  for _, e in ipairs(r.events) do
    if e.what == what and e.t >= (from or -huge) and e.t <= (to or huge) then out[#out + 1] = e end
  end
  return out
end

-- Kilobytes the Lua heap grows by over 20,000 calls of f(i), after as
-- many to warm up, the collector stopped. LuaJIT counts the traces it
-- compiles in the same heap: its compiler is off meanwhile.
local function allocated(f)
  local jit = rawget(_G, "jit")
  for i = 1, 20000 do f(i) end
  if jit then jit.off() jit.flush() end
  collectgarbage("collect")
  collectgarbage("stop")
  local before = collectgarbage("count")
  for i = 20001, 40000 do f(i) end
  local after = collectgarbage("count")
  collectgarbage("restart")
  if jit then jit.on() end
  return after - before
end

-- delay, holding and concurrency stay sane whatever the pacer was told
local function assert_sane(p, now, max)
  local d, h, c = p:delay(now), p:holding(now), p:concurrency(max)
  assert.is_true(d >= 0 and d < huge, "delay " .. tostring(d))
  assert.is_true(h >= 0 and h < huge, "holding " .. tostring(h))
  assert.is_true(c >= 1 and c <= max and c == math.floor(c), "concurrency " .. tostring(c))
end

describe("mm.pacer", function()
  describe("the targets, in simulation", function()
    -- latency: mean round trip; jitter 0.5: each half varies by +-50%, so
    -- answers overtake each other and Remaining comes back out of order
    for _, lat in ipairs{ 0.001, 0.005, 0.02, 0.05 } do
      local ms = lat * 1000
      it(("2,000 calls at concurrency 16, 100/s burst 50, %g ms: no 429, within 1.15x"):format(ms), function()
        local limiter = { per_sec = 100, burst = 50 }
        local r = sim.run{ n = 2000, concurrency = 16, limiter = limiter, latency = lat, jitter = 0.5, seed = 1 }
        assert.are.equal(0, r.failed)
        assert.are.equal(0, r.refused)
        assert.are.equal(2000, r.sent)
        assert.is_true(r.wall <= 1.15 * minimum(2000, limiter), ("%.3f s"):format(r.wall))
        -- and not by luck: faster than the limiter allows is impossible
        assert.is_true(r.wall >= minimum(2000, limiter) - 0.01)
      end)

      it(("300 calls at concurrency 16, 10/s burst 100 (the default), %g ms: no 429, within 1.15x"):format(ms),
        function()
          local limiter = { per_sec = 10, burst = 100 }
          local r = sim.run{ n = 300, concurrency = 16, limiter = limiter, latency = lat, jitter = 0.5, seed = 2 }
          assert.are.equal(0, r.failed)
          assert.are.equal(0, r.refused)
          assert.is_true(r.wall <= 1.15 * minimum(300, limiter), ("%.3f s"):format(r.wall))
        end)

      it(("300 calls at concurrency 16, 200/s burst 20 (the stub spec's scale), %g ms: within 1.15x"):format(ms),
        function()
          local limiter = { per_sec = 200, burst = 20 }
          local r = sim.run{ n = 300, concurrency = 16, limiter = limiter, latency = lat, jitter = 0.5, seed = 3 }
          assert.are.equal(0, r.failed)
          assert.are.equal(0, r.refused)
          assert.is_true(r.wall <= 1.15 * minimum(300, limiter), ("%.3f s"):format(r.wall))
        end)
    end

    it("holds across seeds and with answers in any order (jitter 1)", function()
      for seed = 1, 5 do
        local limiter = { per_sec = 100, burst = 50 }
        local r = sim.run{ n = 600, concurrency = 16, limiter = limiter, latency = 0.01, jitter = 1, seed = seed }
        assert.are.equal(0, r.failed)
        assert.are.equal(0, r.refused, "seed " .. seed)
        assert.is_true(r.wall <= 1.15 * minimum(600, limiter), ("seed %d: %.3f s"):format(seed, r.wall))
      end
    end)

    it("shares the bucket with another client behind the same address: no 429, the rest of the rate", function()
      for _, share in ipairs{ 10, 60 } do
        local others = {}
        for i = 0, 30 * share do others[#others + 1] = { at = i / share, count = 1 } end
        local r = sim.run{ n = 1000, concurrency = 16, limiter = { per_sec = 100, burst = 50 }, latency = 0.001,
                           jitter = 0.5, seed = 1, others = others }
        assert.are.equal(0, r.refused, share .. "/s")
        local least = (1000 - 50) / (100 - share)
        assert.is_true(r.wall <= 1.15 * least, ("%d/s: %.3f s"):format(share, r.wall))
      end
    end)

    it("single calls (concurrency 1) are paced the same way", function()
      local limiter = { per_sec = 50, burst = 10 }
      local r = sim.run{ n = 200, concurrency = 1, limiter = limiter, latency = 0.002, jitter = 0.5, seed = 4 }
      assert.are.equal(0, r.refused)
      assert.are.equal(1, r.max_inflight)
      assert.is_true(r.wall <= 1.15 * minimum(200, limiter), ("%.3f s"):format(r.wall))
    end)
  end)

  describe("without a limiter", function()
    it("never holds, keeps the caller's concurrency, and the batch takes what it took before", function()
      local r = sim.run{ n = 2000, concurrency = 16, latency = 0.02, seed = 5, trace = true }
      assert.are.equal(0, r.holds)
      assert.are.equal(16, r.cap_min)
      assert.are.equal(16, r.max_inflight)
      -- 2,000 / 16 round trips of 20 ms, as without a pacer
      assert.is_true(math.abs(r.wall - 2000 / 16 * 0.02) < 1e-6, ("%.6f s"):format(r.wall))
      -- the first 16 all go at once
      assert.are.equal(16, #events_of(r, "send", 0, 0))
    end)

    it("costs a few field accesses per request and allocates nothing", function()
      local p = pacer.new()
      local methods = getmetatable(p).__index
      local fields, accesses = {}, 0
      for k, v in pairs(p) do fields[k] = v end
      -- the same object seen through a counter of every field read and write
      local counted = setmetatable({}, {
        __index = function(_, k)
          accesses = accesses + 1
          local v = fields[k]
          if v == nil then v = methods[k] end
          return v
        end,
        __newindex = function(_, k, v) accesses = accesses + 1; fields[k] = v end,
      })
      local function request(q, now, status)
        assert.are.equal(0, q:delay(now))
        assert.are.equal(16, q:concurrency(16))
        q:sent(now)
        q:answered(now + 0.001, status)
      end
      request(counted, 0, 200)
      accesses = 0
      for i = 1, 100 do request(counted, i, i % 10 == 0 and 503 or 200) end
      -- per request: four method lookups; delay reads one field,
      -- concurrency one, sent and answered three each
      assert.is_true(accesses / 100 <= 12, accesses / 100 .. " accesses per request")
      -- network errors (no status) are no different
      accesses = 0
      counted:sent(1000)
      counted:answered(1000.5, nil)
      assert.is_true(accesses <= 8, accesses .. " accesses")

      -- no allocation: the garbage collector's count does not move
      local function cycle(q, now)
        q:delay(now)
        q:concurrency(16)
        q:sent(now)
        q:answered(now + 0.001, 200)
      end
      assert.are.equal(0, allocated(function(i) cycle(p, i) end))
    end)

    it("allocates nothing per request under a limiter either", function()
      local p = pacer.new()
      local server = sim.server{ per_sec = 1000, burst = 50 }
      local now = 0
      local function request()
        while p:delay(now) > 0 do now = now + p:delay(now) end
        p:sent(now)
        now = now + 0.0005
        p:answered(now, server(now))
      end
      assert.are.equal(0, allocated(request))
      assert.is_true(p:concurrency(16) < 16) -- it was limited all along
    end)
  end)

  describe("the budget", function()
    -- 1/s, burst 20: 10 requests handled at once leave 20, 19 ... 11,
    -- with Reset 1, 2 ... 10 s; the last handled comes back first.
    local function overtaken()
      local p = pacer.new()
      for _ = 1, 10 do p:sent(0) end
      p:answered(0.010, 200, 21, 11, 10)
      for i = 1, 9 do p:answered(0.010 + i / 1000, 200, 21, 21 - i, i) end
      return p
    end

    it("is what the last request handled left, not what the last answer says", function()
      local p, sent = overtaken(), 0
      while p:delay(0.02) == 0 and sent < 100 do p:sent(0.02); sent = sent + 1 end
      -- 11 left, one kept spare
      assert.are.equal(10, sent)
      assert.is_true(p:holding(0.02) > 0)
    end)

    it("grows back at the rate Reset guarantees", function()
      local p = overtaken()
      for _ = 1, 10 do p:sent(0.02) end
      -- one request in use and Reset 1: at least 1/s; 11 + 0.01 s of it,
      -- less 10 in flight, is 1.01: 0.99 s to the second one needed
      local w = p:delay(0.02)
      assert.is_true(math.abs(w - 0.99) < 1e-9, tostring(w))
      assert.is_true(math.abs(p:holding(0.02) - 0.99) < 1e-9)
      assert.are.equal(0, p:delay(0.02 + w))
    end)
  end)

  describe("a 429", function()
    -- Another client behind the same address takes every request the
    -- bucket holds from t = 5 s to 5.2 s: the pacer's requests then are
    -- refused, with Retry-After: 1.
    local limiter = { per_sec = 100, burst = 50 }
    local others = { { at = 5, count = 60 } }
    for i = 1, 40 do others[#others + 1] = { at = 5 + i * 0.005, count = 1 } end
    local function drained(lat)
      return sim.run{ n = 1000, concurrency = 16, limiter = limiter, latency = lat, jitter = 0.5, seed = 6,
                      trace = true, others = others }
    end

    for _, lat in ipairs{ 0.002, 0.02 } do
      it(("pauses the whole client until Retry-After, then one request goes alone: no herd (%g ms)"):format(
        lat * 1000), function()
        local r = drained(lat)
        assert.are.equal(0, r.failed)
        local refused = events_of(r, "refused")
        assert.is_true(#refused >= 1)
        local first = refused[1]
        assert.are.equal(1, first.extra) -- Retry-After
        local resume = first.t + first.extra
        -- nothing at all is sent during the pause, not only the refused request
        assert.are.same({}, events_of(r, "send", first.t, resume - 1e-9))
        -- concurrency is 1 meanwhile
        for _, e in ipairs(r.events) do
          if e.t > first.t and e.t < resume then assert.are.equal(1, e.cap) end
        end
        -- after it, one request, and nothing more until it is answered
        local sends = events_of(r, "send", resume)
        local probe_answer = events_of(r, "answer", sends[1].t)[1]
        assert.is_true(sends[2].t >= probe_answer.t)
        -- and no 429 afterwards: its answer restarted the budget
        assert.are.same({}, events_of(r, "refused", resume))
        -- the pause covered every request refused then
        for _, e in ipairs(refused) do assert.is_true(e.t < resume) end
      end)
    end

    it("costs the time the other client took, and about no more", function()
      local r = drained(0.02)
      -- the other client took at most 0.5 s + 0.2 s of the bucket
      assert.is_true(r.wall <= 1.15 * (minimum(1000, limiter) + 0.7), ("%.3f s"):format(r.wall))
    end)

    it("without Retry-After waits Reset; with neither, backs off from 1 s, doubling", function()
      local p = pacer.new()
      p:sent(0)
      p:answered(0.01, 429, 11, 0, 3, nil)
      assert.are.equal(3, p:delay(0.01))
      assert.are.equal(3, p:holding(0.01))
      assert.are.equal(1, p:concurrency(16))
      p = pacer.new()
      local now = 0
      for _, pause in ipairs{ 1, 2, 4, 8, 16, 32, 32 } do
        assert.are.equal(0, p:delay(now))
        p:sent(now)
        now = now + 0.01
        p:answered(now, 429) -- a proxy's 429: no headers at all
        assert.is_true(math.abs(p:delay(now) - pause) < 1e-9)
        now = now + pause
      end
      -- then an answer without a limiter: back to full speed at once
      p:sent(now)
      p:answered(now + 0.01, 200)
      assert.are.equal(0, p:delay(now + 0.01))
      assert.are.equal(16, p:concurrency(16))
    end)

    it("several refusals from one burst make one pause, not one each", function()
      local p = pacer.new()
      for _ = 1, 5 do p:sent(0) end
      p:answered(0.010, 429, 3, 0, 1, 1)
      p:answered(0.011, 429, 3, 0, 1, 1)
      p:answered(0.012, 429, 3, 0, 1, 1)
      -- the pause runs from the last of them; they do not add up
      assert.is_true(math.abs(p:delay(0.012) - 1) < 1e-9)
      assert.are.equal(0, p:delay(1.012))
    end)
  end)

  describe("concurrency", function()
    it("comes down while the server limits and goes back up when it stops", function()
      local limiter = { per_sec = 100, burst = 50 }
      local server = sim.server(limiter)
      local p = pacer.new()
      local r1 = sim.run{ n = 1000, concurrency = 16, limiter = limiter, server = server, pacer = p,
                          latency = 0.02, jitter = 0.5, seed = 7, trace = true }
      assert.are.equal(0, r1.refused)
      -- the first burst at 16, then what 100/s at 20 ms needs (2 in
      -- flight), doubled, plus one
      assert.are.equal(16, #events_of(r1, "send", 0, 0))
      local late = events_of(r1, "send", 5)
      for _, e in ipairs(late) do assert.is_true(e.cap <= 8, "cap " .. e.cap) end
      assert.are.equal(5, late[#late].cap)
      -- two seconds later the bucket is full again: the next batch starts at 16
      local r2 = sim.run{ n = 100, concurrency = 16, limiter = limiter, server = server, pacer = p,
                          latency = 0.02, jitter = 0.5, seed = 8, trace = true, start = r1.finish + 2 }
      assert.are.equal(0, r2.refused)
      assert.are.equal(16, #events_of(r2, "send", 0, 0))
      assert.are.equal(16, r2.max_inflight)
    end)

    it("after a pause grows back from 1 while the server still limits", function()
      -- the other client takes everything for long: 200 requests over 2 s
      local limiter = { per_sec = 100, burst = 50 }
      local others = {}
      for i = 0, 19 do others[#others + 1] = { at = 3 + i * 0.1, count = 10 } end
      local r = sim.run{ n = 800, concurrency = 16, limiter = limiter, latency = 0.05, jitter = 0.5, seed = 9,
                         trace = true, others = others }
      assert.are.equal(0, r.failed)
      local refused = events_of(r, "refused")
      assert.is_true(#refused >= 1)
      local caps, last = {}, nil
      for _, e in ipairs(events_of(r, "send", refused[1].t)) do
        if e.cap ~= last then caps[#caps + 1], last = e.cap, e.cap end
      end
      assert.are.equal(1, caps[1])
      assert.is_true(#caps >= 2)
      assert.is_true(caps[2] > 1)
    end)
  end)

  describe("odd servers", function()
    it("stays sane whatever the headers say", function()
      local odd = {
        { 200, 11, 50, 1 },              -- Remaining > Limit
        { 200, 11, -3, 1 },              -- negative
        { 200, 1e300, 1e300, 1e300 },    -- huge
        { 200, 11, 5, nil },             -- no Reset
        { 200, 11, 5, 0 },
        { 200, 0, 0, 1 },                -- Limit 0
        { 200, 1, 0, 1 },                -- no burst
        { 200, 0 / 0, 0 / 0, 0 / 0 },    -- NaN
        { 200, huge, -huge, huge, huge },
        { 200, "11", "5", "1" },         -- not numbers
        { 429, 11, 0, 1e300, 1e300 },
        { 429, 11, 0, -1, -1 },
        { 429, 11, 0, 0, 0 },
        { nil },                         -- no answer
        { 503, 11, 4, 2 },
        { 200, 11, 10.5, 0.4 },
      }
      local now = 0
      for round = 1, 3 do
        for i, h in ipairs(odd) do
          local p = pacer.new()
          for j = 1, #odd do
            local k = (i + j * round) % #odd + 1
            local a = odd[k]
            p:sent(now)
            now = now + 0.01
            p:answered(now, a[1], a[2], a[3], a[4], a[5])
            assert_sane(p, now, 16)
          end
          p:answered(now, h[1], h[2], h[3], h[4], h[5]) -- more answers than requests
          assert_sane(p, now, 16)
          -- and it lets requests go again in the end
          local t = now + p:delay(now)
          assert.are.equal(0, p:delay(t + 1e-6))
        end
      end
    end)

    local limiter = { per_sec = 200, burst = 20 }
    local cases = {
      { "never sends Reset", function(s, l, rem) return s, l, rem, nil, nil end, 0 },
      { "sends Remaining above Limit", function(s, l, rem, reset, ra) return s, l, rem + 1000, reset, ra end },
      { "overstates Remaining by 3", function(s, l, rem, reset, ra) return s, l, rem + 3, reset, ra end },
      { "sends negative Remaining", function(s, l, _, reset, ra) return s, l, -1, reset, ra end, 0 },
      { "sends absurd numbers", function(s, _, _, _, ra) return s, 1e300, 1e300, 1e300, ra end },
    }
    for _, c in ipairs(cases) do
      it("finishes the batch against a server that " .. c[1], function()
        local r = sim.run{ n = 300, concurrency = 16, limiter = limiter, latency = 0.005, jitter = 0.5, seed = 10,
                           distort = c[2] }
        assert.are.equal(0, r.failed)
        if c[3] then assert.are.equal(c[3], r.refused) end
      end)
    end

    it("paces a limiter with no burst (Limit 1) at one request per Reset", function()
      local r = sim.run{ n = 20, concurrency = 4, limiter = { per_sec = 2, burst = 0 }, latency = 0.005, jitter = 0.5,
                         seed = 11 }
      assert.are.equal(0, r.failed)
      -- the first burst of 4 finds out the limit: 3 refused, none later
      assert.are.equal(3, r.refused)
      assert.is_true(r.wall < 25, ("%.3f s"):format(r.wall))
    end)

    it("follows a quota lowered mid-batch", function()
      local fast, slow = sim.server{ per_sec = 100, burst = 50 }, sim.server{ per_sec = 20, burst = 10 }
      local switch = 3
      local p = pacer.new()
      local function handle(t)
        if t < switch then return fast(t) end
        return slow(t)
      end
      local r = sim.run{ n = 500, concurrency = 16, server = handle, pacer = p, latency = 0.01, jitter = 0.5,
                         seed = 12 }
      assert.are.equal(0, r.failed)
      assert.is_true(r.refused <= 16, r.refused .. " refused")
    end)
  end)
end)
