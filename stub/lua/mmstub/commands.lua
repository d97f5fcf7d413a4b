-- Commands routes (api-contract.md §3, api-contract-families.md §3): create,
-- list, autocomplete, suggestions, get, update, delete, move, regen_token;
-- execute lives in execute.lua. Each handler follows the contract's
-- processing order; the numbered steps refer to its sections.
local api = require "mmstub.api"
local state = require "mmstub.state"
local json = require "mmstub.json"
local builtins = require "mmstub.builtins"
local execute = require "mmstub.execute"

local M = {}

local app_error, permission_error = api.app_error, api.permission_error

api.add_messages{
  ["store.sql_command.save.get.app_error"] = "Unable to get the command.",
  ["api.command.disabled.app_error"] = "Commands have been disabled by the system admin.",
  ["api.command.duplicate_trigger.app_error"] = "This trigger word is already in use. Please choose another word.",
  ["api.command.team_mismatch.app_error"] = "Unable to update commands across teams.",
  ["api.command.move_command.creator_no_permission.app_error"] = "No permission to move command",
  ["app.command.createcommand.internal_error"] = "Unable to save the command.",
  ["app.team.get.find.app_error"] = "Unable to find the existing team.",
  ["app.user.missing_account.const"] = "Unable to find the user.",
  ["model.command.is_valid.id.app_error"] = "Invalid Id.",
  ["model.command.is_valid.token.app_error"] = "Invalid token.",
  ["model.command.is_valid.create_at.app_error"] = "Create at must be a valid time.",
  ["model.command.is_valid.update_at.app_error"] = "Update at must be a valid time.",
  ["model.command.is_valid.plugin_id.app_error"] = "Invalid plugin id.",
  ["model.command.is_valid.user_id.app_error"] = "Invalid user id.",
  ["model.command.is_valid.team_id.app_error"] = "Invalid team ID.",
  ["model.command.is_valid.trigger.app_error"] = "Invalid trigger.",
  ["model.command.is_valid.url.app_error"] = "Invalid URL.",
  ["model.command.is_valid.url_http.app_error"] =
    "Invalid URL. Must be a valid URL and start with http:// or https://.",
  ["model.command.is_valid.method.app_error"] = "Invalid Method.",
  ["model.command.is_valid.display_name.app_error"] = "Invalid title.",
  ["model.command.is_valid.description.app_error"] = "Invalid description.",
}

-- ---------------------------------------------------------------- model rules

-- model.IsValidPluginId: 3-190 characters of [a-zA-Z0-9-_.].
local function is_valid_plugin_id(v)
  return #v >= 3 and #v <= 190 and not v:find("[^%w%-_%.]")
end

-- Go's url.ParseRequestURI as far as IsValidHTTPURL needs it [utils.go]:
-- no control bytes, an authority with a non-empty host of allowed
-- characters, an optional numeric port, valid %-escapes.
local function parses_with_host(url)
  if url:find("[%z\1-\31\127]") then return false end
  local rest = url:match("^https?://(.*)$"):gsub("%?.*$", "")
  local authority, path = rest:match("^([^/]*)(.*)$")
  local function escapes_ok(s) return not s:gsub("%%%x%x", ""):find("%%") end
  if not escapes_ok(path) then return false end
  local hostport = authority:gsub("^.*@", "")
  local host, port = hostport:match("^(%[.*%])(.*)$")
  if not host then host, port = hostport:match("^([^:]*)(.*)$") end
  if host == "" or not (port == "" or port:match("^:%d*$")) then return false end
  return escapes_ok(host) and not host:gsub("%%%x%x", ""):find("[^%w%-%._~!%$&'%(%)%*%+,;=%[%]:<>\"]")
end

--- model.IsValidHTTPURL [utils.go].
local function is_valid_http_url(url)
  return (url:sub(1, 7) == "http://" or url:sub(1, 8) == "https://") and parses_with_host(url)
end

--- Command.IsValid, in its order (families §3.1): the error id of the
-- first rule broken, or nil. The trigger rule is the newest one, with
-- ^[A-Za-z0-9_./-]+$ *(fork only: model/command.go)*.
function M.invalid(c)
  local function is(field) return "model.command.is_valid." .. field .. ".app_error" end
  if not state.is_valid_id(c.id) then return is("id") end
  if #c.token ~= 26 then return is("token") end
  if c.create_at == 0 then return is("create_at") end
  if c.update_at == 0 then return is("update_at") end
  if c.creator_id == "" and not is_valid_plugin_id(c.plugin_id) then return is("plugin_id") end
  if c.plugin_id == "" and not state.is_valid_id(c.creator_id) then return is("user_id") end
  if c.creator_id ~= "" and c.plugin_id ~= "" then return is("plugin_id") end
  if not state.is_valid_id(c.team_id) then return is("team_id") end
  local t = c.trigger
  if #t < 1 or #t > 128 or t:sub(1, 1) == "/" or t:find("[^%w_%./%-]") then return is("trigger") end
  if c.url == "" or #c.url > 1024 then return is("url") end
  if not is_valid_http_url(c.url) then return is("url_http") end
  if c.method ~= "P" and c.method ~= "G" then return is("method") end
  if #c.display_name > 64 then return is("display_name") end
  if #c.description > 128 then return is("description") end
end

--- Command.Sanitize: a copy without token, creator_id, method, url,
-- username, icon_url.
local function sanitized(c)
  local out = {}
  for k, v in pairs(c) do out[k] = v end
  out.token, out.creator_id, out.method, out.url, out.username, out.icon_url = "", "", "", "", "", ""
  return out
end

--- validateCommandTriggerUniqueness (§3.1): the lower-cased trigger is a
-- built-in's or a live command's of the team other than `except_id`.
function M.trigger_taken(team_id, trigger, except_id)
  trigger = trigger:lower()
  if builtins.registered(trigger) then return true end
  for _, c in ipairs(state.team_commands(team_id)) do
    if c.id ~= except_id and c.trigger:lower() == trigger then return true end
  end
  return false
end

-- ---------------------------------------------------------------- shared steps

local team_perm = state.has_team_permission

local function not_found(ctx) return app_error(ctx, 404, "store.sql_command.save.get.app_error", "") end

local function bad_command_id(ctx)
  return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "command_id")
end

--- App.GetCommand: the live command, or nil when it is missing, deleted or
-- commands are disabled (the handlers turn any of these into 404).
local function live_command(ctx, id)
  if not ctx.cfg.enable_commands then return nil end
  local c = state.command(id)
  if c and c.delete_at == 0 then return c end
end

--- The two checks of update, delete, move and regen (§3.7-3.9): no
-- manage_own on the command's team -> 404 (nothing leaks); not the creator
-- and no manage_others -> 403. Returns an error response or nil.
local function may_manage(ctx, session, c)
  if not team_perm(session, c.team_id, "manage_own_slash_commands") then return not_found(ctx) end
  if session.user_id ~= c.creator_id and not team_perm(session, c.team_id, "manage_others_slash_commands") then
    return permission_error(ctx, session, "manage_others_slash_commands")
  end
end

--- The live command `id`, if the session may manage it (may_manage): the
-- command, or nil and the 404 or may_manage's error.
local function managed_command(ctx, session, id)
  local c = live_command(ctx, id)
  if not c then return nil, not_found(ctx) end
  local err = may_manage(ctx, session, c)
  if err then return nil, err end
  return c
end

local function store_error(ctx, c)
  local bad = M.invalid(c)
  if bad then return app_error(ctx, 400, bad, "") end
end

local function command_reply(ctx, status, c)
  return api.reply(ctx, status, json.command(c) .. "\n") -- json.NewEncoder: trailing newline (§1.3)
end

local function duplicate(ctx) return app_error(ctx, 400, "api.command.duplicate_trigger.app_error", "") end

-- ---------------------------------------------------------------- create

local STRING_FIELDS = { "token", "creator_id", "team_id", "trigger", "method", "username", "icon_url",
                        "auto_complete_desc", "auto_complete_hint", "display_name", "description", "url",
                        "plugin_id" }

-- POST /api/v4/commands (§3.2)
local function create_command(ctx, session)
  local node, err = api.decode_body(ctx, "command")
  if not node then return err end
  local body = json.to_struct(node, json.COMMAND_FIELDS)
  if not body then return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "command") end
  local team_id = body.team_id or ""
  if not team_perm(session, team_id, "manage_own_slash_commands") then -- step 2 (team "" too)
    return permission_error(ctx, session, "manage_own_slash_commands")
  end
  local creator = session.user_id
  if (body.creator_id or "") ~= "" and body.creator_id ~= session.user_id then -- step 3
    if not team_perm(session, team_id, "manage_others_slash_commands") then
      return permission_error(ctx, session, "manage_others_slash_commands")
    end
    if not state.user(body.creator_id) then return app_error(ctx, 404, "app.user.missing_account.const", "") end
    creator = body.creator_id
  end
  if not ctx.cfg.enable_commands then return app_error(ctx, 501, "api.command.disabled.app_error", "") end
  local c = { auto_complete = body.auto_complete == true, delete_at = body.delete_at or 0 }
  for _, k in ipairs(STRING_FIELDS) do c[k] = body[k] or "" end
  c.creator_id, c.trigger = creator, c.trigger:lower() -- step 5
  if M.trigger_taken(team_id, c.trigger, "") then return duplicate(ctx) end
  -- step 6, the store's Save: a client id is an invalid input, no AppError *(inferred)*
  if (body.id or "") ~= "" then return app_error(ctx, 500, "app.command.createcommand.internal_error", "") end
  c.id = state.new_id()
  if c.token == "" then c.token = state.new_id() end -- a sent token is kept *(inferred)*
  c.create_at = state.now_ms()
  c.update_at = c.create_at
  local bad = store_error(ctx, c)
  if bad then return bad end
  state.save_command(c)
  return command_reply(ctx, 201, c)
end

-- ---------------------------------------------------------------- lists

--- ListAutocompleteCommands (§3.4): the team's custom commands with
-- auto_complete (sanitized; none with commands disabled), then the
-- built-ins with auto_complete; the first of a trigger wins. No plugins.
function M.autocomplete_commands(ctx, team_id)
  local out, seen = {}, {}
  if ctx.cfg.enable_commands then
    for _, c in ipairs(state.team_commands(team_id)) do
      if c.auto_complete and not seen[c.trigger] then
        seen[c.trigger] = true
        out[#out + 1] = sanitized(c)
      end
    end
  end
  for _, b in ipairs(builtins.autocomplete_list()) do
    if not seen[b.trigger] then
      seen[b.trigger] = true
      out[#out + 1] = b
    end
  end
  return out
end

--- ListAllCommandsByUser (§3.3 step 4): built-ins with auto_complete, then
-- every custom command of the team, sanitized, only `creator_id`'s unless
-- that is nil; custom ones are left out with commands disabled.
local function all_commands(ctx, team_id, creator_id)
  local out, seen = {}, {}
  for _, b in ipairs(builtins.autocomplete_list()) do
    seen[b.trigger] = true
    out[#out + 1] = b
  end
  if ctx.cfg.enable_commands then
    for _, c in ipairs(state.team_commands(team_id)) do
      if not seen[c.trigger] and (not creator_id or c.creator_id == creator_id) then
        seen[c.trigger] = true
        out[#out + 1] = sanitized(c)
      end
    end
  end
  return out
end

-- GET /api/v4/commands (§3.3)
local function list_commands(ctx, session)
  local custom_only = api.parse_bool(api.query("custom_only")) -- listCommands ignores ParseBool's error
  local team_id = api.query("team_id")
  if team_id == "" then -- reported as a body parameter (§1.4)
    return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "team_id")
  end
  if not team_perm(session, team_id, "view_team") then return permission_error(ctx, session, "view_team") end
  local own = team_perm(session, team_id, "manage_own_slash_commands")
  local creator = not team_perm(session, team_id, "manage_others_slash_commands") and session.user_id or nil
  local list
  if custom_only then
    if not own then return permission_error(ctx, session, "manage_own_slash_commands") end
    if not ctx.cfg.enable_commands then return app_error(ctx, 501, "api.command.disabled.app_error", "") end
    list = {}
    for _, c in ipairs(state.team_commands(team_id)) do -- unsanitized: tokens included
      if not creator or c.creator_id == creator then list[#list + 1] = c end
    end
  elseif not own then
    list = M.autocomplete_commands(ctx, team_id)
  else
    list = all_commands(ctx, team_id, creator)
  end
  return api.reply(ctx, 200, json.commands(list) .. "\n")
end

local function team_route_checks(ctx, session, team_id)
  if not state.is_valid_id(team_id) then
    return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "team_id")
  end
  if not team_perm(session, team_id, "view_team") then return permission_error(ctx, session, "view_team") end
end

-- GET /api/v4/teams/{team_id}/commands/autocomplete (§3.4)
local function autocomplete(ctx, session, team_id)
  local err = team_route_checks(ctx, session, team_id)
  if err then return err end
  return api.reply(ctx, 200, json.commands(M.autocomplete_commands(ctx, team_id)) .. "\n")
end

-- GET /api/v4/teams/{team_id}/commands/autocomplete_suggestions (§3.5).
-- Every command the stub lists has plain autocomplete data (trigger, hint,
-- description; no arguments or sub-commands), so input with a space
-- suggests nothing and the role filter passes everyone.
local function suggestions(ctx, session, team_id)
  local err = team_route_checks(ctx, session, team_id)
  if err then return err end
  local input = api.query("user_input")
  if input == "" then return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "userInput") end
  input = input:gsub("^/", "", 1):lower()
  local commands = M.autocomplete_commands(ctx, team_id)
  table.sort(commands, function(a, b) return a.trigger:lower() < b.trigger:lower() end)
  local out = {}
  if not input:find(" ", 1, true) then
    for _, c in ipairs(commands) do
      if c.trigger:sub(1, #input) == input then
        out[#out + 1] = { complete = c.trigger, suggestion = c.trigger, hint = c.auto_complete_hint,
                          description = c.auto_complete_desc }
      end
    end
  end
  return api.reply(ctx, 200, json.suggestions(out)) -- json.Marshal + Write: no newline
end

-- ---------------------------------------------------------------- one command

-- GET /api/v4/commands/{command_id} (§3.6): every refusal is 404.
local function get_command(ctx, session, id)
  if not state.is_valid_id(id) then return bad_command_id(ctx) end
  local c = live_command(ctx, id)
  if not c or not team_perm(session, c.team_id, "view_team")
     or not team_perm(session, c.team_id, "manage_own_slash_commands")
     or (session.user_id ~= c.creator_id and not team_perm(session, c.team_id, "manage_others_slash_commands")) then
    return not_found(ctx)
  end
  return command_reply(ctx, 200, c)
end

-- The fields an update takes from the body (§3.7 step 6); omitted ones
-- become zero values.
local UPDATED_FIELDS = { "trigger", "method", "username", "icon_url", "auto_complete_desc", "auto_complete_hint",
                         "display_name", "description", "url" }

-- PUT /api/v4/commands/{command_id} (§3.7): a full replace.
local function update_command(ctx, session, id)
  if not state.is_valid_id(id) then return bad_command_id(ctx) end
  local node, err = api.decode_body(ctx, "command")
  if not node then return err end
  local body = json.to_struct(node, json.COMMAND_FIELDS)
  if not body or (body.id or "") ~= id then
    return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "command")
  end
  local old = live_command(ctx, id)
  if not old then return not_found(ctx) end
  if (body.team_id or "") ~= old.team_id then -- before the permission checks
    return app_error(ctx, 400, "api.command.team_mismatch.app_error", "user_id=" .. session.user_id)
  end
  err = may_manage(ctx, session, old)
  if err then return err end
  local c = {}
  for k, v in pairs(old) do c[k] = v end
  for _, k in ipairs(UPDATED_FIELDS) do c[k] = body[k] or "" end
  c.auto_complete = body.auto_complete == true
  c.trigger = c.trigger:lower()
  c.update_at = state.now_ms()
  if M.trigger_taken(c.team_id, c.trigger, c.id) then return duplicate(ctx) end
  err = store_error(ctx, c)
  if err then return err end
  state.save_command(c)
  return command_reply(ctx, 200, c)
end

-- DELETE /api/v4/commands/{command_id} (§3.8): a soft delete.
local function delete_command(ctx, session, id)
  if not state.is_valid_id(id) then return bad_command_id(ctx) end
  local c, err = managed_command(ctx, session, id)
  if not c then return err end
  c.delete_at = state.now_ms()
  c.update_at = c.delete_at
  state.save_command(c)
  return api.status_ok(ctx)
end

-- PUT /api/v4/commands/{command_id}/move (§3.9): the destination first.
local function move_command(ctx, session, id)
  if not state.is_valid_id(id) then return bad_command_id(ctx) end
  local node, err = api.decode_body(ctx, "team_id")
  if not node then return err end
  local body = json.to_struct(node, json.COMMAND_MOVE_FIELDS)
  if not body then return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "team_id") end
  local team = state.team(body.team_id or "")
  if not team then return app_error(ctx, 404, "app.team.get.find.app_error", "") end
  if not team_perm(session, team.id, "manage_own_slash_commands") then
    return permission_error(ctx, session, "manage_own_slash_commands")
  end
  local c
  c, err = managed_command(ctx, session, id)
  if not c then return err end
  -- HasPermissionToTeam for the creator: team roles, then system roles
  local creator = state.user(c.creator_id)
  if not creator or not team_perm(creator, team.id, "manage_own_slash_commands") then
    return app_error(ctx, 400, "api.command.move_command.creator_no_permission.app_error",
                     "creator_id=" .. c.creator_id .. " team_id=" .. team.id)
  end
  if M.trigger_taken(team.id, c.trigger, c.id) then return duplicate(ctx) end
  c.team_id = team.id
  c.update_at = state.now_ms()
  state.save_command(c)
  return api.status_ok(ctx)
end

-- PUT /api/v4/commands/{command_id}/regen_token (api-contract.md §3.2)
local function regen_token(ctx, session, id)
  if not state.is_valid_id(id) then return bad_command_id(ctx) end
  local c, err = managed_command(ctx, session, id)
  if not c then return err end
  c.token = state.new_id()
  c.update_at = state.now_ms() -- the store's Update
  state.save_command(c)
  -- model.MapToJSON + w.Write: no trailing newline (§3.2 step 7)
  return api.reply(ctx, 200, '{"token":' .. json.string(c.token) .. "}")
end

local ID = "([A-Za-z0-9]+)"

M.routes = {
  { "POST", "^/api/v4/commands$", create_command },
  { "GET", "^/api/v4/commands$", list_commands },
  { "POST", "^/api/v4/commands/execute$", execute.execute },
  { "GET", "^/api/v4/commands/" .. ID .. "$", get_command },
  { "PUT", "^/api/v4/commands/" .. ID .. "$", update_command },
  { "DELETE", "^/api/v4/commands/" .. ID .. "$", delete_command },
  { "PUT", "^/api/v4/commands/" .. ID .. "/move$", move_command },
  { "PUT", "^/api/v4/commands/" .. ID .. "/regen_token$", regen_token },
  { "GET", "^/api/v4/teams/" .. ID .. "/commands/autocomplete$", autocomplete },
  { "GET", "^/api/v4/teams/" .. ID .. "/commands/autocomplete_suggestions$", suggestions },
}

return M
