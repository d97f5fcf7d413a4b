-- Black-box spec of the stub's commands routes against
-- api-contract-families.md §6, cases 75-126 (fixtures: team T2, channels CH,
-- CH_OUT, CH_ARCH, DM, commands C_admin, C_basic, C_other, C_deleted, the
-- harness endpoint E, role toggles +own/+others).
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted spec/stub_commands_spec.lua
local stub = require "support.stubapi"
local cjson = require "cjson"
local mime = require "mime"
local socket = require "socket"

local call, assert_error, control, config = stub.call, stub.assert_error, stub.control, stub.config
local ID_PATTERN = stub.ID_PATTERN

local fx -- the fixtures, fresh for every case

local OWN, OTHERS = "manage_own_slash_commands", "manage_others_slash_commands"
local COMMAND_KEYS = { "id", "token", "create_at", "update_at", "delete_at", "creator_id", "team_id", "trigger",
                       "method", "username", "icon_url", "auto_complete", "auto_complete_desc",
                       "auto_complete_hint", "display_name", "description", "url", "plugin_id" }
local RESPONSE_KEYS = { "response_type", "text", "username", "channel_id", "icon_url", "type", "props",
                        "goto_location", "trigger_id", "skip_slack_parsing", "attachments", "extra_responses" }
local SHRUG = "\194\175\\\\\\_(\227\131\132)\\_/\194\175" -- ¯\\\_(ツ)\_/¯

local function team(name) return fx.teams[name].id end
local function cmd(name) return fx.commands[name].id end
local function channel(name) return fx.channels[name].id end
local function user(name) return fx.users[name].id end

-- +own / +others: the role toggles of §6, on team_user.
local function grant(...) stub.grant("team_user", { ... }) end

-- POST /api/v4/commands with the JSON of `tbl`.
local function create(as, tbl) return call("POST", "/api/v4/commands", { as = as, body = cjson.encode(tbl) }) end

-- A valid create body for team T, with `extra` fields merged in.
local function new_command(extra)
  local t = { team_id = team("T"), url = "http://e.test/h", method = "P", trigger = "newcmd" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A Command answer: status, JSON content type, model.Command key order,
-- the encoder's trailing newline; returns the decoded command.
local function command_of(r, status)
  assert.are.equal(status or 200, r.status, r.body)
  assert.are.equal("application/json", r.h["content-type"])
  assert.are.equal("\n", r.body:sub(-1))
  assert.are.same(COMMAND_KEYS, stub.keys(r.body))
  return cjson.decode(r.body)
end

-- A list of commands (trailing newline); returns it and a by-id index.
local function list_of(r)
  assert.are.equal(200, r.status, r.body)
  assert.are.equal("\n", r.body:sub(-1))
  local list, by_id = cjson.decode(r.body), {}
  for _, c in ipairs(list) do by_id[c.id] = c end
  return list, by_id
end

local function by_trigger(list, trigger)
  for _, c in ipairs(list) do if c.trigger == trigger then return c end end
end

local function get(id, as) return call("GET", "/api/v4/commands/" .. id, { as = as }) end
local function put(id, as, tbl) return call("PUT", "/api/v4/commands/" .. id, { as = as, body = cjson.encode(tbl) }) end
local function delete(id, as) return call("DELETE", "/api/v4/commands/" .. id, { as = as }) end
local function move(id, as, body)
  return call("PUT", "/api/v4/commands/" .. id .. "/move", { as = as, body = body })
end
local function move_to(id, as, team_name) return move(id, as, cjson.encode({ team_id = team(team_name) })) end
local function list(as, query) return call("GET", "/api/v4/commands?" .. query, { as = as }) end

before_each(function()
  fx = stub.reset()
end)

describe("POST /api/v4/commands", function()
  it("case 75: basic without manage_own_slash_commands -> 403", function()
    assert_error(create("basic", new_command()), 403, "api.context.permissions.app_error",
                 "You do not have the appropriate permissions.")
  end)

  it("case 76: sysadmin -> 201 with a new id and token; the same trigger again -> 400 duplicate_trigger", function()
    local before = stub.now_ms()
    local c = command_of(create("sysadmin", new_command()), 201)
    assert.is_truthy(c.id:match(ID_PATTERN))
    assert.is_truthy(c.token:match(ID_PATTERN))
    assert.are_not.equal(c.id, c.token)
    assert.are.equal(user("sysadmin"), c.creator_id)
    assert.are.equal(team("T"), c.team_id)
    assert.are.equal(c.create_at, c.update_at)
    assert.is_true(c.create_at >= before - 1000 and c.create_at <= stub.now_ms() + 1000)
    assert.are.equal(0, c.delete_at)
    assert.are.equal("", c.plugin_id)
    assert.are.equal("newcmd", c.trigger)
    assert.are.same(c, command_of(get(c.id, "sysadmin"))) -- stored as answered
    assert_error(create("sysadmin", new_command()), 400, "api.command.duplicate_trigger.app_error",
                 "This trigger word is already in use. Please choose another word.")
  end)

  it("case 77: triggers are lower-cased; built-in triggers are taken", function()
    assert.are.equal("mixedcase", command_of(create("sysadmin", new_command{ trigger = "MixedCase" }), 201).trigger)
    assert_error(create("sysadmin", new_command{ trigger = "MIXEDcase" }), 400,
                 "api.command.duplicate_trigger.app_error")
    assert_error(create("sysadmin", new_command{ trigger = "Echo" }), 400, "api.command.duplicate_trigger.app_error")
    assert_error(create("sysadmin", new_command{ trigger = "join" }), 400, "api.command.duplicate_trigger.app_error")
    -- a built-in whose definition a default server does not make (GetCommand nil) *(fork only)*
    command_of(create("sysadmin", new_command{ trigger = "exportlink" }), 201)
  end)

  it("case 78: bad triggers -> 400 model.command.is_valid.trigger; 128 characters -> 201", function()
    for _, t in ipairs({ "/slash", "two words", "", ("a"):rep(129), "tab\there", "caf\195\169" }) do
      assert_error(create("sysadmin", new_command{ trigger = t }), 400, "model.command.is_valid.trigger.app_error",
                   "Invalid trigger.")
    end
    local long = command_of(create("sysadmin", new_command{ trigger = ("a"):rep(128) }), 201)
    assert.are.equal(("a"):rep(128), long.trigger)
    command_of(create("sysadmin", new_command{ trigger = "a_b-c.d/e" }), 201)
  end)

  it("case 79: method X, empty, p -> 400 model.command.is_valid.method", function()
    for _, m in ipairs({ "X", "", "p" }) do
      assert_error(create("sysadmin", new_command{ method = m }), 400, "model.command.is_valid.method.app_error",
                   "Invalid Method.")
    end
    assert.are.equal("G", command_of(create("sysadmin", new_command{ method = "G" }), 201).method)
  end)

  it("case 80: url empty -> 400 url; not http(s) or no host -> 400 url_http", function()
    assert_error(create("sysadmin", new_command{ url = "" }), 400, "model.command.is_valid.url.app_error")
    for _, u in ipairs({ "ftp://x", "1234", "https:////example.com", "http://", "http://exa mple.com/",
                         "http://host:port/" }) do
      assert_error(create("sysadmin", new_command{ url = u }), 400, "model.command.is_valid.url_http.app_error",
                   "Invalid URL. Must be a valid URL and start with http:// or https://.")
    end
    assert_error(create("sysadmin", new_command{ url = "http://x/" .. ("a"):rep(1016) }), 400,
                 "model.command.is_valid.url.app_error") -- 1025 bytes
    command_of(create("sysadmin", new_command{ trigger = "long", url = "http://x/" .. ("a"):rep(1015) }), 201)
    command_of(create("sysadmin", new_command{ url = "https://u:p@example.com:8443/a?b=c" }), 201)
  end)

  it("case 81: display_name > 64 and description > 128 bytes -> 400; 64 and 128 -> 201", function()
    assert_error(create("sysadmin", new_command{ display_name = ("d"):rep(65) }), 400,
                 "model.command.is_valid.display_name.app_error", "Invalid title.")
    assert_error(create("sysadmin", new_command{ description = ("d"):rep(129) }), 400,
                 "model.command.is_valid.description.app_error", "Invalid description.")
    local c = command_of(create("sysadmin", new_command{ display_name = ("d"):rep(64), description = ("e"):rep(128) }),
                         201)
    assert.are.equal(64, #c.display_name)
    assert.are.equal(128, #c.description)
  end)

  it("case 82: team_id empty -> 403 even for sysadmin; team_id junk -> 400 team_id", function()
    assert_error(create("sysadmin", new_command{ team_id = "" }), 403, "api.context.permissions.app_error")
    assert_error(create("sysadmin", new_command{ team_id = "junk" }), 400, "model.command.is_valid.team_id.app_error",
                 "Invalid team ID.")
  end)

  it("case 83: creator_id of another user needs manage_others and an existing user", function()
    local c = command_of(create("sysadmin", new_command{ creator_id = user("basic") }), 201)
    assert.are.equal(user("basic"), c.creator_id)
    grant(OWN)
    assert_error(create("basic", new_command{ trigger = "b1", creator_id = user("basic2") }), 403,
                 "api.context.permissions.app_error")
    local own = command_of(create("basic", new_command{ trigger = "b2", creator_id = user("basic") }), 201)
    assert.are.equal(user("basic"), own.creator_id)
    grant(OWN, OTHERS)
    assert_error(create("basic", new_command{ trigger = "b3", creator_id = stub.random_id() }), 404,
                 "app.user.missing_account.const", "Unable to find the user.")
  end)

  it("case 84: body not json -> 400 invalid_body_param command", function()
    assert_error(call("POST", "/api/v4/commands", { as = "sysadmin", body = "not json" }), 400,
                 "api.context.invalid_body_param.app_error", "Invalid or missing command in request body.")
    assert_error(call("POST", "/api/v4/commands", { as = "sysadmin", body = '{"team_id":5}' }), 400,
                 "api.context.invalid_body_param.app_error")
    assert_error(call("POST", "/api/v4/commands", { as = "sysadmin", body = "" }), 400,
                 "api.context.invalid_body_param.app_error")
  end)

  it("case 85: commands disabled -> 501 api.command.disabled", function()
    config({ enable_commands = false })
    assert_error(create("sysadmin", new_command()), 501, "api.command.disabled.app_error",
                 "Commands have been disabled by the system admin.")
    assert_error(create("basic", new_command()), 403, "api.context.permissions.app_error") -- permission first
  end)

  it("case 86: a sent 26-char token is kept; another length -> 400 token", function()
    local token = "abcdefghijklmnopqrstuvwxyz"
    assert.are.equal(token, command_of(create("sysadmin", new_command{ token = token }), 201).token)
    assert_error(create("sysadmin", new_command{ trigger = "t2", token = "short" }), 400,
                 "model.command.is_valid.token.app_error", "Invalid token.")
  end)

  it("create: a body id -> 500 (inferred); bytes after the value ignored; too large -> 413",
     function()
    assert_error(create("sysadmin", new_command{ id = stub.random_id() }), 500,
                 "app.command.createcommand.internal_error", "Unable to save the command.")
    local r = call("POST", "/api/v4/commands", { as = "sysadmin", body = cjson.encode(new_command()) .. " junk" })
    command_of(r, 201)
    -- a value past the body limit (300000 + 512 bytes) -> 413
    local big = cjson.encode(new_command{ trigger = "big", description = ("d"):rep(300600) })
    assert_error(call("POST", "/api/v4/commands", { as = "sysadmin", body = big }), 413,
                 "api.context.request_body_too_large.app_error")
  end)
end)

describe("GET /api/v4/commands", function()
  it("case 87: sysadmin custom_only=true -> exactly the live custom commands of T, tokens included", function()
    local l = list_of(list("sysadmin", "team_id=" .. team("T") .. "&custom_only=true"))
    assert.are.equal(3, #l)
    for n, name in ipairs({ "C_admin", "C_basic", "C_other" }) do
      assert.are.equal(cmd(name), l[n].id)
      assert.are.equal(fx.commands[name].token, l[n].token)
      assert.is_truthy(l[n].token:match(ID_PATTERN))
    end
  end)

  it("case 88: sysadmin without custom_only -> built-ins (id \"\") and sanitized custom commands", function()
    local l, by_id = list_of(list("sysadmin", "team_id=" .. team("T")))
    local echo = by_trigger(l, "echo")
    assert.are.same({ id = "", token = "", create_at = 0, update_at = 0, delete_at = 0, creator_id = "",
                      team_id = "", trigger = "echo", method = "", username = "", icon_url = "",
                      auto_complete = true, auto_complete_desc = "Echo back text from your account",
                      auto_complete_hint = "'message' [delay in seconds]", display_name = "echo",
                      description = "", url = "", plugin_id = "" }, echo)
    for _, name in ipairs({ "C_admin", "C_basic", "C_other" }) do
      local c = by_id[cmd(name)]
      assert.is_table(c, name)
      assert.are.equal("", c.token)
      assert.are.equal("", c.url)
      assert.are.equal("", c.method)
      assert.are.equal("", c.creator_id)
      assert.are.equal(team("T"), c.team_id)
    end
    assert.is_nil(by_id[cmd("C_deleted")])
    for _, c in ipairs(l) do assert.are.equal("", c.token) end
  end)

  it("case 89: basic -> built-ins and sanitized auto_complete commands; custom_only=true -> 403", function()
    local l, by_id = list_of(list("basic", "team_id=" .. team("T")))
    assert.is_table(by_trigger(l, "echo"))
    local b = by_id[cmd("C_basic")]
    assert.are.equal("Basic cmd", b.auto_complete_desc)
    assert.are.equal("[arg]", b.auto_complete_hint)
    assert.are.equal("", b.token)
    assert.are.equal("", b.url)
    assert.is_nil(by_id[cmd("C_admin")])
    assert.is_nil(by_id[cmd("C_other")])
    assert_error(list("basic", "team_id=" .. team("T") .. "&custom_only=true"), 403,
                 "api.context.permissions.app_error")
  end)

  it("case 90: basic+own: custom_only=true -> only basic's, unsanitized; false -> built-ins + basic's, sanitized",
     function()
    grant(OWN)
    local l = list_of(list("basic", "team_id=" .. team("T") .. "&custom_only=true"))
    assert.are.equal(1, #l)
    assert.are.equal(cmd("C_basic"), l[1].id)
    assert.are.equal(fx.commands.C_basic.token, l[1].token)
    assert.are.equal(fx.commands.C_basic.url, l[1].url)
    local all, by_id = list_of(list("basic", "team_id=" .. team("T") .. "&custom_only=false"))
    assert.is_table(by_trigger(all, "shrug"))
    assert.are.equal("", by_id[cmd("C_basic")].token)
    assert.is_nil(by_id[cmd("C_other")])
    assert.is_nil(by_id[cmd("C_admin")])
    -- built-ins come first (ListAllCommandsByUser)
    assert.are.equal(cmd("C_basic"), all[#all].id)
  end)

  it("case 91: basic+own+others custom_only=true -> C_admin, C_basic, C_other", function()
    grant(OWN, OTHERS)
    local _, by_id = list_of(list("basic", "team_id=" .. team("T") .. "&custom_only=true"))
    for _, name in ipairs({ "C_admin", "C_basic", "C_other" }) do
      assert.are.equal(fx.commands[name].token, by_id[cmd(name)].token)
    end
  end)

  it("case 92: outsider -> 403 view_team; no team_id -> 400 'in request body'", function()
    assert_error(list("outsider", "team_id=" .. team("T")), 403, "api.context.permissions.app_error")
    assert_error(call("GET", "/api/v4/commands", { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing team_id in request body.")
    assert_error(list("sysadmin", "team_id="), 400, "api.context.invalid_body_param.app_error")
  end)

  it("case 93: custom_only follows strconv.ParseBool: 1 is true, yes is false", function()
    for _, v in ipairs({ "1", "t", "T", "TRUE", "true", "True" }) do
      local l = list_of(list("sysadmin", "team_id=" .. team("T") .. "&custom_only=" .. v))
      assert.are.equal(3, #l, v)
      assert.is_nil(by_trigger(l, "echo"), v)
    end
    for _, v in ipairs({ "yes", "0", "", "TrUe" }) do
      assert.is_table(by_trigger(list_of(list("sysadmin", "team_id=" .. team("T") .. "&custom_only=" .. v)), "echo"), v)
    end
  end)

  it("case 94: commands disabled: custom_only=true -> 501; false -> built-ins only", function()
    config({ enable_commands = false })
    assert_error(list("sysadmin", "team_id=" .. team("T") .. "&custom_only=true"), 501,
                 "api.command.disabled.app_error")
    local l = list_of(list("sysadmin", "team_id=" .. team("T")))
    assert.is_true(#l > 0)
    for _, c in ipairs(l) do assert.are.equal("", c.id) end
  end)

  it("lists: built-ins in no fixed order (Go map); the same set every time", function()
    local function triggers()
      local out = {}
      for _, c in ipairs(list_of(list("basic", "team_id=" .. team("T")))) do out[#out + 1] = c.trigger end
      return out
    end
    local first, orders, n = triggers(), {}, 0
    table.sort(first)
    for _ = 1, 10 do
      local t = triggers()
      if not orders[table.concat(t, " ")] then n = n + 1 end
      orders[table.concat(t, " ")] = true
      table.sort(t)
      assert.are.same(first, t)
    end
    assert.is_true(n > 1, "ten lists, all in one order")
  end)
end)

describe("GET /api/v4/teams/{team_id}/commands/autocomplete", function()
  local function autocomplete(team_id, as)
    return call("GET", "/api/v4/teams/" .. team_id .. "/commands/autocomplete", { as = as })
  end

  it("case 95: basic -> built-ins and sanitized C_basic; outsider 403; junk 400; no auth 401", function()
    local l, by_id = list_of(autocomplete(team("T"), "basic"))
    assert.is_table(by_trigger(l, "echo"))
    assert.are.equal("", by_id[cmd("C_basic")].token)
    assert.are.equal("basiccmd", by_id[cmd("C_basic")].trigger)
    assert.is_nil(by_id[cmd("C_admin")])
    assert.is_nil(by_id[cmd("C_other")])
    assert.is_nil(by_trigger(l, "invite_people")) -- auto_complete off by default
    assert.are.equal(cmd("C_basic"), l[1].id) -- custom commands before built-ins
    assert_error(autocomplete(team("T"), "outsider"), 403, "api.context.permissions.app_error")
    assert_error(autocomplete("junk", "basic"), 400, "api.context.invalid_url_param.app_error",
                 "Invalid or missing team_id parameter in request URL.")
    assert_error(autocomplete(team("T")), 401, "api.context.session_expired.app_error")
    -- admins see no more: C_admin has auto_complete off
    assert.is_nil(select(2, list_of(autocomplete(team("T"), "sysadmin")))[cmd("C_admin")])
  end)
end)

describe("GET /api/v4/teams/{team_id}/commands/autocomplete_suggestions", function()
  local function suggest(input, as, team_id)
    local q = input and ("?user_input=" .. input:gsub("/", "%%2F"):gsub(" ", "+")) or ""
    return call("GET", "/api/v4/teams/" .. (team_id or team("T")) .. "/commands/autocomplete_suggestions" .. q,
                { as = as })
  end
  local function suggestions(r)
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("application/json", r.h["content-type"])
    assert.are_not.equal("\n", r.body:sub(-1)) -- json.Marshal: no newline
    local l, by = cjson.decode(r.body), {}
    for _, s in ipairs(l) do by[s.Suggestion] = s end
    return l, by
  end

  it("case 96: user_input=/ -> PascalCase suggestions, sorted, echo/shrug/basiccmd, no admincmd", function()
    local r = suggest("/", "basic")
    local l, by = suggestions(r)
    assert.are.same({ "Complete", "Suggestion", "Hint", "Description", "IconData" },
                    stub.keys(r.body:match("^%[(.-})")))
    assert.is_table(by.echo)
    assert.is_table(by.shrug)
    assert.are.same({ Complete = "basiccmd", Suggestion = "basiccmd", Hint = "[arg]", Description = "Basic cmd",
                      IconData = "" }, by.basiccmd)
    assert.is_nil(by.admincmd)
    for n = 2, #l do assert.is_true(l[n - 1].Suggestion < l[n].Suggestion) end
  end)

  it("case 97: /e -> echo, not shrug; no user_input -> 400 userInput; outsider -> 403", function()
    local _, by = suggestions(suggest("/e", "basic"))
    assert.is_table(by.echo)
    assert.is_nil(by.shrug)
    local l = suggestions(suggest("/echo hello", "basic"))
    assert.are.equal(0, #l)
    assert.are.equal("[]", suggest("/zzz", "basic").body)
    assert_error(suggest(nil, "basic"), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing userInput in request body.")
    assert_error(suggest("/", "outsider"), 403, "api.context.permissions.app_error")
    assert_error(suggest("/", "basic", "junk"), 400, "api.context.invalid_url_param.app_error")
  end)
end)

describe("GET /api/v4/commands/{id}", function()
  local NOT_FOUND = "store.sql_command.save.get.app_error"

  it("case 98: sysadmin -> the full command; junk 400; unknown or deleted 404", function()
    local c = command_of(get(cmd("C_basic"), "sysadmin"))
    assert.are.equal(fx.commands.C_basic.token, c.token)
    assert.are.equal(user("basic"), c.creator_id)
    assert.are.equal("G", c.method)
    assert.are.equal(fx.harness_url .. "/?x=1", c.url)
    assert.are.equal("0", get(cmd("C_basic"), "sysadmin").h["expires"])
    assert_error(get("junk", "sysadmin"), 400, "api.context.invalid_url_param.app_error",
                 "Invalid or missing command_id parameter in request URL.")
    assert_error(get(stub.random_id(), "sysadmin"), 404, NOT_FOUND, "Unable to get the command.")
    assert_error(get(cmd("C_deleted"), "sysadmin"), 404, NOT_FOUND)
  end)

  it("case 99: every refusal is 404, never 403", function()
    assert_error(get(cmd("C_basic"), "basic"), 404, NOT_FOUND)
    grant(OWN)
    command_of(get(cmd("C_basic"), "basic"))
    assert_error(get(cmd("C_other"), "basic"), 404, NOT_FOUND)
    grant(OTHERS)
    command_of(get(cmd("C_other"), "basic"))
    assert_error(get(cmd("C_admin"), "outsider"), 404, NOT_FOUND)
  end)

  it("case 100: commands disabled -> 404", function()
    config({ enable_commands = false })
    assert_error(get(cmd("C_admin"), "sysadmin"), 404, NOT_FOUND)
  end)
end)

describe("PUT /api/v4/commands/{id}", function()
  it("case 101: a full replace: trigger lower-cased, method/url changed; token, creator, create_at kept", function()
    local old = command_of(get(cmd("C_other"), "sysadmin"))
    local body = {}
    for k, v in pairs(old) do body[k] = v end
    body.trigger, body.method, body.url = "OtherCmd2", "G", "http://e.test/new"
    body.token, body.creator_id, body.create_at = "x", stub.random_id(), 1
    local c = command_of(put(cmd("C_other"), "sysadmin", body))
    assert.are.equal("othercmd2", c.trigger)
    assert.are.equal("G", c.method)
    assert.are.equal("http://e.test/new", c.url)
    assert.are.equal(old.token, c.token)
    assert.are.equal(old.creator_id, c.creator_id)
    assert.are.equal(old.create_at, c.create_at)
    assert.is_true(c.update_at > old.update_at)
    assert.are.same(c, command_of(get(cmd("C_other"), "sysadmin")))
  end)

  it("case 102: body id != path id -> 400; no team_id -> 400 team_mismatch; no method -> 400 method", function()
    local body = { id = cmd("C_admin"), team_id = team("T"), trigger = "x", method = "P", url = "http://e.test/" }
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing command in request body.")
    body.id = cmd("C_other")
    body.team_id = nil
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "api.command.team_mismatch.app_error",
                 "Unable to update commands across teams.")
    body.team_id = team("T2")
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "api.command.team_mismatch.app_error")
    body.team_id, body.method = team("T"), nil
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "model.command.is_valid.method.app_error")
    body.method, body.url = "P", nil
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "model.command.is_valid.url.app_error")
    assert.are.equal("othercmd", command_of(get(cmd("C_other"), "sysadmin")).trigger) -- unchanged
  end)

  it("case 103: another command's trigger or a built-in's -> 400 duplicate_trigger; its own is fine", function()
    local body = { id = cmd("C_other"), team_id = team("T"), trigger = "basiccmd", method = "P",
                   url = "http://e.test/" }
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "api.command.duplicate_trigger.app_error")
    body.trigger = "join"
    assert_error(put(cmd("C_other"), "sysadmin", body), 400, "api.command.duplicate_trigger.app_error")
    body.trigger = "OTHERCMD"
    assert.are.equal("othercmd", command_of(put(cmd("C_other"), "sysadmin", body)).trigger)
  end)

  it("case 104: basic -> 404; basic+own on another's -> 403; on its own -> 200", function()
    local function body(name, url)
      return { id = cmd(name), team_id = team("T"), trigger = fx.commands[name].trigger, method = "G", url = url }
    end
    assert_error(put(cmd("C_basic"), "basic", body("C_basic", "http://e.test/b")), 404,
                 "store.sql_command.save.get.app_error")
    grant(OWN)
    assert_error(put(cmd("C_other"), "basic", body("C_other", "http://e.test/o")), 403,
                 "api.context.permissions.app_error")
    local c = command_of(put(cmd("C_basic"), "basic", body("C_basic", "http://e.test/b")))
    assert.are.equal("http://e.test/b", c.url)
  end)

  it("case 105: junk id -> 400; unknown id (path = body) -> 404", function()
    assert_error(put("junk", "sysadmin", { id = "junk" }), 400, "api.context.invalid_url_param.app_error")
    local id = stub.random_id()
    assert_error(put(id, "sysadmin", { id = id, team_id = team("T") }), 404, "store.sql_command.save.get.app_error")
  end)
end)

describe("DELETE /api/v4/commands/{id}", function()
  it("case 106: basic+own deletes C_basic -> {\"status\":\"OK\"}; then it is gone everywhere", function()
    grant(OWN)
    stub.assert_status_ok(delete(cmd("C_basic"), "basic"))
    assert_error(get(cmd("C_basic"), "sysadmin"), 404, "store.sql_command.save.get.app_error")
    assert_error(delete(cmd("C_basic"), "sysadmin"), 404, "store.sql_command.save.get.app_error")
    local _, by_id = list_of(list("sysadmin", "team_id=" .. team("T") .. "&custom_only=true"))
    assert.is_nil(by_id[cmd("C_basic")])
    local stored = control("GET", "/__stub/fixtures").commands.C_basic
    assert.is_true(stored.delete_at > 0)
    assert.are.equal(stored.delete_at, stored.update_at)
    assert_error(call("POST", "/api/v4/commands/execute", { as = "basic", body = cjson.encode({
      channel_id = channel("CH"), command = "/basiccmd" }) }), 404, "api.command.execute_command.not_found.app_error")
    command_of(create("sysadmin", new_command{ trigger = "basiccmd" }), 201)
  end)

  it("case 107: basic+own on another's -> 403; basic -> 404; junk 400; unknown or deleted 404", function()
    assert_error(delete(cmd("C_admin"), "basic"), 404, "store.sql_command.save.get.app_error")
    grant(OWN)
    assert_error(delete(cmd("C_other"), "basic"), 403, "api.context.permissions.app_error")
    assert_error(delete("junk", "sysadmin"), 400, "api.context.invalid_url_param.app_error")
    assert_error(delete(stub.random_id(), "sysadmin"), 404, "store.sql_command.save.get.app_error")
    assert_error(delete(cmd("C_deleted"), "sysadmin"), 404, "store.sql_command.save.get.app_error")
    command_of(get(cmd("C_other"), "sysadmin")) -- still there
  end)
end)

describe("PUT /api/v4/commands/{id}/move", function()
  it("case 108: sysadmin moves C_admin to T2 -> OK; same token, team T2", function()
    stub.assert_status_ok(move_to(cmd("C_admin"), "sysadmin", "T2"))
    local c = command_of(get(cmd("C_admin"), "sysadmin"))
    assert.are.equal(team("T2"), c.team_id)
    assert.are.equal(fx.commands.C_admin.token, c.token)
    assert.is_true(c.update_at > fx.commands.C_admin.update_at)
  end)

  it("case 109: unknown team -> 404; bad id -> 400; body not json -> 400 team_id", function()
    assert_error(move(cmd("C_admin"), "sysadmin", cjson.encode({ team_id = stub.random_id() })), 404,
                 "app.team.get.find.app_error", "Unable to find the existing team.")
    assert_error(move(cmd("C_admin"), "sysadmin", "{}"), 404, "app.team.get.find.app_error")
    assert_error(move("bogus", "sysadmin", cjson.encode({ team_id = team("T2") })), 400,
                 "api.context.invalid_url_param.app_error")
    assert_error(move(cmd("C_admin"), "sysadmin", "not json"), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing team_id in request body.")
  end)

  it("case 110: the creator (basic2) has no manage_own on T2 -> 400 creator_no_permission", function()
    grant(OWN, OTHERS)
    assert_error(move_to(cmd("C_other"), "basic", "T2"), 400,
                 "api.command.move_command.creator_no_permission.app_error", "No permission to move command")
    assert.are.equal(team("T"), command_of(get(cmd("C_other"), "sysadmin")).team_id)
  end)

  it("case 111: basic+own moves its own to T2 -> OK; another's -> 403", function()
    grant(OWN)
    assert_error(move_to(cmd("C_other"), "basic", "T2"), 403, "api.context.permissions.app_error")
    stub.assert_status_ok(move_to(cmd("C_basic"), "basic", "T2"))
    assert.are.equal(team("T2"), command_of(get(cmd("C_basic"), "sysadmin")).team_id)
  end)

  it("case 112: outsider, unknown command, destination T -> 403 (destination first)", function()
    assert_error(move_to(stub.random_id(), "outsider", "T"), 403, "api.context.permissions.app_error")
    assert_error(move_to(stub.random_id(), "sysadmin", "T"), 404, "store.sql_command.save.get.app_error")
  end)

  it("case 113: the trigger is taken on the destination -> 400 duplicate_trigger; the command stays", function()
    grant(OWN)
    command_of(create("sysadmin", new_command{ team_id = team("T2"), trigger = "basiccmd" }), 201)
    assert_error(move_to(cmd("C_basic"), "sysadmin", "T2"), 400, "api.command.duplicate_trigger.app_error")
    assert.are.equal(team("T"), command_of(get(cmd("C_basic"), "sysadmin")).team_id)
  end)
end)

describe("POST /api/v4/commands/execute", function()
  local function execute(as, args, raw)
    return call("POST", "/api/v4/commands/execute", { as = as, body = raw or cjson.encode(args) })
  end
  local function run(as, command, channel_name, extra)
    local args = { channel_id = channel(channel_name or "CH"), command = command }
    for k, v in pairs(extra or {}) do args[k] = v end
    return execute(as, args)
  end
  -- A CommandResponse answer: all 12 keys in order, snake_case, newline.
  local function response_of(r)
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("application/json", r.h["content-type"])
    assert.are.equal("\n", r.body:sub(-1))
    assert.are.same(RESPONSE_KEYS, stub.keys(r.body))
    return cjson.decode(r.body)
  end
  local function posts() return control("GET", "/__stub/posts") end
  local function received() return control("GET", "/__stub/harness/requests") end
  local function reply_with(tbl) control("PUT", "/__stub/harness/reply", cjson.encode(tbl)) end

  it("case 114: /shrug hi -> in_channel, hi + shrug, no trigger_id; a post in CH", function()
    local r = run("basic", "/shrug hi")
    local resp = response_of(r)
    assert.are.equal("in_channel", resp.response_type)
    assert.are.equal("hi " .. SHRUG, resp.text)
    assert.are.equal("", resp.trigger_id)
    assert.is_truthy(r.body:find('"props":null,', 1, true))
    assert.is_truthy(r.body:find('"attachments":null,"extra_responses":null}\n$'))
    local p = posts()
    assert.are.equal(1, #p)
    assert.are.equal(channel("CH"), p[1].channel_id)
    assert.are.equal(user("basic"), p[1].user_id)
    assert.are.equal("hi " .. SHRUG, p[1].message)
    assert.is_false(p[1].ephemeral)
    assert.are.equal(SHRUG, response_of(run("basic", "/shrug")).text)
    assert.are.equal(0, #received())
  end)

  it("case 115: /echo alone -> ephemeral error text; /echo hi -> empty response, a post of hi", function()
    local resp = response_of(run("basic", "/echo"))
    assert.are.equal("ephemeral", resp.response_type)
    assert.are.equal("A message must be provided with the /echo command.", resp.text)
    local p = posts()
    assert.are.equal(1, #p)
    assert.is_true(p[1].ephemeral)
    resp = response_of(run("basic", "/echo hello world"))
    assert.are.equal("", resp.response_type)
    assert.are.equal("", resp.text)
    p = posts()
    assert.are.equal(2, #p)
    assert.are.equal("hello world", p[2].message)
    assert.is_false(p[2].ephemeral)
    assert.are.equal("Delays must be under 10000 seconds.", response_of(run("basic", "/echo hi 10001")).text)
    -- a delay in seconds: the post comes later; a quoted message keeps its spaces
    local before = #posts()
    response_of(run("basic", '/echo "later on" 1'))
    assert.are.equal(before, #posts())
    socket.sleep(1.5)
    p = posts()
    assert.are.equal(before + 1, #p)
    assert.are.equal("later on", p[#p].message)
  end)

  it("case 116: no trigger or a bad channel id -> 400 execute_command.start", function()
    for _, args in ipairs({ { channel_id = channel("CH"), command = "" }, { channel_id = channel("CH"), command = "/" },
                            { channel_id = channel("CH"), command = "shrug" },
                            { channel_id = "junk", command = "/shrug" }, { command = "/shrug" } }) do
      assert_error(execute("basic", args), 400, "api.command.execute_command.start.app_error",
                   "No command trigger found.")
    end
  end)

  it("case 117: unknown trigger -> 404 not_found naming it", function()
    local msg = assert_error(run("basic", "/nosuchcmd x"), 404, "api.command.execute_command.not_found.app_error")
    assert.are.equal("Command with a trigger of 'nosuchcmd' not found. To send a message beginning with \"/\", "
                     .. "try adding an empty space at the beginning of the message.", msg)
    msg = assert_error(run("basic", "/" .. ("x"):rep(600)), 404, "api.command.execute_command.not_found.app_error")
    assert.is_truthy(msg:find("'" .. ("x"):rep(512) .. "...'", 1, true))
  end)

  it("case 118: no create_post -> 403 (unknown channel too, even for sysadmin); archived -> 400", function()
    assert_error(run("outsider", "/shrug"), 403, "api.context.permissions.app_error")
    assert_error(run("basic", "/shrug", "CH_OUT"), 403, "api.context.permissions.app_error")
    assert_error(execute("sysadmin", { channel_id = stub.random_id(), command = "/shrug" }), 403,
                 "api.context.permissions.app_error")
    assert_error(run("basic", "/shrug", "CH_ARCH"), 400, "api.command.execute_command.deleted.error",
                 "Can not run command in deleted channel.")
    response_of(run("sysadmin", "/shrug", "CH_OUT")) -- manage_system
  end)

  it("case 119: /basiccmd (method G) -> E gets a GET with every parameter; trigger_id 26 chars", function()
    local resp = response_of(run("basic", "/basiccmd  a b"))
    assert.are.equal("ok from E", resp.text)
    assert.are.equal("in_channel", resp.response_type)
    assert.is_truthy(resp.trigger_id:match(ID_PATTERN))
    local got = received()
    assert.are.equal(1, #got)
    local e = got[1]
    assert.are.equal("GET", e.method)
    assert.are.equal("/__harness/E/", e.path)
    assert.are.equal("x=1&", e.query:sub(1, 4)) -- the URL's own query first
    local q = stub.form(e.query)
    local expect = {
      x = "1", token = fx.commands.C_basic.token, team_id = team("T"), team_domain = fx.teams.T.name,
      channel_id = channel("CH"), channel_name = fx.channels.CH.name, user_id = user("basic"),
      user_name = "basic", command = "/basiccmd", text = " a b", root_id = "",
    }
    for k, v in pairs(expect) do assert.are.same({ v }, q[k], k) end
    assert.is_truthy(q.response_url[1]:match("^http://mm%.test/hooks/commands/[%w]+$"))
    assert.is_truthy(q.response_url[1]:match("/(%w+)$"):match(ID_PATTERN))
    -- base64 of "<client trigger id>:<user id>:<ms>:<base64 signature>"
    local client_id, uid, ms, sig = mime.unb64(q.trigger_id[1]):match("^(%w+):(%w+):(%d+):([%w+/]+=*)$")
    assert.are.equal(resp.trigger_id, client_id)
    assert.are.equal(user("basic"), uid)
    assert.is_true(math.abs(tonumber(ms) - stub.now_ms()) < 60000)
    assert.is_true(#sig > 40)
    assert.are.equal("Token " .. fx.commands.C_basic.token, stub.header(e.headers, "Authorization"))
    assert.are.equal("application/json", stub.header(e.headers, "Accept"))
    assert.is_nil(stub.header(e.headers, "Content-Type"))
    assert.are.equal("", e.body)
    local p = posts()
    assert.are.equal("ok from E", p[1].message)
    assert.are.equal("true", p[1].props.from_webhook)
  end)

  it("case 120: /ADMINCMD hello (method P) -> E gets a form POST", function()
    response_of(run("basic", "/ADMINCMD hello"))
    local e = received()[1]
    assert.are.equal("POST", e.method)
    assert.are.equal("/__harness/E", e.path)
    assert.are.equal("", e.query)
    assert.are.equal("application/x-www-form-urlencoded", stub.header(e.headers, "Content-Type"))
    assert.are.equal(tostring(#e.body), stub.header(e.headers, "Content-Length"))
    local f = stub.form(e.body)
    assert.are.same({ "hello" }, f.text)
    assert.are.same({ "/admincmd" }, f.command)
    assert.are.same({ fx.commands.C_admin.token }, f.token)
    assert.are.equal("Token " .. fx.commands.C_admin.token, stub.header(e.headers, "Authorization"))
  end)

  it("case 121: E 500 -> 500 failed_resp; E text/plain -> its text; E unreachable -> 500 failed", function()
    reply_with({ status = 500, body = "boom" })
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.failed_resp.app_error",
                 "Command with a trigger of 'basiccmd' returned response 500 Internal Server Error.")
    reply_with({ status = 200, content_type = "text/plain", body = "hello" })
    local resp = response_of(run("basic", "/basiccmd"))
    assert.are.equal("hello", resp.text)
    assert.are.equal("", resp.response_type)
    assert.is_truthy(resp.trigger_id:match(ID_PATTERN))
    local p = posts()
    assert.are.equal("hello", p[#p].message)
    assert.is_true(p[#p].ephemeral)
    reply_with({ unreachable = true })
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.failed.app_error",
                 "Command with a trigger of 'basiccmd' failed.")
    reply_with({ unreachable = false, content_type = "application/json", body = "{not json" })
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.failed.app_error")
    reply_with({ body = '{"text":5}' })
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.failed.app_error")
  end)

  it("case 122: SiteURL empty -> custom commands 400 site_url_required; built-ins work", function()
    config({ site_url = "" })
    assert_error(run("basic", "/basiccmd"), 400, "api.command.execute_command.site_url_required.app_error",
                 "SiteURL must be configured to use slash commands")
    assert.are.equal(0, #received())
    response_of(run("basic", "/echo x"))
    config({ site_url = "https://chat.example.com/sub" })
    response_of(run("basic", "/basiccmd"))
    assert.is_truthy(stub.form(received()[1].query).response_url[1]:match("^https://chat%.example%.com/sub/hooks/"))
  end)

  it("case 123: commands disabled -> 501, built-ins too", function()
    config({ enable_commands = false })
    assert_error(run("basic", "/echo x"), 501, "api.command.disabled.app_error")
    assert_error(run("basic", "/basiccmd"), 501, "api.command.disabled.app_error")
  end)

  it("case 124: the body's team_id is replaced by the channel's", function()
    response_of(run("basic", "/basiccmd", "CH", { team_id = team("T2") }))
    assert.are.same({ team("T") }, stub.form(received()[1].query).team_id)
  end)

  it("case 125: DM: team_id T -> 200; none -> 403; T2 -> 404 not_found", function()
    local resp = response_of(run("basic", "/basiccmd", "DM", { team_id = team("T") }))
    assert.are.equal("ok from E", resp.text)
    local q = stub.form(received()[1].query)
    assert.are.same({ fx.channels.DM.name }, q.channel_name)
    assert.are.same({ channel("DM") }, q.channel_id)
    assert_error(run("basic", "/basiccmd", "DM"), 403, "api.context.permissions.app_error")
    assert_error(run("basic", "/basiccmd", "DM", { team_id = team("T2") }), 404,
                 "api.command.execute_command.not_found.app_error")
    -- sysadmin passes the DM check, then the team "" is not found (families §3.10 step 7)
    assert_error(run("sysadmin", "/shrug", "DM"), 404, "app.team.get.find.app_error")
  end)

  it("case 126: body not json -> 400 invalid_body_param command_args; no auth -> 401", function()
    assert_error(execute("basic", nil, "not json"), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing command_args in request body.")
    assert_error(execute(nil, { channel_id = channel("CH"), command = "/shrug" }), 401,
                 "api.context.session_expired.app_error")
  end)

  it("the integration's JSON reply becomes the CommandResponse (props, extra responses, Slack text)", function()
    reply_with({ body = cjson.encode({
      response_type = "in_channel", text = "<!channel> from <@" .. user("basic2") .. "> see <http://x.test|x>",
      props = { b = 1.5, a = { 1, "two" } }, username = "bot", goto_location = "http://go.test",
      extra_responses = { { text = "extra", response_type = "ephemeral" } }, unknown = true,
    }) })
    local r = run("basic", "/basiccmd")
    local resp = response_of(r)
    assert.are.equal("@channel from @basic2 see <http://x.test|x>", resp.text)
    assert.is_truthy(r.body:find('"props":{"a":[1,"two"],"b":1.5}', 1, true))
    assert.are.equal("bot", resp.username)
    assert.are.equal("http://go.test", resp.goto_location)
    assert.are.equal(1, #resp.extra_responses)
    assert.are.same(RESPONSE_KEYS, stub.keys(r.body:match('"extra_responses":%[({.*})%]')))
    assert.are.equal("extra", resp.extra_responses[1].text)
    assert.are.equal("", resp.extra_responses[1].trigger_id)
    local p = posts()
    assert.are.equal(2, #p)
    assert.are.equal("@channel from @basic2 see [x](http://x.test)", p[1].message)
    assert.are.equal(1.5, p[1].props.b)
    assert.are.equal("extra", p[2].message)
    assert.is_true(p[2].ephemeral)
    -- a post redirected to a channel the caller is not in fails: 500
    reply_with({ body = cjson.encode({ response_type = "in_channel", text = "x", channel_id = channel("CH_OUT") }) })
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.create_post_failed.app_error",
                 "Command 'basiccmd' failed to post response. Please contact your System Administrator.")
  end)

  it("mentions of team members and open channels are sent to the integration", function()
    response_of(run("basic", "/admincmd hi @basic2, @outsider and ~ch-out, a@basic"))
    local f = stub.form(received()[1].body)
    assert.are.same({ "basic2" }, f.user_mentions)
    assert.are.same({ user("basic2") }, f.user_mentions_ids)
    assert.are.same({ "ch-out" }, f.channel_mentions)
    assert.are.same({ channel("CH_OUT") }, f.channel_mentions_ids)
  end)

  it("PUT /__stub/harness/reply checks every key before applying any; reset restores the default", function()
    local rawhttp = require "support.rawhttp"
    for _, bad in ipairs({ '{"status":99}', '{"status":"500"}', '{"body":5}', '{"nope":1}', '{"unreachable":1}',
                           '{"status":500,"nope":1}', "[1]", "not json" }) do
      local r = assert(rawhttp.request(stub.URL, { method = "PUT", path = "/__stub/harness/reply", body = bad }))
      assert.are.equal(400, r.status, bad)
      assert.are.equal("string", type(cjson.decode(r.body).error), bad)
    end
    local default = { status = 200, content_type = "application/json", unreachable = false,
                      body = '{"response_type":"in_channel","text":"ok from E"}' }
    assert.are.same(default, control("GET", "/__stub/harness/reply"))
    reply_with({ status = 201, content_type = "" })
    assert.are.same({ status = 201, content_type = "", unreachable = false, body = default.body },
                    control("GET", "/__stub/harness/reply"))
    assert_error(run("basic", "/basiccmd"), 500, "api.command.execute_command.failed_resp.app_error",
                 "Command with a trigger of 'basiccmd' returned response 201 Created.")
    stub.reset()
    assert.are.same(default, control("GET", "/__stub/harness/reply"))
  end)

  it("other built-ins are reserved but not emulated: 501 from the stub", function()
    assert_error(run("basic", "/join ~ch"), 501, "mmstub.command.builtin_not_emulated",
                 "mm-stub does not emulate the built-in command /join.")
  end)
end)
