-- POST /api/v4/commands/execute (families §3.10): the handler's checks,
-- App.ExecuteCommand's resolution (custom, then built-in; no plugins), the
-- outgoing request of a custom command to its URL (httpc.lua), and the
-- handling of the CommandResponse (posts, GET /__stub/posts).
local cjson = require "cjson.safe"
local api = require "mmstub.api"
local state = require "mmstub.state"
local json = require "mmstub.json"
local httpc = require "mmstub.httpc"
local builtins = require "mmstub.builtins"

local M = {}

local app_error, permission_error = api.app_error, api.permission_error

api.add_messages{
  ["api.command.execute_command.start.app_error"] = "No command trigger found.",
  ["api.command.execute_command.deleted.error"] = "Can not run command in deleted channel.",
  ["api.command.execute_command.not_found.app_error"] = "Command with a trigger of '{{.Trigger}}' not found. "
    .. 'To send a message beginning with "/", try adding an empty space at the beginning of the message.',
  ["api.command.execute_command.site_url_required.app_error"] = "SiteURL must be configured to use slash commands",
  ["api.command.execute_command.failed.app_error"] = "Command with a trigger of '{{.Trigger}}' failed.",
  ["api.command.execute_command.failed_resp.app_error"] =
    "Command with a trigger of '{{.Trigger}}' returned response {{.Status}}.",
  ["api.command.execute_command.create_post_failed.app_error"] =
    "Command '{{.Trigger}}' failed to post response. Please contact your System Administrator.",
  ["mmstub.command.builtin_not_emulated"] = "mm-stub does not emulate the built-in command /{{.Trigger}}.",
}

-- OutgoingIntegrationRequestsTimeout (30 s) and MaxIntegrationResponseSize
-- (1 MiB) *(defaults fork only)*.
local OUTGOING_TIMEOUT_MS = 30000
local MAX_RESPONSE = 1024 * 1024
local MAX_TRIGGER_LEN = 512

-- The UTF-8 encodings of the runes unicode.IsSpace accepts beyond ASCII.
local UNICODE_SPACES = { "\194\133", "\194\160", "\225\154\128", "\226\128\168", "\226\128\169", "\226\128\175",
                         "\226\129\159", "\227\128\128" }
for cp = 0x2000, 0x200A do UNICODE_SPACES[#UNICODE_SPACES + 1] = "\226\128" .. string.char(0x80 + cp - 0x2000) end

--- ExecuteCommand's split: the trigger up to the first unicode.IsSpace rune,
-- lower-cased, and the message after it; Go slices one byte past the
-- rune's start, so a multi-byte space leaves its tail in the message.
local function split_command(command)
  local at = command:find("[\t\n\v\f\r ]")
  for _, sp in ipairs(UNICODE_SPACES) do
    local i = command:find(sp, 1, true)
    if i and (not at or i < at) then at = i end
  end
  if not at then return command:lower(), "" end
  return command:sub(1, at - 1):lower(), command:sub(at + 1)
end

--- model.GenerateTriggerId: a 26-character client id, and the trigger id
-- sent to the integration: base64 of "<client id>:<user id>:<ms>:" and a
-- base64 signature. The stub's signature is random bytes of an ECDSA
-- P-256 signature's usual length: nothing can verify it.
local function trigger_ids(user_id)
  local client_id = state.new_id()
  local data = client_id .. ":" .. user_id .. ":" .. string.format("%d", state.now_ms()) .. ":"
  return client_id, ngx.encode_base64(data .. ngx.encode_base64(state.random_bytes(71)))
end

-- ---------------------------------------------------------------- slack compatibility

--- App.ProcessSlackText: <!channel>/<!here>/<!all> become @channel...,
-- <@USER_ID> of a known user becomes @username.
local function process_slack_text(text)
  text = text:gsub("<!channel>", "@channel"):gsub("<!here>", "@here"):gsub("<!all>", "@all")
  return (text:gsub("<@(%w+)>", function(id)
    local u = state.user(id)
    return u and ("@" .. u.username) or nil
  end))
end

--- model.ParseSlackLinksToMarkdown: <url|text> becomes [text](url).
local function slack_links_to_markdown(text)
  return (text:gsub("<([^\n<|>]+)|([^\n>]+)>", "[%2](%1)"))
end

-- ---------------------------------------------------------------- mentions

-- A word character for RE2's \b / \B: [0-9A-Za-z_].
local function is_word_byte(c) return c ~= nil and c:find("^[%w_]$") ~= nil end

--- MentionsToTeamMembers: @name mentions (\B@[[:alnum:]][[:alnum:].\-_:]*)
-- of users on the team, trailing . - _ trimmed until a user matches.
local function user_mentions(message, team)
  local out = {}
  for pos, name in message:gmatch("()@(%w[%w%.%-_:]*)") do
    if not is_word_byte(message:sub(pos - 1, pos - 1)) then
      name = name:lower()
      while name ~= "" do
        local id = state.user_id_by_name(name)
        if id then
          if team.members[name] then out[name] = id end
          break
        end
        if not name:find("[%.%-_]$") then break end
        name = name:sub(1, -2)
      end
    end
  end
  return out
end

--- MentionsToPublicChannels: ~name mentions (\B~[a-zA-Z0-9\-_]+) of open
-- channels of the team.
local function channel_mentions(message, team)
  local out = {}
  for pos, name in message:gmatch("()~([%w%-_]+)") do
    if not is_word_byte(message:sub(pos - 1, pos - 1)) then
      for _, ch in ipairs(state.team_channels(team.id)) do
        if ch.name == name and ch.type == "O" then out[name] = ch.id end
      end
    end
  end
  return out
end

-- Add a mention map to url.Values: names and ids as parallel lists (Go
-- ranges over a map: several mentions come in no fixed order).
local function add_mentions(params, map, key)
  for name, id in pairs(map) do
    params[key] = params[key] or {}
    params[key .. "_ids"] = params[key .. "_ids"] or {}
    table.insert(params[key], name)
    table.insert(params[key .. "_ids"], id)
  end
end

-- ---------------------------------------------------------------- the custom command's request

--- Decode an integration's JSON reply into a CommandResponse, as
-- CommandResponseFromJSON (json.Unmarshal) does; nil on any error.
local function decode_response(node)
  local r = json.to_struct(node, json.COMMAND_RESPONSE_FIELDS)
  if not r then return nil end
  if r.extra_responses then
    local list = {}
    for n, item in ipairs(r.extra_responses.items) do
      list[n] = decode_response(item)
      if not list[n] then return nil end
    end
    r.extra_responses = list
  end
  return r
end

--- DoCommandRequest (§3.10 step 9): the request to the command's URL and
-- its reply as a CommandResponse, or nil and the error response.
local function command_request(ctx, c, params)
  local url, body, headers = c.url, nil, { { "Accept", "application/json" } }
  local query = httpc.form_encode(params)
  if c.method == "G" then -- the parameters join the URL's own query
    local base, fragment = url:match("^([^#]*)(.*)$")
    url = base .. (base:find("?", 1, true) and (base:sub(-1) == "?" and "" or "&") or "?") .. query .. fragment
  else
    body = query
    headers[#headers + 1] = { "Content-Type", "application/x-www-form-urlencoded" }
  end
  if c.token ~= "" then headers[#headers + 1] = { "Authorization", "Token " .. c.token } end
  local failed = { Trigger = c.trigger }
  local resp, err = httpc.request({ method = c.method == "G" and "GET" or "POST", url = url, headers = headers,
                                    body = body, timeout = OUTGOING_TIMEOUT_MS })
  if not resp then
    return nil, app_error(ctx, 500, "api.command.execute_command.failed.app_error", err, failed)
  end
  local data = resp.body:sub(1, MAX_RESPONSE)
  if resp.status ~= 200 then
    return nil, app_error(ctx, 500, "api.command.execute_command.failed_resp.app_error", data,
                          { Trigger = c.trigger, Status = resp.status_text })
  end
  local media = ((resp.h["content-type"] or ""):match("^([^;]*)")):match("^%s*(.-)%s*$")
  if media ~= "application/json" then return { text = json.sanitize_utf8(data) } end
  local node, jerr = json.decode_all(data)
  local r = node and decode_response(node)
  if not r then
    return nil, app_error(ctx, 500, "api.command.execute_command.failed.app_error",
                          "invalid JSON in the integration's reply: " .. (jerr or "type mismatch"), failed)
  end
  return r
end

-- ---------------------------------------------------------------- the response

-- A tagged JSON node as plain Lua (for the posts log).
local function plain(node) return node and cjson.decode(json.value(node)) end

--- HandleCommandResponsePost + CreateCommandPost (§3.10 step 11) for one
-- response: false when posting fails.
local function post_response(session, args, r, builtin)
  local post = { channel_id = args.channel_id, root_id = args.root_id, user_id = session.user_id,
                 type = r.type or "", props = plain(r.props) or {} }
  if (r.channel_id or "") ~= "" then -- redirected: only into a channel the caller is a member of
    local ch = state.channel(r.channel_id)
    if not ch or not ch.members[session.username] then return false end
    post.channel_id = r.channel_id
  end
  -- username/icon overrides need EnablePostUsernameOverride/IconOverride (off)
  if not builtin then post.props.from_webhook = "true" end
  if not r.skip_slack_parsing then r.text = process_slack_text(r.text or "") end
  post.message = r.skip_slack_parsing and (r.text or "") or slack_links_to_markdown(r.text)
  if post.type:sub(1, 7) == "system_" then return false end -- api.context.invalid_param (post.type)
  if r.response_type == "in_channel" then
    state.add_post(post)
  elseif (r.response_type or "") == "" or r.response_type == "ephemeral" then
    if post.message ~= "" or r.attachments then
      post.ephemeral = true
      state.add_post(post)
    end
  end
  return true
end

--- HandleCommandResponse: posts the response and its extra responses; 200
-- with the response (text Slack-converted), or 500 when a post failed.
local function handle_response(ctx, session, args, r, builtin)
  local ok = post_response(session, args, r, builtin)
  for _, x in ipairs(r.extra_responses or {}) do ok = post_response(session, args, x, builtin) and ok end
  if not ok then
    local trigger = (args.command:match("^[^ ]*"):sub(2)):lower()
    return app_error(ctx, 500, "api.command.execute_command.create_post_failed.app_error", "", { Trigger = trigger })
  end
  return api.reply(ctx, 200, json.command_response(r) .. "\n")
end

-- ---------------------------------------------------------------- the route

local function start_error(ctx) return app_error(ctx, 400, "api.command.execute_command.start.app_error", "") end

-- POST /api/v4/commands/execute (§3.10)
function M.execute(ctx, session)
  local node, err = api.decode_body(ctx, "command_args") -- step 1
  if not node then return err end
  local body = json.to_struct(node, json.COMMAND_ARGS_FIELDS)
  if not body then return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "command_args") end
  local args = { command = body.command or "", channel_id = body.channel_id or "", team_id = body.team_id or "",
                 root_id = body.root_id or "", user_id = session.user_id }
  if #args.command <= 1 or args.command:sub(1, 1) ~= "/" or not state.is_valid_id(args.channel_id) then -- step 2
    return start_error(ctx)
  end
  if not state.has_channel_permission(session, args.channel_id, "create_post") then -- step 3
    return permission_error(ctx, session, "create_post")
  end
  local channel = state.channel(args.channel_id) -- step 4 (it exists: step 3 passed)
  if channel.delete_at ~= 0 then return app_error(ctx, 400, "api.command.execute_command.deleted.error", "") end
  if channel.type ~= "D" and channel.type ~= "G" then -- step 5
    args.team_id = channel.team_id
  else
    -- TeamSettings.RestrictDirectMessage "any" (default): no DM is restricted
    local team = state.team(args.team_id)
    if not (team and team.members[session.username]) and not state.has_permission(session, "create_post") then
      return permission_error(ctx, session, "create_post")
    end
  end

  local trigger, message = split_command(args.command) -- step 6
  trigger = trigger:sub(2)
  local client_trigger_id, trigger_id = trigger_ids(session.user_id)

  -- step 7: tryExecuteCustomCommand (no plugins in the stub)
  if not ctx.cfg.enable_commands then return app_error(ctx, 501, "api.command.disabled.app_error", "") end
  local team = state.team(args.team_id)
  if not team then return app_error(ctx, 404, "app.team.get.find.app_error", "") end
  local c
  for _, tc in ipairs(state.team_commands(args.team_id)) do
    if tc.trigger == trigger then c = tc end -- the last match wins
  end
  if c then -- step 9
    local site_url = ctx.cfg.site_url
    if site_url == "" then
      return app_error(ctx, 400, "api.command.execute_command.site_url_required.app_error", "")
    end
    local params = {
      token = c.token, team_id = c.team_id, team_domain = team.name, channel_id = args.channel_id,
      channel_name = channel.name, user_id = session.user_id, user_name = session.username,
      command = "/" .. trigger, text = message, trigger_id = trigger_id, root_id = args.root_id,
      response_url = site_url .. "/hooks/commands/" .. state.new_id(),
    }
    add_mentions(params, user_mentions(message, team), "user_mentions")
    add_mentions(params, channel_mentions(message, team), "channel_mentions")
    local r
    r, err = command_request(ctx, c, params)
    if not r then return err end
    r.trigger_id = client_trigger_id
    return handle_response(ctx, session, args, r, false)
  end
  if builtins.registered(trigger) then -- step 10
    local r = builtins.run(trigger, args, message)
    if not r then
      return app_error(ctx, 501, "mmstub.command.builtin_not_emulated", "", { Trigger = trigger })
    end
    return handle_response(ctx, session, args, r, true)
  end
  if #trigger > MAX_TRIGGER_LEN then trigger = trigger:sub(1, MAX_TRIGGER_LEN) .. "..." end -- step 8
  return app_error(ctx, 404, "api.command.execute_command.not_found.app_error", "", { Trigger = trigger })
end

return M
