-- Rotate the token of every custom slash command of a team, recording each
-- the moment its answer arrives. The new tokens are secrets: this example
-- shows only how they end, as a log should.
--
-- From the top of a checkout, after `make` (for Lua 5.4; for another Lua,
-- its interpreter and its build: make LUA_VERSION=5.3 builds build/lua5.3):
--   export LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/lua5.4/?.so;;'
--   MM_URL=https://chat.example.com MM_TOKEN=... lua5.4 examples/rotate_team.lua TEAM_ID
-- With mm installed (make install, luarocks), the second line alone.
local function main()
  local mm = require "mm"
  local team = arg[1]
  if not team then
    io.stderr:write("usage: rotate_team.lua TEAM_ID\n")
    os.exit(2)
  end

  local rotated, failed = mm.rotate_team_tokens(team, {
    on_result = function(cmd, token, err)
      if token then
        print(("/%s (%s): new token ending ...%s"):format(cmd.trigger, cmd.id, token:sub(-4)))
      else
        print(("%s: %s"):format(cmd.id, tostring(err)))
      end
    end,
  })
  if not rotated then
    io.stderr:write("cannot list the team's commands: ", tostring(failed), "\n")
    os.exit(1)
  end
  print(("%d rotated, %d failed"):format(#rotated, #failed))
  return #failed == 0 and 0 or 1
end

-- mm raises on mistakes (no MM_URL, a malformed id), as require does
-- without the module: said in one line, without Lua's position or traceback.
local ok, status = pcall(main)
if not ok then
  status = tostring(status):gsub("^[^%s:]+:%d+: ", ""):gsub("\n%s*", " ")
  io.stderr:write("rotate_team.lua: ", status, "\n")
  os.exit(1)
end
os.exit(status)
