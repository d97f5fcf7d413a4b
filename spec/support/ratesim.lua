-- A virtual-time simulation of the client's request loop driving an
-- mm.pacer against a server that runs the stub's rate limiter
-- (stub/lua/mmstub/gcra.lua, the same arithmetic), for the pacer's spec.
--
-- The loop is the one the pacer's interface describes: before starting a
-- request it asks delay(now) and, when that is > 0, waits that long or
-- until an answer arrives, then asks again; it keeps at most
-- concurrency(max) requests in flight; a request refused with 429 goes
-- back to the front of the queue and is given up only when its time
-- waiting after 429s exceeds the budget. Each request takes half its
-- round trip to reach the server, which decides at that instant, and the
-- other half back; with jitter, answers overtake each other.
--
--   local sim = require "support.ratesim"
--   local r = sim.run{ n = 300, concurrency = 16, limiter = { per_sec = 10, burst = 100 },
--                      latency = 0.005, jitter = 0.5, seed = 1 }
--   -- r.wall, r.failed, r.refused, r.sent, r.max_inflight, r.events (with trace = true):
--   -- { t = seconds from the start, what = "send" | "hold" | "answer" | "refused",
--   --   inflight, cap = concurrency(max) then, extra = id | wait | Remaining | Retry-After }
package.path = "stub/lua/?.lua;" .. package.path
local gcra = require "mmstub.gcra"
local pacer = require "mm.pacer"

local M = {}

local floor, huge = math.floor, math.huge

--- Deterministic numbers in (0, 1) from a seed (Park-Miller), the same
-- on every Lua version.
function M.rng(seed)
  local s = floor(seed) % 2147483647
  if s == 0 then s = 1 end
  return function()
    s = (s * 48271) % 2147483647
    return s / 2147483647
  end
end

--- A server with Mattermost's limiter ({per_sec, burst}; nil: none):
-- returns handle(t) -> status, limit, remaining, reset, retry_after for
-- a request reaching it at time t (seconds). Its clock ticks in whole
-- milliseconds, as the stub's (ngx.now()) does.
function M.server(limiter)
  local tat
  return function(t)
    if not limiter then return 200 end
    local limited, new_tat, limit, remaining, reset, retry_after =
      gcra.check(limiter.per_sec, limiter.burst, tat, floor(t * 1e3) * 1e6)
    if not limited then tat = new_tat end
    return limited and 429 or 200, limit, remaining, reset, retry_after
  end
end

-- A binary heap of events ordered by time, then by insertion.
local function heap()
  local h, seq = {}, 0
  local function less(a, b) return a.t < b.t or (a.t == b.t and a.seq < b.seq) end
  local q = {}
  function q.push(ev)
    seq = seq + 1
    ev.seq = seq
    local i = #h + 1
    h[i] = ev
    while i > 1 do
      local p = floor(i / 2)
      if less(h[p], h[i]) then break end
      h[p], h[i] = h[i], h[p]
      i = p
    end
  end
  function q.top() return h[1] end
  function q.pop()
    local top, n = h[1], #h
    h[1] = h[n]
    h[n] = nil
    n = n - 1
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and less(h[l], h[m]) then m = l end
      if r <= n and less(h[r], h[m]) then m = r end
      if m == i then break end
      h[m], h[i] = h[i], h[m]
      i = m
    end
    return top
  end
  return q
end

--- Runs one batch. Options:
-- n, concurrency (the caller's maximum), limiter ({per_sec, burst} or nil),
-- latency (mean round trip, s), jitter (0..1: each half varies by up to
-- that fraction), seed, budget (s of waiting after 429s per request, 60),
-- pacer (default: a new one), start (the virtual time it starts at, 0),
-- server (a handle from M.server, or any function like it, to share a
-- bucket across runs), others ({ {at = t, count = k} }: requests of other
-- clients reaching the bucket at virtual time t), distort
-- (function(status, limit, remaining, reset, retry_after) returning them
-- as the client is to see them: odd servers), trace (record every send,
-- answer and wait in r.events).
-- Returns r: wall (s), finish (the virtual time it ended), failed,
-- refused (429s seen), sent, max_inflight, cap_min and cap_max
-- (concurrency(max) seen while requests waited), holds (times delay said
-- to wait), events.
function M.run(o)
  local n, max = o.n, o.concurrency
  local p = o.pacer or pacer.new()
  local handle = o.server or M.server(o.limiter)
  local rand = M.rng(o.seed or 1)
  local lat, jitter, budget = o.latency or 0.001, o.jitter or 0, o.budget or 60
  local function half() return lat / 2 * (1 - jitter + 2 * jitter * rand()) end
  local events = heap()
  for _, other in ipairs(o.others or {}) do events.push{ t = other.at, kind = "others", count = other.count } end
  local start = o.start or 0
  local now = start
  -- the queue: requests refused go back to its front (retry, in the order
  -- refused), then the rest in order
  local fresh, head, retry = n, 1, {}
  local inflight, done = 0, 0
  local r = { failed = 0, refused = 0, sent = 0, max_inflight = 0, cap_min = huge, cap_max = 0, holds = 0,
              events = o.trace and {} or nil }
  local function note(what, extra)
    if r.events then
      r.events[#r.events + 1] = { t = now - start, what = what, inflight = inflight, extra = extra,
                                  cap = p:concurrency(max) }
    end
  end
  local steps = 0
  while done < n do
    steps = steps + 1
    if steps > 2e5 then
      local state = {}
      for k, v in pairs(p) do
        if type(v) ~= "table" then state[#state + 1] = k .. "=" .. tostring(v) end
      end
      error(("simulation does not progress at t=%.6f, pacer: %s"):format(now, table.concat(state, " ")))
    end
    -- start what may start
    local wake = huge
    while #retry > 0 or head <= fresh do
      local cap = p:concurrency(max)
      if cap < r.cap_min then r.cap_min = cap end
      if cap > r.cap_max then r.cap_max = cap end
      assert(cap >= 1 and cap <= max and cap == floor(cap), "concurrency out of range: " .. tostring(cap))
      if inflight >= cap then break end
      local d = p:delay(now)
      assert(d >= 0 and d < huge, "bad delay: " .. tostring(d))
      if d > 0 then
        wake = now + d
        r.holds = r.holds + 1
        note("hold", d)
        break
      end
      local req
      if #retry > 0 then
        req = table.remove(retry, 1)
        req.waited = req.waited + (now - req.refused_at)
      else
        req = { id = head, waited = 0 }
        head = head + 1
      end
      if req.waited > budget then
        r.failed, done = r.failed + 1, done + 1
      else
        p:sent(now)
        inflight, r.sent = inflight + 1, r.sent + 1
        if inflight > r.max_inflight then r.max_inflight = inflight end
        note("send", req.id)
        events.push{ t = now + half(), kind = "arrive", req = req }
      end
    end
    if done >= n then break end
    local ev = events.top()
    if not ev or wake < ev.t then
      assert(wake < huge, "simulation stalled: nothing in flight and no wait")
      now = wake
    else
      events.pop()
      now = ev.t
      if ev.kind == "others" then
        for _ = 1, ev.count do handle(now) end
      elseif ev.kind == "arrive" then
        local status, limit, remaining, reset, retry_after = handle(now)
        if o.distort then
          status, limit, remaining, reset, retry_after = o.distort(status, limit, remaining, reset, retry_after)
        end
        events.push{ t = now + half(), kind = "answer", req = ev.req, status = status, limit = limit,
                     remaining = remaining, reset = reset, retry_after = retry_after }
      else
        inflight = inflight - 1
        p:answered(now, ev.status, ev.limit, ev.remaining, ev.reset, ev.retry_after)
        -- refused: the Retry-After; answered: the Remaining
        note(ev.status == 429 and "refused" or "answer", ev.status == 429 and ev.retry_after or ev.remaining)
        if ev.status == 429 then
          r.refused = r.refused + 1
          ev.req.refused_at = now
          retry[#retry + 1] = ev.req
        else
          done = done + 1
        end
      end
    end
  end
  r.wall = now - start
  r.finish = now
  return r
end

return M
