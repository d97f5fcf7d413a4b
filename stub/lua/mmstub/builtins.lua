-- Built-in slash commands (families §3.1, §3.10 step 10; [slash]): the
-- command providers a default server registers, as far as the commands
-- routes see them. Their Command definitions (GetCommand) make the lists,
-- the suggestions and trigger uniqueness; only /echo and /shrug run.
--
-- The provider set and the English texts follow the ~v11.6 fork with the
-- default config *(fork only: app/slashcommands, i18n/en.json)*.
-- `exportlink` and `test` are registered but their GetCommand is nil on a
-- default server, so their triggers are free for custom commands.
local api = require "mmstub.api"
local state = require "mmstub.state"

local M = {}

local atoi = api.atoi

local SHRUG = "\194\175\\\\\\_(\227\131\132)\\_/\194\175" -- ¯\\\_(ツ)\_/¯, a Go raw string [slash]

-- {trigger, auto_complete, auto_complete_desc, auto_complete_hint, display_name}
local LISTED = {
  { "away", true, "Set your status away", "", "away" },
  { "header", true, "Edit the channel header", "[text]", "header" },
  { "purpose", true, "Edit the channel purpose", "[text]", "purpose" },
  { "code", true, "Display text as a code block", "[text]", "code" },
  -- listed while TeamSettings.EnableCustomUserStatuses is on (default)
  { "status", true, "Set or clear your status", "[:emoji_name:] [status_message] or clear", "status" },
  { "dnd", true, "Do not disturb disables desktop and mobile push notifications.", "", "dnd" },
  { "echo", true, "Echo back text from your account", "'message' [delay in seconds]", "echo" },
  { "expand", true, "Turn off auto-collapsing of image previews", "", "expand" },
  { "collapse", true, "Turn on auto-collapsing of image previews", "", "collapse" },
  { "groupmsg", true, "Sends a Group Message to the specified users", "@[username1],@[username2] 'message'",
    "message" },
  { "help", true, "Show Mattermost help message", "", "help" },
  { "invite", true, "Invite a user to a channel", "@[username]... ~[channel]...", "invite" },
  -- auto_complete only with email invitations on (default off)
  { "invite_people", false, "Send an email invite to your Mattermost team", "[name@domain.com ...]",
    "invite_people" },
  { "join", true, "Join the open channel", "~[channel]", "join" },
  { "leave", true, "Leave the current channel", "", "leave" },
  { "logout", true, "Logout of Mattermost", "", "logout" },
  -- auto_complete while plugins and the marketplace are on (default)
  { "marketplace", true, "Open the Marketplace", "", "marketplace" },
  { "me", true, "Do an action", "[message]", "me" },
  { "msg", true, "Send Direct Message to a user", "@[username] 'message'", "message" },
  { "mute", true, "Turns off desktop, email and push notifications for the current channel or the [channel] "
    .. "specified.", "~[channel]", "mute" },
  { "offline", true, "Set your status offline", "", "offline" },
  { "online", true, "Set your status online", "", "online" },
  { "open", true, "Join the open channel", "~[channel]", "open" },
  { "remove", true, "Remove a member from the channel", "@[username]", "remove" },
  { "kick", true, "Remove a member from the channel", "@[username]", "kick" },
  { "search", true, "Search text in messages", "[text]", "search" },
  { "settings", true, "Open the Settings dialog", "", "settings" },
  { "shortcuts", true, "Displays a list of keyboard shortcuts", "", "shortcuts" },
  { "shrug", true, "Adds \194\175\\_(\227\131\132)_/\194\175 to your message", "[message]", "shrug" },
}
-- Registered with autocomplete_data (sub-commands, arguments): their
-- triggers are taken, but the stub does not list them (README).
local UNLISTED = { rename = true, ["secure-connection"] = true, ["share-channel"] = true }

local BY_TRIGGER = {}
for _, b in ipairs(LISTED) do BY_TRIGGER[b[1]] = b end

--- Has a built-in with a Command definition the trigger `trigger` (lower
-- case)? Such a trigger is taken (validateCommandTriggerUniqueness) and
-- resolves when executed (tryExecuteBuiltInCommand).
function M.registered(trigger)
  return BY_TRIGGER[trigger] ~= nil or UNLISTED[trigger] == true
end

--- The built-ins with auto_complete, as sanitized Command records, in a
-- fresh random order on every call: Go ranges over a map (families §3.3).
function M.autocomplete_list()
  local out = {}
  for _, b in ipairs(LISTED) do
    if b[2] then
      out[#out + 1] = {
        id = "", token = "", create_at = 0, update_at = 0, delete_at = 0, creator_id = "", team_id = "",
        trigger = b[1], method = "", username = "", icon_url = "", auto_complete = true,
        auto_complete_desc = b[3], auto_complete_hint = b[4], display_name = b[5], description = "",
        url = "", plugin_id = "",
      }
    end
  end
  for i = #out, 2, -1 do
    local j = math.random(i)
    out[i], out[j] = out[j], out[i]
  end
  return out
end

-- EchoProvider.DoCommand [slash]: an optional trailing delay in seconds
-- (or a quoted message followed by one); the post is made later, the
-- answer is an empty response.
local function echo(args, message)
  if message == "" then
    return { response_type = "ephemeral", text = "A message must be provided with the /echo command." }
  end
  local delay = 0
  local last_quote = message:match('^.*()"')
  if message:sub(1, 1) == '"' and last_quote and last_quote - 1 > 1 then
    local d = atoi((message:sub(last_quote):gsub('^[ "]+', ""):gsub('[ "]+$', "")))
    if d then delay = d end
    message = message:sub(2, last_quote - 1)
  elseif message:find(" ", 1, true) then
    local last_space = message:match("^.*() ")
    local d = atoi((message:sub(last_space):gsub("^ +", ""):gsub(" +$", "")))
    if d then delay, message = d, message:sub(1, last_space - 1) end
  end
  if delay > 10000 then
    return { response_type = "ephemeral", text = "Delays must be under 10000 seconds." }
  end
  local post = { channel_id = args.channel_id, root_id = args.root_id, user_id = args.user_id, message = message }
  local reset_at = state.dict():get("reset_at")
  local function make(premature)
    -- a stub reset in the meantime drops it, as a server restart would
    if premature or state.dict():get("reset_at") ~= reset_at then return end
    state.add_post(post)
  end
  if delay <= 0 then make(false) else assert(ngx.timer.at(delay, make)) end
  return {}
end

-- ShrugProvider.DoCommand [slash].
local function shrug(_, message)
  return { response_type = "in_channel", text = message ~= "" and (message .. " " .. SHRUG) or SHRUG }
end

local RUN = { echo = echo, shrug = shrug }

--- Run the built-in `trigger`: its CommandResponse, or nil when the stub
-- does not emulate that provider. `args` = {channel_id, root_id, user_id}.
function M.run(trigger, args, message)
  local f = RUN[trigger]
  return f and f(args, message)
end

return M
