-- Rotate slash-command tokens. The new tokens are secrets: this example
-- shows only their length and how they end, as a log should.
-- Usage: MM_URL=... MM_TOKEN=... lua5.4 examples/rotate_token.lua COMMAND_ID [COMMAND_ID ...]
local mm = require "mm"

if #arg == 0 then
  io.stderr:write("usage: rotate_token.lua COMMAND_ID [COMMAND_ID ...]\n")
  os.exit(2)
end

local function shown(token) return ("%d characters, ending ...%s"):format(#token, token:sub(-4)) end

local status = 0
if #arg == 1 then
  local token, err = mm.regen_token(arg[1])
  if not token then
    io.stderr:write("rotation failed: ", tostring(err), "\n")
    os.exit(1)
  end
  print(("command %s: new token (%s)"):format(arg[1], shown(token)))
else
  local results, failed = mm.regen_tokens(arg, { concurrency = 8 })
  for i, id in ipairs(arg) do
    local r = results[i]
    print(("command %s: %s"):format(id, mm.is_error(r) and tostring(r) or "new token (" .. shown(r) .. ")"))
  end
  if failed > 0 then status = 1 end
end
os.exit(status)
