--- Pacing a client's requests to the server's rate limiter.
--
-- Mattermost's limiter (throttled's GCRA) is a bucket of
-- `X-Ratelimit-Limit` requests refilled at a rate no header states. An
-- answer's `X-Ratelimit-Remaining` is what the bucket held when its
-- request was handled; `X-Ratelimit-Reset` and `Retry-After` are whole
-- seconds, rounded up.
--
-- **Budget.** Answers come back out of the order the server handled their
-- requests; the one handled last shows the lowest `Remaining` once each is
-- projected to now at the estimated rate. The lowest projection of the
-- last two latencies, capped at the limit, less the requests in flight,
-- is the budget: a request goes when it holds one more and one spare.
-- Every answer renews it, so an underestimated rate costs little (what it
-- leaves shows in the next `Remaining`), and 429s stay the exception.
--
-- **Rate.** Estimated low: at least `max(used - 1, 1) / Reset` (tight for
-- slow limiters; only 50/s for 100/s burst 50, whose Reset is always
-- 1), or what `Remaining` plus the requests answered gained over the last
-- 2 s (the rate left to this client by others sharing its address),
-- whichever is higher.
--
-- **429.** Pauses the whole client until `Retry-After` (or `Reset`, or a
-- backoff from 1 s when neither came) and forgets the estimates; then one
-- request goes alone, and its answer restarts the budget: no herd.
--
-- **Concurrency.** While the budget holds requests back, twice the mean in
-- flight (Little's law) plus one, doubling wherever it binds; the
-- caller's maximum again once `Remaining` is back over half the limit.
--
-- Known limits: with no burst (Limit 1) the rate shows only through 429s,
-- so requests go one per `Reset`; with a burst below the rate times the
-- round trip, at most Limit - 1 requests fly and the rate is not reached.
--
-- Until an answer carries the headers it costs a few field accesses per
-- request; it never allocates after `new`. No I/O, no clock (times are
-- passed in, seconds from a monotonic clock), no globals.
-- @module mm.pacer
-- @usage
-- local p = require("mm.pacer").new()
-- local wait = p:delay(now)          -- 0: send one request now
-- p:sent(now)
-- p:answered(now, 200, 101, 57, 5)   -- status and the limiter's headers
local M = {}

local Pacer = {}
Pacer.__index = Pacer

local huge, floor, ceil = math.huge, math.floor, math.ceil

local ANCHORS = 8            -- rate-estimate anchors kept ...
local SPACING = 0.25         -- ... one per this many seconds: windows up to 2 s
local WINDOW = 0.1           -- the lowest Remaining is kept this long (s) until
local MIN_WINDOW = 0.005     -- the latency is known, then two latencies (at least this)
local LATENCY_SAMPLES = 16   -- answers per latency measurement
local FALLBACK_RATE = 1      -- requests/s when neither Reset nor a window tells
local BACKOFF, MAX_BACKOFF = 1, 32 -- pause after a 429 that says nothing (s), doubling
local MIN_PAUSE = 0.05       -- a 429 with Retry-After: 0 still pauses this long
local MAX_COUNT = 1e9        -- larger Limit/Remaining values are not believed
local MAX_SECONDS = 86400    -- nor larger Reset/Retry-After values

-- A count header: a whole number from 0 to MAX_COUNT (a negative one is
-- an overdrawn bucket: 0), or nil. NaN fails every comparison.
local function count(v)
  if type(v) == "number" and v <= MAX_COUNT then
    if v >= 0 then return floor(v) end
    if v >= -MAX_COUNT then return 0 end
  end
  return nil
end

local function seconds(v)
  if type(v) == "number" and v >= 0 and v <= MAX_SECONDS then return v end
  return nil
end

-- Drop what was learnt about the rate.
local function forget(self)
  self.r_lo, self.r_hi, self.rate = 0, huge, 0
  self.anchors, self.next_anchor, self.t_anchor = 0, 1, -huge
end

-- A new limiter (or a new quota): start over.
local function set_limit(self, limit)
  forget(self)
  self.limit = limit
  -- one spare request; none with no burst (Limit 1), which could never go
  self.margin = limit >= 3 and 1 or (limit - 1) / 2
end

-- The concurrency to allow now.
local function recap(self)
  if self.probe then
    self.cap = 1
  elseif self.limited and self.busy > 0 then
    -- twice what the budget let fly: where the cap bound instead, it
    -- doubles each measure, as a TCP window does
    self.cap = ceil(2 * self.busy) + 1
  else
    self.cap = huge
  end
end

--- A new pacer, for one client.
-- @treturn table the pacer
function M.new()
  local self = setmetatable({
    fast = true,        -- no limiter seen, no pause: every method returns at once
    inflight = 0,
    cap = huge,         -- the concurrency allowed (huge: the caller's maximum)
    gate = -huge,       -- nothing goes before this time (a 429's pause)
    probe = false,      -- after a pause one request goes alone, until answered
    strikes = 0,        -- 429s in a row, for the backoff when they say nothing
    limited = false,    -- the budget holds requests back (or a 429 did)
    limit = 0,          -- X-Ratelimit-Limit (0: none seen)
    margin = 0,
    taken = 0,          -- requests that took from the bucket, by the answers
    q_new = huge,       -- the lowest Remaining in this window (projected) ...
    t_new = 0,          -- ... and when it was seen
    q_old = huge,       -- the same for the window before
    t_old = 0,
    t_window = -huge,   -- when this window began
    latency = 0,        -- seconds a request is in flight (0: not measured)
    busy = 0,           -- requests in flight on average (0: not measured)
    area = 0,           -- requests in flight integrated over time ...
    t_event = 0,        -- ... up to this time
    t_block = 0,        -- ... since this one
    samples = 0,        -- answers in area
    at = {},            -- anchors of the rate estimate: time, and an upper
    ay = {},            -- bound of answered + in flight + Remaining then
  }, Pacer)
  for i = 1, ANCHORS do self.at[i], self.ay[i] = 0, 0 end
  forget(self)
  return self
end

-- The lowest Remaining of the last two windows, projected to now.
local function level(self, now, rate)
  local z, z_old = self.q_new + rate * (now - self.t_new), self.q_old + rate * (now - self.t_old)
  if z_old < z then return z_old end
  return z
end

-- A Remaining seen at now.
local function observe(self, now, q)
  local w = self.latency > 0 and 2 * self.latency or WINDOW
  if w < MIN_WINDOW then w = MIN_WINDOW end
  if now - self.t_window >= w then
    self.q_old, self.t_old = self.q_new, self.t_new
    self.q_new, self.t_new, self.t_window = q, now, now
  elseif q < self.q_new + self.rate * (now - self.t_new) then
    self.q_new, self.t_new = q, now
  end
end

-- Seconds until one more request may go: the pause, then the budget.
local function wait(self, now)
  local w = self.gate - now
  if w > 0 then return w end
  local limit = self.limit
  -- no budget known, or the probe after a pause (concurrency keeps it alone)
  if limit == 0 or self.probe then return 0 end
  local need, rate = 1 + self.margin, self.rate
  if rate <= 0 then rate = FALLBACK_RATE end
  local have = level(self, now, rate)
  if have > limit then have = limit end
  have = have - self.inflight
  -- (a wait computed from this very formula ends a rounding error short)
  if have >= need - 1e-9 then return 0 end
  -- when need > limit only answers can help; this waits for them at most
  return (need - have) / rate
end

--- Seconds to hold before asking again (0: one request may be sent now).
-- @tparam number now the time, seconds (monotonic)
-- @treturn number 0, or seconds to wait (or until an answer arrives)
function Pacer:delay(now)
  if self.fast then return 0 end
  local w = wait(self, now)
  if w > 0 then
    if not self.limited then
      self.limited = true
      recap(self)
    end
  elseif self.limited and not self.probe and self.limit > 0
         and level(self, now, self.rate) >= self.limit / 2 then
    -- the bucket has filled up again (after a pause in the work, say)
    self.limited = false
    recap(self)
  end
  return w
end

--- A request was just sent (right after `delay(now)` returned 0).
-- @tparam number now the time, seconds
function Pacer:sent(now)
  local n = self.inflight
  self.inflight = n + 1
  if self.fast then return end
  self.area = self.area + n * (now - self.t_event)
  self.t_event = now
end

-- An answer with the limiter's headers that took a request from the bucket.
local function took(self, now, limit, remaining, reset)
  if limit ~= self.limit then set_limit(self, limit) end
  if remaining > limit then remaining = limit end
  local taken = self.taken + 1
  self.taken, self.strikes = taken, 0
  -- Reset = ceil(used / rate), the bucket's use after this request being
  -- in (limit - remaining - 1, limit - remaining] and at least 1
  local r_lo, r_hi = self.r_lo, self.r_hi
  if reset and reset > 0 then
    local used = limit - remaining
    local lo = (used > 2 and used - 1 or 1) / reset
    local hi = reset > 1 and used / (reset - 1) or huge
    if lo > r_hi or hi < r_lo then
      r_lo, r_hi = lo, hi -- contradicts what was learnt: the quota changed
    else
      if lo > r_lo then r_lo = lo end
      if hi < r_hi then r_hi = hi end
    end
    self.r_lo, self.r_hi = r_lo, r_hi
  end
  -- taken + Remaining grows at the refill rate: from each anchor's upper
  -- bound of it to a lower bound now (the request handled last took all
  -- those answered), over the span plus a latency (for where in its flight
  -- each request was handled), it gives a rate that errs low
  observe(self, now, remaining)
  local y, best, lat, at, ay = taken + level(self, now, self.rate), 0, self.latency, self.at, self.ay
  for i = 1, self.anchors do
    local span = now - at[i]
    if span >= SPACING then
      local r = (y - ay[i]) / (span + lat)
      if r > best then best = r end
    end
  end
  if now - self.t_anchor >= SPACING then
    local i = self.next_anchor
    at[i], ay[i] = now, taken + self.inflight + remaining + 1
    self.next_anchor = i < ANCHORS and i + 1 or 1
    if self.anchors < ANCHORS then self.anchors = self.anchors + 1 end
    self.t_anchor = now
  end
  local rate = r_lo > best and r_lo or best
  if rate > r_hi then rate = r_hi end
  self.rate = rate > 0 and rate or FALLBACK_RATE
  if self.probe and now >= self.gate then self.probe = false end
  if self.limited and not self.probe and remaining >= limit / 2 then self.limited = false end
  recap(self)
end

-- A 429: pause the whole client.
local function refused(self, now, limit, reset, retry_after)
  if now >= self.gate then
    -- a new refusal, not another of those in flight when the first came
    self.strikes = self.strikes + 1
    forget(self)
    self.probe, self.limited = true, true
    recap(self)
  end
  local pause = retry_after or reset
  if not pause then
    pause = BACKOFF * 2 ^ (self.strikes - 1)
    if pause > MAX_BACKOFF then pause = MAX_BACKOFF end
  elseif pause < MIN_PAUSE then
    pause = MIN_PAUSE
  end
  if now + pause > self.gate then self.gate = now + pause end
  if limit then
    if limit ~= self.limit then set_limit(self, limit) end
    if reset and reset > 0 and limit > 1 then
      -- refused: more than limit - 1 in use, and Reset is their time
      local lo = (limit - 1) / reset
      if lo > self.r_lo and lo <= self.r_hi then self.r_lo = lo end
    end
  end
  if self.limit > 0 then observe(self, now, 0) end -- Remaining 0
end

-- An answer without usable limiter headers.
local function unmetered(self, now, status)
  if status and status >= 200 and status < 300 then
    self.strikes = 0
    if now >= self.gate then
      -- the server answers without a limiter: it has none (any more)
      self.fast, self.limited, self.probe, self.limit = true, false, false, 0
      forget(self)
      recap(self)
      return
    end
  end
  -- a network error or an odd answer: its request may have reached the
  -- server and taken from the bucket
  self.taken = self.taken + 1
  if self.limit > 0 then observe(self, now, level(self, now, self.rate) - 1) end
end

-- The answered() path once a limiter (or a 429) has been seen.
local function update(self, now, n, status, limit, remaining, reset, retry_after)
  if self.fast then
    self.fast, self.t_event, self.t_block, self.area, self.samples = false, now, now, 0, 0
  end
  -- Little's law: the mean in flight is area / time, the latency area /
  -- answers
  local area = self.area + n * (now - self.t_event)
  local samples = self.samples + 1
  self.t_event = now
  if samples >= LATENCY_SAMPLES and now > self.t_block then
    local w = area / samples
    self.latency = self.latency > 0 and (self.latency + w) / 2 or w
    self.busy = area / (now - self.t_block)
    samples, area, self.t_block = 0, 0, now
  end
  self.area, self.samples = area, samples
  limit, remaining = count(limit), count(remaining)
  if limit and limit < 1 then limit = nil end
  reset, retry_after = seconds(reset), seconds(retry_after)
  if status == 429 then return refused(self, now, limit, reset, retry_after) end
  if limit and remaining then return took(self, now, limit, remaining, reset) end
  return unmetered(self, now, status)
end

--- A request finished.
-- @tparam number now the time, seconds
-- @tparam ?number status the HTTP status; nil when no answer came
-- (network error, timeout)
-- @tparam ?number limit `X-Ratelimit-Limit`, nil when absent
-- @tparam ?number remaining `X-Ratelimit-Remaining`, nil when absent
-- @tparam ?number reset `X-Ratelimit-Reset` (seconds), nil when absent
-- @tparam ?number retry_after `Retry-After` (seconds), nil when absent
function Pacer:answered(now, status, limit, remaining, reset, retry_after)
  local n = self.inflight
  if n > 0 then self.inflight = n - 1 end
  if self.fast and limit == nil and status ~= 429 then return end
  return update(self, now, n, status, limit, remaining, reset, retry_after)
end

--- The number of requests to keep in flight now.
-- @tparam number max the caller's concurrency (at least 1)
-- @treturn number from 1 to `max`: lower while the server limits
function Pacer:concurrency(max)
  local c = self.cap
  if c < max then return c end
  return max
end

--- Seconds the client is holding back for the rate limiter (0 when it
-- is not), for a status line.
-- @tparam number now the time, seconds
-- @treturn number seconds
function Pacer:holding(now)
  if self.fast then return 0 end
  return wait(self, now)
end

return M
