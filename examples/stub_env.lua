-- Prints shell assignments for the demo from the stub server's fixtures:
-- MM_URL, MM_TOKEN (the stub's sysadmin) and command ids.
local http = require "socket.http"
local cjson = require "cjson"

local url = assert(os.getenv("MM_STUB_URL"), "MM_STUB_URL is not set: run under bin/mm-stub run")
local body, status = http.request(url .. "/__stub/fixtures")
assert(status == 200, "cannot read the stub's fixtures: " .. tostring(status))
local fx = cjson.decode(body)
print("MM_URL='" .. url .. "'")
print("MM_TOKEN='" .. fx.users.sysadmin.token .. "'")
print("MM_COMMAND_ID='" .. fx.commands.C_admin.id .. "'")
print("MM_COMMAND_ID2='" .. fx.commands.C_other.id .. "'")
print("MM_DELETED_ID='" .. fx.commands.C_deleted.id .. "'")
print("MM_TEAM_ID='" .. fx.teams.T.id .. "'")
