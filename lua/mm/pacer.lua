--- Pacing for the server's rate limiter (placeholder: pauses the client
-- as a whole after a 429 until Retry-After; the full pacer replaces it).
-- @module mm.pacer
local M = {}

local Pacer = {}
Pacer.__index = Pacer

-- `active` stays false until a server shows a limiter: the client then
-- skips the pacer entirely.
function M.new() return setmetatable({ pause_until = 0, active = false }, Pacer) end

function Pacer:delay(now)
  local d = self.pause_until - now
  return d > 0 and d or 0
end

function Pacer.sent() end

function Pacer:answered(now, status, limit, _, _, retry_after)
  if limit or status == 429 then self.active = true end
  if status == 429 then self.pause_until = now + (retry_after or 1) end
end

function Pacer.concurrency(_, max) return max end

function Pacer:holding(now) return self:delay(now) end

return M
