-- throttled's GCRA (github.com/throttled/throttled/v2, rate.go) as
-- Mattermost's RateLimiter uses it (§1.3, case 44), with the header values
-- setRateLimitHeaders derives from its result (app/ratelimit.go). Pure Lua
-- with no state of its own: the stub keeps the bucket in a shared dict
-- (api.lua), the client's pacer spec in a simulated server
-- (spec/support/ratesim.lua), so both run the same arithmetic.
--
-- RateQuota{MaxRate: PerSec(per_sec), MaxBurst: burst}: the emission
-- interval is a second / per_sec, the delay variation tolerance burst + 1
-- intervals, Limit burst + 1. Times are whole nanoseconds, as Go's are:
-- in seconds as floats, a burst sent within one instant loses its last
-- request to rounding (51 * 0.01 > 0.51). Callers count them from a recent
-- origin, so they stay exact in a double (below 2^53 ns, about 104 days).
local M = {}

local floor, ceil = math.floor, math.ceil

--- One request at time `now` (ns) against a bucket whose theoretical
-- arrival time is `tat` (ns; nil: no bucket yet, or it expired).
-- @return limited (boolean); the bucket's new tat (nil when limited: a
-- refused request changes nothing); then the header values: limit,
-- remaining, reset (whole seconds, rounded up) and retry_after (whole
-- seconds, rounded up; nil unless limited, RetryAfter being -1 then)
function M.check(per_sec, burst, tat, now)
  local emission = floor(1e9 / per_sec)   -- time.Second / time.Duration(n)
  local dvt = emission * (burst + 1)
  tat = tat or now
  local new_tat = (tat > now and tat or now) + emission
  local diff = now - (new_tat - dvt)
  local limited, ttl, retry_after = diff < 0, new_tat - now, nil
  if limited then ttl, retry_after = tat - now, ceil(-diff / 1e9) end
  -- int(next / emission) when next > -emission, else 0; Go's integer
  -- division truncates, so next in (-emission, 0) gives 0 as well
  local remaining, next_ = 0, dvt - ttl
  if next_ > 0 then remaining = floor(next_ / emission) end
  return limited, not limited and new_tat or nil, burst + 1, remaining, ceil(ttl / 1e9), retry_after
end

return M
