-- Commands routes (api-contract.md §3, api-contract-families.md §3):
-- PUT /api/v4/commands/{id}/regen_token.
local api = require "mmstub.api"
local state = require "mmstub.state"
local json = require "mmstub.json"

local M = {}

local app_error, permission_error = api.app_error, api.permission_error

api.add_messages{
  ["store.sql_command.save.get.app_error"] = "Unable to get the command.",
}

-- PUT /api/v4/commands/{command_id}/regen_token (§3.2)
local function regen_token(ctx, session, id)
  if not state.is_valid_id(id) then
    return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "command_id")
  end
  local cmd = state.command(id)
  local function not_found() return app_error(ctx, 404, "store.sql_command.save.get.app_error", "") end
  -- Disabled commands, unknown and deleted ones all end in SetCommandNotFoundError.
  if not ctx.cfg.enable_commands or not cmd or cmd.delete_at ~= 0 then return not_found() end
  -- No manage_own on the team: 404, so the command's existence does not leak.
  if not state.has_team_permission(session, cmd.team_id, "manage_own_slash_commands") then
    return not_found()
  end
  if session.user_id ~= cmd.creator_id
     and not state.has_team_permission(session, cmd.team_id, "manage_others_slash_commands") then
    return permission_error(ctx, session, "manage_others_slash_commands")
  end
  cmd.token = state.new_id()
  cmd.update_at = state.now_ms() -- the store's Update
  state.save_command(cmd)
  -- model.MapToJSON + w.Write: no trailing newline (§3.2 step 7)
  return api.reply(ctx, 200, '{"token":' .. json.string(cmd.token) .. "}")
end

M.routes = {
  { "PUT", "^/api/v4/commands/([A-Za-z0-9]+)/regen_token$", regen_token },
}

return M
