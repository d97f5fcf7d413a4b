-- Assertions shared by the client specs.
local assert = require "luassert" -- busted gives it to specs only, not to modules

local M = {}

-- f(...) must raise a string error matching `pattern` (Lua pattern).
function M.raises(pattern, f, ...)
  local ok, msg = pcall(f, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_string(msg)
  assert.matches(pattern, msg)
end

return M
