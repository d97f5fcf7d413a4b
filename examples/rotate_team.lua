-- Rotate the token of every custom slash command of a team, recording each
-- the moment its answer arrives. The new tokens are secrets: this example
-- shows only how they end, as a log should.
-- Usage: MM_URL=... MM_TOKEN=... lua5.4 examples/rotate_team.lua TEAM_ID
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
os.exit(#failed == 0 and 0 or 1)
