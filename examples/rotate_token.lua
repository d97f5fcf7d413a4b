-- Rotate slash-command tokens. The new tokens are secrets: this example
-- shows only their length and how they end, as a log should.
--
-- From the top of a checkout, after `make` (for Lua 5.4; for another Lua,
-- its interpreter and its build: make LUA_VERSION=5.3 builds build/lua5.3):
--   export LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/lua5.4/?.so;;'
--   MM_URL=https://chat.example.com MM_TOKEN=... lua5.4 examples/rotate_token.lua COMMAND_ID [COMMAND_ID ...]
-- With mm installed (make install, luarocks), the second line alone.
local function main()
  local mm = require "mm"
  if #arg == 0 then
    io.stderr:write("usage: rotate_token.lua COMMAND_ID [COMMAND_ID ...]\n")
    os.exit(2)
  end

  local function shown(token) return ("%d characters, ending ...%s"):format(#token, token:sub(-4)) end

  if #arg == 1 then
    local token, err = mm.regen_token(arg[1])
    if not token then
      io.stderr:write("rotation failed: ", tostring(err), "\n")
      os.exit(1)
    end
    print(("command %s: new token (%s)"):format(arg[1], shown(token)))
    return 0
  end
  local results, failed = mm.regen_tokens(arg, { concurrency = 8 })
  for i, id in ipairs(arg) do
    local r = results[i]
    print(("command %s: %s"):format(id, mm.is_error(r) and tostring(r) or "new token (" .. shown(r) .. ")"))
  end
  return failed > 0 and 1 or 0
end

-- mm raises on mistakes (no MM_URL, a malformed id), as require does
-- without the module: said in one line, without Lua's position or traceback.
local ok, status = pcall(main)
if not ok then
  status = tostring(status):gsub("^[^%s:]+:%d+: ", ""):gsub("\n%s*", " ")
  io.stderr:write("rotate_token.lua: ", status, "\n")
  os.exit(1)
end
os.exit(status)
