-- The commands API through the client (issue 9), against the stub: every
-- commands case of api-contract-families.md §6 (75-126) as methods, the
-- calls in batches and as module-level functions, the exact bytes each
-- call sends (the stub's request log), the argument checks (raised before
-- anything is sent) and rotate_team_tokens.
--
-- The Go client (families §4.1) sends whole structs (`"id":""`,
-- `"token":""`, zero times ...), url.Values in sorted order with `+` for a
-- space, and escapes <, >, & and U+2028/9 in JSON strings. This client
-- sends the fields given, in the struct's order; query parameters in the
-- schema's order, percent-encoded (%20); JSON strings with only what JSON
-- requires escaped (and DEL as \u007f). The server decodes either the
-- same way, which the stub (a Go-faithful decoder) shows by storing
-- exactly what was given.
--
-- Cases the client cannot send by itself (a body that is not JSON, no
-- token, a body id that is not the path's) go through client:request or
-- say why they cannot happen.
local mm = require "mm"
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local form = require("support.stubapi").form

local raises, http_error, ALPHABET = check.raises, check.http_error, check.ALPHABET

-- check.sent for a request as the server took it from `token`
local function sent(r, method, uri, body, token)
  check.sent(r, { method = method, uri = uri, body = body, token = token })
end

local UNKNOWN = clients.UNKNOWN
local OWN, OTHERS = "manage_own_slash_commands", "manage_others_slash_commands"
local PERMISSIONS = "api.context.permissions.app_error"
local NOT_FOUND = "store.sql_command.save.get.app_error"
local DUPLICATE = "api.command.duplicate_trigger.app_error"
local COMMAND_KEYS = { "auto_complete", "auto_complete_desc", "auto_complete_hint", "create_at", "creator_id",
                       "delete_at", "description", "display_name", "icon_url", "id", "method", "plugin_id", "team_id",
                       "token", "trigger", "update_at", "url", "username" }
local SHRUG = "\194\175\\\\\\_(\227\131\132)\\_/\194\175" -- ¯\\\_(ツ)\_/¯ (families 3.10)

local fx -- the fixtures: ids and the tokens they start with

local team, cmd, channel, user = clients.team, clients.cmd, clients.channel, clients.user

-- +own / +others of §6: permissions added to team_user.
local function grant(...) stub.grant("team_user", { ... }) end

-- A valid new command for team T, with `extra` merged in.
local function new_command(extra)
  local t = { team_id = team("T"), trigger = "newcmd", method = "P", url = "http://e.test/h" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A Command result: a plain table of the 18 fields, times as integers
-- (Lua 5.3+), equal to what the stub now stores.
local function assert_command(c)
  assert.is_table(c)
  assert.is_nil(getmetatable(c))
  assert.same(COMMAND_KEYS, check.keys(c))
  for _, k in ipairs{ "create_at", "update_at", "delete_at" } do
    if math.type then assert.equal("integer", math.type(c[k]), k) end
  end
  assert.is_boolean(c.auto_complete)
  if c.id ~= "" then assert.same(stub.command(c.id), c) end
  return c
end

-- A list result: a plain table of plain tables; and an index by id.
local function assert_list(list)
  assert.is_table(list)
  assert.is_nil(getmetatable(list))
  local by_id = {}
  for _, c in ipairs(list) do
    assert.is_nil(getmetatable(c))
    if c.id then by_id[c.id] = c end
  end
  return list, by_id
end

local function by_trigger(list, trigger)
  for _, c in ipairs(list) do
    if c.trigger == trigger then return c end
  end
end

-- The JSON text of a command as the client sends it for update_command:
-- every field, in the server's order.
local function command_json(c)
  local function s(v) return '"' .. v .. '"' end
  return ("{%s}"):format(table.concat({
    '"id":' .. s(c.id), '"token":' .. s(c.token), ('"create_at":%d'):format(c.create_at),
    ('"update_at":%d'):format(c.update_at), ('"delete_at":%d'):format(c.delete_at),
    '"creator_id":' .. s(c.creator_id), '"team_id":' .. s(c.team_id), '"trigger":' .. s(c.trigger),
    '"method":' .. s(c.method), '"username":' .. s(c.username), '"icon_url":' .. s(c.icon_url),
    '"auto_complete":' .. tostring(c.auto_complete), '"auto_complete_desc":' .. s(c.auto_complete_desc),
    '"auto_complete_hint":' .. s(c.auto_complete_hint), '"display_name":' .. s(c.display_name),
    '"description":' .. s(c.description), '"url":' .. s(c.url), '"plugin_id":' .. s(c.plugin_id),
  }, ","))
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- The only request the stub received.
local function only_request()
  local reqs = stub.requests()
  assert.equal(1, #reqs)
  return reqs[1]
end

local function nothing_sent() assert.same({}, stub.requests()) end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
end)

describe("create_command (POST /api/v4/commands)", function()
  it("case 75: basic without manage_own_slash_commands gets 403", function()
    local created, err = clients.new("basic"):create_command(new_command())
    assert.is_nil(created)
    http_error(err, 403, PERMISSIONS, "You do not have the appropriate permissions.")
    assert.equal("", err.detailed_error)
    assert.equal("POST", err.method)
    assert.equal("/api/v4/commands", err.path)
    assert.equal(1, err.attempts)
    assert.equal("mm: HTTP 403 " .. PERMISSIONS .. ": You do not have the appropriate permissions. "
      .. "(POST /api/v4/commands, request_id " .. err.request_id .. ")", tostring(err))
  end)

  it("case 76: sysadmin gets the new command as a plain table; the body holds the given fields in order", function()
    local c = clients.new("sysadmin")
    local before = os.time() * 1000
    local created, err = c:create_command(new_command())
    assert.is_nil(err)
    assert_command(created)
    assert.matches(ALPHABET, created.id)
    assert.matches(ALPHABET, created.token)
    assert.equal(26, #created.id)
    assert.equal(26, #created.token)
    assert.are_not.equal(created.id, created.token)
    assert.equal(user("sysadmin"), created.creator_id)
    assert.equal(team("T"), created.team_id)
    assert.equal(created.create_at, created.update_at)
    assert.is_true(created.create_at >= before - 1000 and created.create_at <= os.time() * 1000 + 1000)
    assert.equal(0, created.delete_at)
    assert.equal("", created.plugin_id)
    sent(only_request(), "POST", "/api/v4/commands",
      '{"team_id":"' .. team("T") .. '","trigger":"newcmd","method":"P","url":"http://e.test/h"}',
      fx.users.sysadmin.token)
    local again, dup = c:create_command(new_command())
    assert.is_nil(again)
    http_error(dup, 400, DUPLICATE, "This trigger word is already in use. Please choose another word.")
  end)

  it("sends every optional field in the server's order, and the stub stores each as given", function()
    local c = clients.new("sysadmin")
    local tok = "abcdefghijklmnopqrstuvwxyz"
    local created = assert(c:create_command(new_command{
      description = "d", display_name = "D", auto_complete_hint = "[h]", auto_complete_desc = "ad",
      auto_complete = true, icon_url = "http://i.test/i.png", username = "bot", method = "G",
      creator_id = user("basic"), token = tok,
    }))
    sent(only_request(), "POST", "/api/v4/commands",
      '{"token":"' .. tok .. '","creator_id":"' .. user("basic") .. '","team_id":"' .. team("T")
      .. '","trigger":"newcmd","method":"G","username":"bot","icon_url":"http://i.test/i.png",'
      .. '"auto_complete":true,"auto_complete_desc":"ad","auto_complete_hint":"[h]","display_name":"D",'
      .. '"description":"d","url":"http://e.test/h"}', fx.users.sysadmin.token)
    assert_command(created)
    assert.equal(tok, created.token)
    assert.equal(user("basic"), created.creator_id)
    assert.equal("G", created.method)
    assert.equal("bot", created.username)
    assert.equal("http://i.test/i.png", created.icon_url)
    assert.is_true(created.auto_complete)
    assert.equal("ad", created.auto_complete_desc)
    assert.equal("[h]", created.auto_complete_hint)
    assert.equal("D", created.display_name)
    assert.equal("d", created.description)
  end)

  it("escapes strings as JSON needs; what the server decodes is exactly what was given", function()
    -- quote, backslash, newline, <>& (Go writes \u003c...), U+2028 (Go: \u2028), DEL, '/', é
    local text = 'a"\\\n<>&\226\128\168\127/\195\169'
    local created = assert(clients.new("sysadmin"):create_command(new_command{ display_name = text,
                                                                               auto_complete_desc = text }))
    assert.equal(text, created.display_name)
    assert.equal(text, stub.command(created.id).auto_complete_desc)
    local escaped = '"a\\"\\\\\\n<>&\226\128\168\\u007f/\195\169"'
    assert.equal('{"team_id":"' .. team("T") .. '","trigger":"newcmd","method":"P","auto_complete_desc":' .. escaped
      .. ',"display_name":' .. escaped .. ',"url":"http://e.test/h"}', only_request().body)
  end)

  it("case 77: triggers come back lower-cased; built-in triggers are taken", function()
    local c = clients.new("sysadmin")
    assert.equal("mixedcase", assert(c:create_command(new_command{ trigger = "MixedCase" })).trigger)
    for _, t in ipairs{ "MIXEDcase", "Echo", "join" } do
      local _, err = c:create_command(new_command{ trigger = t })
      http_error(err, 400, DUPLICATE)
    end
  end)

  it("case 78: bad triggers raise before anything is sent; 128 bytes is accepted, 129 is not", function()
    local c = clients.new("sysadmin")
    local function bad(trigger, why)
      raises("^bad argument #1 to 'create_command' %(field 'trigger': " .. why,
        c.create_command, c, new_command{ trigger = trigger })
    end
    bad("/slash", "trigger must not start with '/'")
    bad("two words", "trigger must be ")
    bad("tab\there", "trigger must be ")
    bad("", "trigger must not be empty")
    bad(("a"):rep(129), "trigger must be at most 128 bytes, got 129")
    bad("a\0b", "trigger must ")
    bad(5, "trigger must be a string, got number")
    bad(true, "trigger must be a string, got boolean")
    -- the newest servers take only ^[A-Za-z0-9_./-]+$ (families 3.1, fork only)
    bad("caf\195\169", "trigger must be ")
    bad("a?b", "trigger must be ")
    bad(("\195\169"):rep(64), "trigger must be ")
    nothing_sent()
    local long = assert(c:create_command(new_command{ trigger = ("a"):rep(128) }))
    assert.equal(("a"):rep(128), long.trigger)
    assert.equal("a_b-c.d/e", assert(c:create_command(new_command{ trigger = "a_b-c.d/e" })).trigger)
  end)

  it("case 79: a method other than exactly P or G raises before anything is sent", function()
    local c = clients.new("sysadmin")
    for _, m in ipairs{ "X", "", "p", "g", "POST", " P", 1 } do
      raises("^bad argument #1 to 'create_command' %(field 'method': method must be \"P\" %(POST%) or \"G\" "
        .. "%(GET%), got ",
        c.create_command, c, new_command{ method = m })
    end
    raises("field 'method' is required", c.create_command, c, { team_id = team("T"), trigger = "x", url = "http://x/" })
    nothing_sent()
    assert.equal("G", assert(c:create_command(new_command{ method = "G" })).method)
  end)

  it("case 80: a url not http(s)://host raises before anything is sent; 1024 bytes is the limit", function()
    local c = clients.new("sysadmin")
    raises("field 'url': url must not be empty", c.create_command, c, new_command{ url = "" })
    for _, u in ipairs{ "ftp://x", "1234", "https:////example.com", "http://", "http:/x", "//x.test/",
                        "HTTP://x.test/", "Https://x.test/", "http://exa mple.com/", "http://x/a\tb",
                        "http://u:p@/x", "http://x.test:port/", "http://x/%zz" } do
      raises("^bad argument #1 to 'create_command' %(field 'url': url must ", c.create_command, c,
        new_command{ url = u })
    end
    local prefix = "http://x.test/" -- 14 bytes
    raises("field 'url': url must be at most 1024 bytes, got 1025", c.create_command, c,
      new_command{ url = prefix .. ("a"):rep(1011) })
    -- a 2-byte character across the limit
    raises("field 'url': url must be at most 1024 bytes, got 1025", c.create_command, c,
      new_command{ url = prefix .. ("a"):rep(1009) .. "\195\169" })
    raises("field 'url': url must be valid UTF%-8", c.create_command, c, new_command{ url = prefix .. "\255" })
    raises("field 'url': url must not contain NUL bytes", c.create_command, c, new_command{ url = prefix .. "\0" })
    raises("field 'url': url must be a string, got table", c.create_command, c, new_command{ url = {} })
    nothing_sent()
    local n = 0
    for _, u in ipairs{ prefix .. ("a"):rep(1010), prefix .. ("\195\169"):rep(505),
                        "https://u:p@example.com:8443/a?b=c", "http://x.test:8065", "http://127.0.0.1/%41" } do
      n = n + 1
      assert.equal(u, assert(c:create_command(new_command{ trigger = "u" .. n, url = u })).url)
    end
  end)

  it("case 81: display_name over 64 bytes and description over 128 raise; multi-byte text counts in bytes",
     function()
    local c = clients.new("sysadmin")
    local function bad(field, value, why)
      raises("^bad argument #1 to 'create_command' %(field '" .. field .. "': " .. why,
        c.create_command, c, new_command{ [field] = value })
    end
    local E, EMOJI, CJK = "\195\169", "\240\159\152\128", "\230\151\165" -- é (2 bytes), 😀 (4), 日 (3)
    bad("display_name", ("d"):rep(65), "display_name must be at most 64 bytes, got 65")
    bad("display_name", E:rep(32) .. "a", "display_name must be at most 64 bytes, got 65")
    bad("display_name", EMOJI:rep(16) .. "a", "display_name must be at most 64 bytes, got 65")
    bad("description", ("d"):rep(129), "description must be at most 128 bytes, got 129")
    bad("description", CJK:rep(43), "description must be at most 128 bytes, got 129")
    -- text that is not UTF-8: the server's decoder would put U+FFFD in its place
    for _, s in ipairs{ "\255", "ab\195", "\192\175", "\237\160\128", "\244\144\128\128", "\128" } do
      bad("display_name", s, "display_name must be valid UTF%-8")
      bad("description", s, "description must be valid UTF%-8")
      bad("username", s, "value must be valid UTF%-8")
    end
    bad("display_name", "a\0b", "display_name must not contain NUL bytes")
    bad("auto_complete_hint", "\0", "value must not contain NUL bytes")
    bad("display_name", 5, "display_name must be a string, got number")
    bad("auto_complete", "true", "boolean expected, got string")
    nothing_sent()
    local n = 0
    for _, f in ipairs{ { display_name = ("d"):rep(64), description = ("e"):rep(128) },
                        { display_name = E:rep(32), description = E:rep(64) },
                        { display_name = EMOJI:rep(16), description = CJK:rep(42) .. "ab" } } do
      n = n + 1
      f.trigger = "t" .. n
      local created = assert(c:create_command(new_command(f)))
      assert.equal(f.display_name, created.display_name)
      assert.equal(f.description, created.description)
    end
  end)

  it("case 82: a team_id that is not an id raises (the server: 403 for \"\", 400 for junk)", function()
    local c = clients.new("sysadmin")
    raises("field 'team_id': id must be 26 characters, got 0", c.create_command, c, new_command{ team_id = "" })
    raises("field 'team_id': id must be 26 characters, got 4", c.create_command, c, new_command{ team_id = "junk" })
    raises("field 'team_id': id must contain only lower%-case letters and digits", c.create_command, c,
      new_command{ team_id = team("T"):upper() })
    raises("field 'team_id' is required", c.create_command, c, { trigger = "x", method = "P", url = "http://x/" })
    nothing_sent()
  end)

  it("case 83: creator_id of another user needs manage_others and an existing user", function()
    local created = assert(clients.new("sysadmin"):create_command(new_command{ creator_id = user("basic") }))
    assert.equal(user("basic"), created.creator_id)
    grant(OWN)
    local basic = clients.new("basic")
    local _, err = basic:create_command(new_command{ trigger = "b1", creator_id = user("basic2") })
    http_error(err, 403, PERMISSIONS)
    assert.equal(user("basic"), assert(basic:create_command(new_command{ trigger = "b2" })).creator_id)
    grant(OWN, OTHERS)
    _, err = basic:create_command(new_command{ trigger = "b3", creator_id = UNKNOWN })
    http_error(err, 404, "app.user.missing_account.const", "Unable to find the user.")
    raises("field 'creator_id': id must be 26 characters", basic.create_command, basic,
      new_command{ creator_id = "basic" })
  end)

  it("case 84: a body that is not JSON (only client:request can send one) is 400 invalid_body_param", function()
    local body, err = clients.new("sysadmin"):request("POST", "/commands", { body = "not json" })
    assert.is_nil(body)
    http_error(err, 400, "api.context.invalid_body_param.app_error", "Invalid or missing command in request body.")
  end)

  it("case 85: commands disabled: 501 api.command.disabled", function()
    stub.config{ enable_commands = false }
    local _, err = clients.new("sysadmin"):create_command(new_command())
    http_error(err, 501, "api.command.disabled.app_error", "Commands have been disabled by the system admin.")
  end)

  it("case 86: a 26-character token is kept; another raises", function()
    local c = clients.new("sysadmin")
    local tok = "abcdefghijklmnopqrstuvwxyz"
    assert.equal(tok, assert(c:create_command(new_command{ token = tok })).token)
    stub.reset()
    for _, t in ipairs{ "short", tok .. "a", "", 5 } do
      raises("field 'token': token must be 26 letters and digits", c.create_command, c, new_command{ token = t })
    end
    nothing_sent()
  end)

  it("unknown fields, fields a new command cannot have, and a body that is no table raise", function()
    local c = clients.new("sysadmin")
    raises("^bad argument #1 to 'create_command' %(unknown field 'trigerr' "
      .. "%(expected 'token', 'creator_id', 'team_id', ",
      c.create_command, c, new_command{ trigerr = "x" })
    raises("unknown field '1'", c.create_command, c, new_command{ "x" })
    -- a body id makes the server fail (500, families 3.2 step 6); the times
    -- are the server's; delete_at would create a deleted command; a
    -- plugin_id cannot go with the creator the server sets
    for _, f in ipairs{ "id", "create_at", "update_at", "delete_at", "plugin_id" } do
      local extra = { [f] = (f == "id" and UNKNOWN) or (f == "plugin_id" and "com.example") or 5 }
      raises("^bad argument #1 to 'create_command' %(unknown field '" .. f .. "'", c.create_command, c,
        new_command(extra))
    end
    raises("^bad argument #1 to 'create_command' %(table expected, got string%)$", c.create_command, c, "newcmd")
    raises("^bad argument #1 to 'create_command' %(table expected, got no value%)$", c.create_command, c)
    raises("call create_command with a colon", c.create_command, new_command())
    nothing_sent()
  end)
end)

describe("list_commands (GET /api/v4/commands)", function()
  it("case 87: custom_only = true: the live custom commands of T with their tokens", function()
    local list, by_id = assert_list(assert(clients.new("sysadmin"):list_commands{ team_id = team("T"),
                                                                                  custom_only = true }))
    assert.equal(3, #list)
    for i, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      assert.equal(cmd(name), list[i].id)
      assert.equal(fx.commands[name].token, list[i].token)
      assert_command(list[i])
    end
    assert.is_nil(by_id[cmd("C_deleted")])
    -- the Go client sends ?custom_only=true&team_id=... (url.Values sorts)
    sent(only_request(), "GET", "/api/v4/commands?team_id=" .. team("T") .. "&custom_only=true", nil,
      fx.users.sysadmin.token)
  end)

  it("case 88: without custom_only: built-ins (id \"\") and sanitized custom commands", function()
    local list, by_id = assert_list(assert(clients.new("sysadmin"):list_commands{ team_id = team("T") }))
    local echo = assert_command(by_trigger(list, "echo"))
    assert.equal("", echo.id)
    assert.equal(0, echo.create_at)
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      local c = by_id[cmd(name)]
      for _, k in ipairs{ "token", "url", "method", "creator_id" } do assert.equal("", c[k], name .. " " .. k) end
      assert.equal(team("T"), c.team_id)
    end
    assert.is_nil(by_id[cmd("C_deleted")])
    sent(only_request(), "GET", "/api/v4/commands?team_id=" .. team("T"), nil, fx.users.sysadmin.token)
  end)

  it("case 89: basic: built-ins and sanitized C_basic; custom_only is 403", function()
    local c = clients.new("basic")
    local list, by_id = assert_list(assert(c:list_commands{ team_id = team("T") }))
    assert.is_table(by_trigger(list, "echo"))
    assert.equal("Basic cmd", by_id[cmd("C_basic")].auto_complete_desc)
    assert.equal("", by_id[cmd("C_basic")].token)
    assert.is_nil(by_id[cmd("C_admin")])
    assert.is_nil(by_id[cmd("C_other")])
    local none, err = c:list_commands{ team_id = team("T"), custom_only = true }
    assert.is_nil(none)
    http_error(err, 403, PERMISSIONS)
  end)

  it("case 90: basic+own: custom_only only its own, unsanitized; false: built-ins and its own, sanitized", function()
    grant(OWN)
    local c = clients.new("basic")
    local own = assert_list(assert(c:list_commands{ team_id = team("T"), custom_only = true }))
    assert.equal(1, #own)
    assert.equal(fx.commands.C_basic.token, assert_command(own[1]).token)
    stub.reset()
    grant(OWN)
    local all, by_id = assert_list(assert(c:list_commands{ team_id = team("T"), custom_only = false }))
    sent(stub.requests()[1], "GET", "/api/v4/commands?team_id=" .. team("T") .. "&custom_only=false", nil,
      fx.users.basic.token)
    assert.is_table(by_trigger(all, "shrug"))
    assert.equal("", by_id[cmd("C_basic")].token)
    assert.is_nil(by_id[cmd("C_other")])
  end)

  it("case 91: basic+own+others: custom_only gives all three", function()
    grant(OWN, OTHERS)
    local _, by_id = assert_list(assert(clients.new("basic"):list_commands{ team_id = team("T"), custom_only = true }))
    for _, name in ipairs{ "C_admin", "C_basic", "C_other" } do
      assert.equal(fx.commands[name].token, by_id[cmd(name)].token)
    end
  end)

  it("case 92: outsider is 403; no team_id raises (the server's 400 only through client:request)", function()
    local _, err = clients.new("outsider"):list_commands{ team_id = team("T") }
    http_error(err, 403, PERMISSIONS)
    stub.reset()
    local c = clients.new("sysadmin")
    raises("^bad argument #1 to 'list_commands' %(field 'team_id' is required%)$", c.list_commands, c, {})
    raises("^bad argument #1 to 'list_commands' %(query table expected, got no value%)$", c.list_commands, c)
    raises("^bad argument #1 to 'list_commands' %(query table expected, got string%)$", c.list_commands, c, team("T"))
    raises("field 'team_id': id must be 26 characters, got 0", c.list_commands, c, { team_id = "" })
    raises("unknown field 'page'", c.list_commands, c, { team_id = team("T"), page = 0 })
    nothing_sent()
    _, err = c:request("GET", "/commands")
    http_error(err, 400, "api.context.invalid_body_param.app_error", "Invalid or missing team_id in request body.")
  end)

  it("case 93: custom_only is a boolean: anything else raises; the server's ParseBool only by request", function()
    local c = clients.new("sysadmin")
    for _, v in ipairs{ 1, "1", "yes", "true", 0 } do
      raises("field 'custom_only': boolean expected, got " .. type(v), c.list_commands, c,
        { team_id = team("T"), custom_only = v })
    end
    nothing_sent()
    local one = assert(c:request("GET", "/commands", { query = { team_id = team("T"), custom_only = "1" } }))
    assert.equal(3, #one)
    local yes = assert(c:request("GET", "/commands", { query = { team_id = team("T"), custom_only = "yes" } }))
    assert.is_table(by_trigger(yes, "echo"))
  end)

  it("case 94: commands disabled: custom_only is 501; otherwise built-ins only", function()
    stub.config{ enable_commands = false }
    local c = clients.new("sysadmin")
    local _, err = c:list_commands{ team_id = team("T"), custom_only = true }
    http_error(err, 501, "api.command.disabled.app_error")
    local list = assert_list(assert(c:list_commands{ team_id = team("T") }))
    assert.is_true(#list > 0)
    for _, x in ipairs(list) do assert.equal("", x.id) end
  end)
end)

describe("list_autocomplete_commands (GET /api/v4/teams/{team_id}/commands/autocomplete)", function()
  it("case 95: basic: built-ins and sanitized C_basic; outsider 403; junk raises; unknown token 401", function()
    local list, by_id = assert_list(assert(clients.new("basic"):list_autocomplete_commands(team("T"))))
    sent(only_request(), "GET", "/api/v4/teams/" .. team("T") .. "/commands/autocomplete", nil, fx.users.basic.token)
    assert.is_table(by_trigger(list, "echo"))
    assert.equal("basiccmd", by_id[cmd("C_basic")].trigger)
    assert.equal("", by_id[cmd("C_basic")].token)
    assert.is_nil(by_id[cmd("C_admin")])
    assert.is_nil(by_id[cmd("C_other")])
    local _, err = clients.new("outsider"):list_autocomplete_commands(team("T"))
    http_error(err, 403, PERMISSIONS)
    stub.reset()
    local c = clients.new("basic")
    raises("^bad argument #1 to 'list_autocomplete_commands' %(id must be 26 characters, got 4%)$",
      c.list_autocomplete_commands, c, "junk")
    raises("^bad argument #1 to 'list_autocomplete_commands' %(id expected, got no value%)$",
      c.list_autocomplete_commands, c)
    nothing_sent()
    -- a client always sends its token: one the server does not know is the nearest to none
    _, err = clients.new(nil, { token = "nosuchtoken" }):list_autocomplete_commands(team("T"))
    http_error(err, 401, "api.context.session_expired.app_error")
  end)
end)

describe("list_command_autocomplete_suggestions (GET .../commands/autocomplete_suggestions)", function()
  it("case 96: user_input \"/\": PascalCase suggestions with echo, shrug and basiccmd, not admincmd", function()
    local list = assert_list(assert(clients.new("basic"):list_command_autocomplete_suggestions(team("T"),
      { user_input = "/" })))
    sent(only_request(), "GET", "/api/v4/teams/" .. team("T") .. "/commands/autocomplete_suggestions?user_input=%2F",
      nil, fx.users.basic.token)
    local by = {}
    for _, s in ipairs(list) do
      assert.same({ "Complete", "Description", "Hint", "IconData", "Suggestion" }, check.keys(s))
      by[s.Suggestion] = s
    end
    assert.is_table(by.echo)
    assert.is_table(by.shrug)
    assert.same({ Complete = "basiccmd", Suggestion = "basiccmd", Hint = "[arg]", Description = "Basic cmd",
                  IconData = "" }, by.basiccmd)
    assert.is_nil(by.admincmd)
  end)

  it("case 97: /e gives echo, not shrug; channel_id and root_id go in the query; no user_input raises", function()
    local c = clients.new("basic")
    local list = assert(c:list_command_autocomplete_suggestions(team("T"),
      { user_input = "/e", channel_id = channel("CH"), root_id = UNKNOWN }))
    local names = {}
    for _, s in ipairs(list) do names[s.Suggestion] = true end
    assert.is_true(names.echo)
    assert.is_nil(names.shrug)
    sent(only_request(), "GET", "/api/v4/teams/" .. team("T") .. "/commands/autocomplete_suggestions?user_input=%2Fe"
      .. "&channel_id=" .. channel("CH") .. "&root_id=" .. UNKNOWN, nil, fx.users.basic.token)
    stub.reset()
    -- every byte but the unreserved ones percent-encoded (Go: '+' for a space; the server reads both)
    assert.same({}, assert(c:list_command_autocomplete_suggestions(team("T"), { user_input = "/e x&y=z+\195\169" })))
    assert.equal("/api/v4/teams/" .. team("T") .. "/commands/autocomplete_suggestions"
      .. "?user_input=%2Fe%20x%26y%3Dz%2B%C3%A9", only_request().uri)
    stub.reset()
    local f = c.list_command_autocomplete_suggestions
    raises("^bad argument #2 to 'list_command_autocomplete_suggestions' %(field 'user_input' is required%)$",
      f, c, team("T"), { channel_id = channel("CH") })
    raises("field 'user_input': value must not be empty", f, c, team("T"), { user_input = "" })
    raises("field 'user_input': value must be valid UTF%-8", f, c, team("T"), { user_input = "/\255" })
    raises("field 'channel_id': id must be 26 characters, got 2", f, c, team("T"),
      { user_input = "/", channel_id = "CH" })
    raises("unknown field 'userInput'", f, c, team("T"), { userInput = "/" })
    raises("^bad argument #2 to 'list_command_autocomplete_suggestions' %(query table expected, got string%)$",
      f, c, team("T"), "/e")
    raises("^bad argument #1 to 'list_command_autocomplete_suggestions' %(id must be 26 characters, got 4%)$",
      f, c, "junk", { user_input = "/" })
    nothing_sent()
    local _, err = clients.new("outsider"):list_command_autocomplete_suggestions(team("T"), { user_input = "/" })
    http_error(err, 403, PERMISSIONS)
  end)
end)

describe("get_command_by_id (GET /api/v4/commands/{id})", function()
  it("case 98: the full command with its token; junk raises; unknown and deleted are 404", function()
    local c = clients.new("sysadmin")
    local got = assert_command(assert(c:get_command_by_id(cmd("C_basic"))))
    sent(only_request(), "GET", "/api/v4/commands/" .. cmd("C_basic"), nil, fx.users.sysadmin.token)
    assert.equal(fx.commands.C_basic.token, got.token)
    assert.equal(user("basic"), got.creator_id)
    assert.equal(fx.harness_url .. "/?x=1", got.url)
    raises("^bad argument #1 to 'get_command_by_id' %(id must be 26 characters, got 4%)$",
      c.get_command_by_id, c, "junk")
    raises("^bad argument #1 to 'get_command_by_id' %(id expected, got number%)$", c.get_command_by_id, c, 5)
    for _, id in ipairs{ UNKNOWN, cmd("C_deleted") } do
      local none, err = c:get_command_by_id(id)
      assert.is_nil(none)
      http_error(err, 404, NOT_FOUND, "Unable to get the command.")
      assert.equal("GET", err.method)
      assert.equal("/api/v4/commands/" .. id, err.path)
    end
  end)

  it("case 99: every refusal is 404, never 403", function()
    local _, err = clients.new("basic"):get_command_by_id(cmd("C_basic"))
    http_error(err, 404, NOT_FOUND)
    grant(OWN)
    assert_command(assert(clients.new("basic"):get_command_by_id(cmd("C_basic"))))
    _, err = clients.new("basic"):get_command_by_id(cmd("C_other"))
    http_error(err, 404, NOT_FOUND)
    grant(OWN, OTHERS)
    assert_command(assert(clients.new("basic"):get_command_by_id(cmd("C_other"))))
    _, err = clients.new("outsider"):get_command_by_id(cmd("C_admin"))
    http_error(err, 404, NOT_FOUND)
  end)

  it("case 100: commands disabled: 404", function()
    stub.config{ enable_commands = false }
    local _, err = clients.new("sysadmin"):get_command_by_id(cmd("C_admin"))
    http_error(err, 404, NOT_FOUND)
  end)
end)

describe("update_command (PUT /api/v4/commands/{id})", function()
  it("case 101: sends the whole object to cmd.id; trigger lower-cased; token, creator, create_at kept", function()
    local c = clients.new("sysadmin")
    local old = assert(c:get_command_by_id(cmd("C_other")))
    stub.reset()
    local body = copy(old)
    body.trigger, body.method, body.url = "OtherCmd2", "G", "http://e.test/new"
    -- the server keeps these from the stored command, whatever the body says
    body.token, body.creator_id, body.create_at = "abcdefghijklmnopqrstuvwxyz", UNKNOWN, 1
    local updated = assert_command(assert(c:update_command(body)))
    sent(only_request(), "PUT", "/api/v4/commands/" .. cmd("C_other"), command_json(body), fx.users.sysadmin.token)
    assert.equal("othercmd2", updated.trigger)
    assert.equal("G", updated.method)
    assert.equal("http://e.test/new", updated.url)
    assert.equal(old.token, updated.token)
    assert.equal(old.creator_id, updated.creator_id)
    assert.equal(old.create_at, updated.create_at)
    assert.is_true(updated.update_at > old.update_at)
    -- the caller's table is not changed
    assert.equal("OtherCmd2", body.trigger)
    assert.equal(1, body.create_at)
  end)

  it("case 102: the path id is the body's; a missing field raises (the server would blank it)", function()
    local c = clients.new("sysadmin")
    local whole = assert(c:get_command_by_id(cmd("C_other")))
    stub.reset()
    for _, f in ipairs{ "id", "team_id", "trigger", "method", "url", "username", "icon_url", "auto_complete",
                        "auto_complete_desc", "auto_complete_hint", "display_name", "description" } do
      local partial = copy(whole)
      partial[f] = nil
      raises("^bad argument #1 to 'update_command' %(field '" .. f .. "' is required%)$", c.update_command, c, partial)
    end
    raises("field 'username' is required", c.update_command, c,
      { id = cmd("C_other"), team_id = team("T"), trigger = "x", method = "P", url = "http://e.test/" })
    local t = copy(whole)
    t.autocomplete_data = {}
    raises("unknown field 'autocomplete_data'", c.update_command, c, t)
    t = copy(whole)
    t.token = "x" -- the server ignores a body token; no server could hold this one
    raises("field 'token': token must be 26 letters and digits", c.update_command, c, t)
    t = copy(whole)
    t.url = "HTTP://e.test/"
    raises("field 'url': url must ", c.update_command, c, t)
    raises("^bad argument #1 to 'update_command' %(table expected, got string%)$", c.update_command, c, cmd("C_other"))
    raises("^bad argument #1 to 'update_command' %(table expected, got no value%)$", c.update_command, c)
    nothing_sent()
    -- a body id other than the path's (400 on the server) cannot be sent:
    -- the path is made from the body's id
    whole.id = cmd("C_admin")
    whole.trigger = "admincmd"
    assert(c:update_command(whole))
    assert.equal("/api/v4/commands/" .. cmd("C_admin"), only_request().uri)
  end)

  it("case 103: another command's trigger or a built-in's is 400 duplicate_trigger; its own is fine", function()
    local c = clients.new("sysadmin")
    local body = assert(c:get_command_by_id(cmd("C_other")))
    for _, t in ipairs{ "basiccmd", "join" } do
      body.trigger = t
      local _, err = c:update_command(body)
      http_error(err, 400, DUPLICATE)
    end
    body.trigger = "OTHERCMD"
    assert.equal("othercmd", assert(c:update_command(body)).trigger)
  end)

  it("case 104: basic is 404; basic+own on another's is 403, on its own 200", function()
    local admin = clients.new("sysadmin")
    local mine = assert(admin:get_command_by_id(cmd("C_basic")))
    local theirs = assert(admin:get_command_by_id(cmd("C_other")))
    mine.url, theirs.url = "http://e.test/b", "http://e.test/o"
    local _, err = clients.new("basic"):update_command(mine)
    http_error(err, 404, NOT_FOUND)
    grant(OWN)
    _, err = clients.new("basic"):update_command(theirs)
    http_error(err, 403, PERMISSIONS)
    assert.equal("http://e.test/b", assert_command(assert(clients.new("basic"):update_command(mine))).url)
    assert.equal(fx.harness_url, stub.command(cmd("C_other")).url)
  end)

  it("case 105: a junk id raises; an unknown id (path = body) is 404", function()
    local c = clients.new("sysadmin")
    local body = assert(c:get_command_by_id(cmd("C_other")))
    stub.reset()
    body.id = "junk"
    raises("^bad argument #1 to 'update_command' %(field 'id': id must be 26 characters, got 4%)$",
      c.update_command, c, body)
    nothing_sent()
    body.id = UNKNOWN
    local _, err = c:update_command(body)
    http_error(err, 404, NOT_FOUND)
    assert.equal("PUT", err.method)
    assert.equal("/api/v4/commands/" .. UNKNOWN, err.path)
  end)
end)

describe("delete_command (DELETE /api/v4/commands/{id})", function()
  it("case 106: basic+own deletes C_basic: true; then it is gone everywhere and its trigger is free", function()
    grant(OWN)
    local c = clients.new("basic")
    assert.is_true(c:delete_command(cmd("C_basic")))
    sent(only_request(), "DELETE", "/api/v4/commands/" .. cmd("C_basic"), nil, fx.users.basic.token)
    assert.is_true(stub.command(cmd("C_basic")).delete_at > 0)
    local _, err = c:get_command_by_id(cmd("C_basic"))
    http_error(err, 404, NOT_FOUND)
    local _, by_id = assert_list(assert(clients.new("sysadmin"):list_commands{ team_id = team("T"),
                                                                               custom_only = true }))
    assert.is_nil(by_id[cmd("C_basic")])
    _, err = c:execute_command{ channel_id = channel("CH"), command = "/basiccmd" }
    http_error(err, 404, "api.command.execute_command.not_found.app_error")
    assert.equal("basiccmd", assert(c:create_command(new_command{ trigger = "basiccmd" })).trigger)
  end)

  it("case 107: basic+own on another's is 403; basic is 404; junk raises; unknown and deleted are 404", function()
    local _, err = clients.new("basic"):delete_command(cmd("C_admin"))
    http_error(err, 404, NOT_FOUND)
    grant(OWN)
    local c = clients.new("basic")
    _, err = c:delete_command(cmd("C_other"))
    http_error(err, 403, PERMISSIONS)
    assert.equal(0, stub.command(cmd("C_other")).delete_at)
    stub.reset()
    raises("^bad argument #1 to 'delete_command' %(id must be 26 characters, got 4%)$", c.delete_command, c, "junk")
    nothing_sent()
    for _, id in ipairs{ UNKNOWN, cmd("C_deleted") } do
      local ok
      ok, err = clients.new("sysadmin"):delete_command(id)
      assert.is_nil(ok)
      http_error(err, 404, NOT_FOUND)
    end
  end)
end)

describe("move_command (PUT /api/v4/commands/{id}/move)", function()
  it("case 108: sysadmin moves C_admin to T2: true; the token stays", function()
    local c = clients.new("sysadmin")
    assert.is_true(c:move_command(cmd("C_admin"), team("T2")))
    -- as the Go client: {"team_id":...}
    sent(only_request(), "PUT", "/api/v4/commands/" .. cmd("C_admin") .. "/move",
      '{"team_id":"' .. team("T2") .. '"}', fx.users.sysadmin.token)
    local moved = assert(c:get_command_by_id(cmd("C_admin")))
    assert.equal(team("T2"), moved.team_id)
    assert.equal(fx.commands.C_admin.token, moved.token)
  end)

  it("case 109: unknown team 404; bad ids raise; a body not JSON (by request) 400", function()
    local c = clients.new("sysadmin")
    local moved, err = c:move_command(cmd("C_admin"), UNKNOWN)
    assert.is_nil(moved)
    http_error(err, 404, "app.team.get.find.app_error", "Unable to find the existing team.")
    stub.reset()
    raises("^bad argument #1 to 'move_command' %(id must be 26 characters, got 5%)$", c.move_command, c, "bogus",
      team("T2"))
    raises("^bad argument #2 to 'move_command' %(id must be 26 characters, got 5%)$", c.move_command, c,
      cmd("C_admin"), "bogus")
    raises("^bad argument #2 to 'move_command' %(id expected, got no value%)$", c.move_command, c, cmd("C_admin"))
    raises("^bad argument #2 to 'move_command' %(id expected, got table%)$", c.move_command, c, cmd("C_admin"),
      { team_id = team("T2") })
    nothing_sent()
    moved, err = c:request("PUT", "/commands/" .. cmd("C_admin") .. "/move", { body = "not json" })
    assert.is_nil(moved)
    http_error(err, 400, "api.context.invalid_body_param.app_error", "Invalid or missing team_id in request body.")
  end)

  it("case 110: basic+own+others moving basic2's command to T2 is 400 creator_no_permission", function()
    grant(OWN, OTHERS)
    local _, err = clients.new("basic"):move_command(cmd("C_other"), team("T2"))
    http_error(err, 400, "api.command.move_command.creator_no_permission.app_error", "No permission to move command")
  end)

  it("case 111: basic+own moves its own command; another's is 403", function()
    grant(OWN)
    local c = clients.new("basic")
    assert.is_true(c:move_command(cmd("C_basic"), team("T2")))
    assert.equal(team("T2"), stub.command(cmd("C_basic")).team_id)
    local _, err = c:move_command(cmd("C_other"), team("T2"))
    http_error(err, 403, PERMISSIONS)
  end)

  it("case 112: outsider moving an unknown command to T is 403 (destination checked first)", function()
    local _, err = clients.new("outsider"):move_command(UNKNOWN, team("T"))
    http_error(err, 403, PERMISSIONS)
  end)

  it("case 113: a trigger taken on the destination is 400 duplicate_trigger; the command stays", function()
    grant(OWN)
    local c = clients.new("sysadmin")
    assert(c:create_command(new_command{ team_id = team("T2"), trigger = "basiccmd" }))
    local _, err = c:move_command(cmd("C_basic"), team("T2"))
    http_error(err, 400, DUPLICATE)
    assert.equal(team("T"), assert(c:get_command_by_id(cmd("C_basic"))).team_id)
  end)
end)

describe("regen_token and regen_command_token (PUT /api/v4/commands/{id}/regen_token)", function()
  it("return the new token, the one the server now holds; no body is sent", function()
    local c = clients.new("sysadmin")
    local t1 = assert(c:regen_token(cmd("C_admin")))
    sent(only_request(), "PUT", "/api/v4/commands/" .. cmd("C_admin") .. "/regen_token", nil, fx.users.sysadmin.token)
    assert.equal(stub.command(cmd("C_admin")).token, t1)
    assert.are_not.equal(fx.commands.C_admin.token, t1)
    local t2 = assert(c:regen_command_token(cmd("C_admin")))
    assert.equal(stub.command(cmd("C_admin")).token, t2)
    assert.are_not.equal(t1, t2)
    local rows = require("mm.endpoints").by_name
    assert.equal(rows.regen_token, rows.regen_command_token) -- one endpoint row, two names
    local _, err = c:regen_command_token(cmd("C_deleted"))
    http_error(err, 404, NOT_FOUND)
    raises("^bad argument #1 to 'regen_command_token' %(id must be 26 characters, got 4%)$",
      c.regen_command_token, c, "junk")
  end)
end)

describe("execute_command (POST /api/v4/commands/execute)", function()
  local function run(name, command, channel_name, extra)
    local args = { channel_id = channel(channel_name or "CH"), command = command }
    for k, v in pairs(extra or {}) do args[k] = v end
    return clients.new(name):execute_command(args)
  end

  it("case 114: /shrug hi: the CommandResponse as a plain table (nulls left out); a post in CH", function()
    local resp, err = run("basic", "/shrug hi")
    assert.is_nil(err)
    assert.is_nil(getmetatable(resp))
    assert.same({ response_type = "in_channel", text = "hi " .. SHRUG, username = "", channel_id = "", icon_url = "",
                  type = "", goto_location = "", trigger_id = "", skip_slack_parsing = false }, resp)
    sent(only_request(), "POST", "/api/v4/commands/execute",
      '{"channel_id":"' .. channel("CH") .. '","command":"/shrug hi"}', fx.users.basic.token)
    local posts = stub.posts()
    assert.equal(1, #posts)
    assert.equal("hi " .. SHRUG, posts[1].message)
    assert.equal(channel("CH"), posts[1].channel_id)
  end)

  it("case 115: /echo alone: an ephemeral response with the server's text", function()
    local resp = assert(run("basic", "/echo"))
    assert.equal("ephemeral", resp.response_type)
    assert.equal("A message must be provided with the /echo command.", resp.text)
  end)

  it("case 116: no trigger or a bad channel id raises before anything is sent", function()
    local c = clients.new("basic")
    local function bad(args, why)
      raises("^bad argument #1 to 'execute_command' %(" .. why .. "%)$", c.execute_command, c, args)
    end
    bad({ channel_id = channel("CH"), command = "" }, "field 'command': command is too short")
    bad({ channel_id = channel("CH"), command = "/" }, "field 'command': command is too short")
    bad({ channel_id = channel("CH"), command = "shrug" }, "field 'command': command must start with '/', got 'shrug'")
    bad({ channel_id = channel("CH"), command = "/shrug\0" }, "field 'command': command must not contain NUL bytes")
    bad({ channel_id = channel("CH"), command = "/shrug \255" }, "field 'command': command must be valid UTF%-8")
    bad({ channel_id = "junk", command = "/shrug" }, "field 'channel_id': id must be 26 characters, got 4")
    bad({ command = "/shrug" }, "field 'channel_id' is required")
    bad({ channel_id = channel("CH") }, "field 'command' is required")
    bad({ channel_id = channel("CH"), command = "/shrug", user_id = user("basic") },
      "unknown field 'user_id' %(expected 'channel_id', 'command', 'team_id', 'root_id', 'parent_id'%)")
    bad("/shrug", "table expected, got string")
    nothing_sent()
  end)

  it("case 117: an unknown trigger is 404 not_found naming it", function()
    local _, err = run("basic", "/nosuchcmd x")
    http_error(err, 404, "api.command.execute_command.not_found.app_error")
    assert.is_truthy(err.message:find("'nosuchcmd'", 1, true))
    assert.equal("POST", err.method)
    assert.equal("/api/v4/commands/execute", err.path)
  end)

  it("case 118: no create_post is 403 (an unknown channel too); an archived channel 400", function()
    local _, err = run("outsider", "/shrug")
    http_error(err, 403, PERMISSIONS)
    _, err = run("basic", "/shrug", "CH_OUT")
    http_error(err, 403, PERMISSIONS)
    _, err = clients.new("sysadmin"):execute_command{ channel_id = UNKNOWN, command = "/shrug" }
    http_error(err, 403, PERMISSIONS)
    _, err = run("basic", "/shrug", "CH_ARCH")
    http_error(err, 400, "api.command.execute_command.deleted.error", "Can not run command in deleted channel.")
  end)

  it("case 119: /basiccmd (G) reaches E with its token; the response has a trigger_id", function()
    local resp = assert(run("basic", "/basiccmd  a b"))
    assert.equal("ok from E", resp.text)
    assert.equal("in_channel", resp.response_type)
    assert.matches(ALPHABET, resp.trigger_id)
    assert.equal(26, #resp.trigger_id)
    local got = stub.harness_requests()
    assert.equal(1, #got)
    assert.equal("GET", got[1].method)
    assert.equal("x=1&", got[1].query:sub(1, 4))
    local q = form(got[1].query)
    assert.same({ fx.commands.C_basic.token }, q.token)
    assert.same({ " a b" }, q.text)
    assert.same({ "" }, q.root_id)
    assert.same({ team("T") }, q.team_id)
    assert.same({ "/basiccmd" }, q.command)
    assert.equal("Token " .. fx.commands.C_basic.token, stub.header(got[1], "Authorization"))
  end)

  it("root_id and team_id are sent in the body's order and reach E", function()
    local root = UNKNOWN
    assert(run("basic", "/basiccmd x", "CH", { root_id = root, team_id = team("T"), parent_id = root }))
    sent(only_request(), "POST", "/api/v4/commands/execute", '{"channel_id":"' .. channel("CH")
      .. '","command":"/basiccmd x","team_id":"' .. team("T") .. '","root_id":"' .. root .. '","parent_id":"'
      .. root .. '"}', fx.users.basic.token)
    assert.same({ root }, form(stub.harness_requests()[1].query).root_id)
  end)

  it("case 120: /ADMINCMD hello (P) reaches E as a form POST", function()
    assert(run("basic", "/ADMINCMD hello"))
    local e = stub.harness_requests()[1]
    assert.equal("POST", e.method)
    assert.equal("application/x-www-form-urlencoded", stub.header(e, "Content-Type"))
    local f = form(e.body)
    assert.same({ "hello" }, f.text)
    assert.same({ "/admincmd" }, f.command)
    assert.same({ fx.commands.C_admin.token }, f.token)
  end)

  it("case 121: E failing is 500, never retried; E's text/plain becomes the text", function()
    local c = clients.new("basic", { retries = 2, max_retry_wait = 0.01 })
    local args = { channel_id = channel("CH"), command = "/basiccmd" }
    stub.harness_reply{ status = 500, body = "boom" }
    local _, err = c:execute_command(args)
    http_error(err, 500, "api.command.execute_command.failed_resp.app_error",
      "Command with a trigger of 'basiccmd' returned response 500 Internal Server Error.")
    assert.equal(1, err.attempts)
    assert.equal(1, #stub.harness_requests())
    assert.equal(1, #stub.requests())
    stub.harness_reply{ status = 200, content_type = "text/plain", body = "hello" }
    local resp = assert(c:execute_command(args))
    assert.equal("hello", resp.text)
    assert.equal("", resp.response_type)
    stub.harness_reply{ unreachable = true }
    _, err = c:execute_command(args)
    http_error(err, 500, "api.command.execute_command.failed.app_error", "Command with a trigger of 'basiccmd' failed.")
    assert.equal(1, err.attempts)
  end)

  it("case 122: no SiteURL: custom commands 400 site_url_required; built-ins work", function()
    stub.config{ site_url = "" }
    local _, err = run("basic", "/basiccmd")
    http_error(err, 400, "api.command.execute_command.site_url_required.app_error")
    assert.equal("in_channel", assert(run("basic", "/shrug x")).response_type)
  end)

  it("case 123: commands disabled: 501, built-ins too", function()
    stub.config{ enable_commands = false }
    local _, err = run("basic", "/echo x")
    http_error(err, 501, "api.command.disabled.app_error")
  end)

  it("case 124: the body's team_id is replaced by the channel's", function()
    assert(run("basic", "/basiccmd", "CH", { team_id = team("T2") }))
    sent(only_request(), "POST", "/api/v4/commands/execute", '{"channel_id":"' .. channel("CH")
      .. '","command":"/basiccmd","team_id":"' .. team("T2") .. '"}', fx.users.basic.token)
    assert.same({ team("T") }, form(stub.harness_requests()[1].query).team_id)
  end)

  it("case 125: in a DM, team_id T works; none is 403; T2 is 404 not_found", function()
    assert.equal("ok from E", assert(run("basic", "/basiccmd", "DM", { team_id = team("T") })).text)
    local _, err = run("basic", "/basiccmd", "DM")
    http_error(err, 403, PERMISSIONS)
    _, err = run("basic", "/basiccmd", "DM", { team_id = team("T2") })
    http_error(err, 404, "api.command.execute_command.not_found.app_error")
  end)

  it("case 126: a body not JSON (by request) is 400 command_args; an unknown token 401", function()
    local _, err = clients.new("basic"):request("POST", "/commands/execute", { body = "not json" })
    http_error(err, 400, "api.context.invalid_body_param.app_error", "Invalid or missing command_args in request body.")
    _, err = clients.new(nil, { token = "nosuchtoken" }):execute_command{ channel_id = channel("CH"),
                                                                          command = "/shrug" }
    http_error(err, 401, "api.context.session_expired.app_error")
  end)
end)

describe("the commands calls in a batch", function()
  it("run together, each result in its place, the state as if run one by one", function()
    local c = clients.new("sysadmin")
    local x1 = assert(c:create_command(new_command{ trigger = "x1" }))
    local x2 = assert(c:create_command(new_command{ trigger = "x2" }))
    local other = assert(c:get_command_by_id(cmd("C_other")))
    other.url = "http://e.test/batch"
    local before = #stub.requests()
    local results, failed = c:batch({
      { "create_command", new_command{ trigger = "batchnew" } },
      { "list_commands", { team_id = team("T"), custom_only = true } },
      { "list_autocomplete_commands", team("T") },
      { "list_command_autocomplete_suggestions", team("T"), { user_input = "/e" } },
      { "get_command_by_id", cmd("C_basic") },
      { "update_command", other },
      { "delete_command", x1.id },
      { "move_command", x2.id, team("T2") },
      { "regen_token", cmd("C_admin") },
      { "regen_command_token", cmd("C_deleted") },
      { "execute_command", { channel_id = channel("CH"), command = "/shrug batch" } },
    }, { concurrency = 4 })
    assert.equal(1, failed)
    assert.equal(11, #results)
    assert.equal(11, #stub.requests() - before)
    assert.equal("batchnew", assert_command(results[1]).trigger)
    local _, listed = assert_list(results[2])
    assert.is_table(listed[cmd("C_admin")])
    assert.is_table(by_trigger(results[3], "echo"))
    assert.is_table(results[4][1])
    assert.equal(fx.commands.C_basic.token, results[5].token)
    assert.equal("http://e.test/batch", assert_command(results[6]).url)
    assert.is_true(results[7])
    assert.is_true(stub.command(x1.id).delete_at > 0)
    assert.is_true(results[8])
    assert.equal(team("T2"), stub.command(x2.id).team_id)
    assert.equal(stub.command(cmd("C_admin")).token, results[9])
    http_error(results[10], 404, NOT_FOUND)
    assert.equal("PUT", results[10].method)
    assert.equal("/api/v4/commands/" .. cmd("C_deleted") .. "/regen_token", results[10].path)
    assert.equal("in_channel", results[11].response_type)
  end)

  it("check every call before sending any, naming the call and the argument", function()
    local c = clients.new("sysadmin")
    local function bad(call, why)
      raises("^bad argument #1 to 'batch' %(item #2: " .. why .. "%)$", c.batch, c,
        { { "regen_token", cmd("C_admin") }, call })
    end
    bad({ "create_command", new_command{ trigger = ("a"):rep(129) } },
      "argument #1: field 'trigger': trigger must be at most 128 bytes, got 129")
    bad({ "create_command", new_command{ display_name = ("\195\169"):rep(32) .. "a" } },
      "argument #1: field 'display_name': display_name must be at most 64 bytes, got 65")
    bad({ "list_commands", {} }, "argument #1: field 'team_id' is required")
    bad({ "list_command_autocomplete_suggestions", team("T") }, "argument #2: query table expected, got no value")
    bad({ "update_command", { id = cmd("C_other") } }, "argument #1: field 'team_id' is required")
    bad({ "move_command", cmd("C_admin"), "junk" }, "argument #2: id must be 26 characters, got 4")
    bad({ "execute_command", { channel_id = channel("CH"), command = "shrug" } },
      "argument #1: field 'command': command must start with '/', got 'shrug'")
    bad({ "regen_command_token", "junk" }, "argument #1: id must be 26 characters, got 4")
    nothing_sent()
  end)
end)

describe("the commands calls as module-level functions", function()
  it("run on the client of mm.configure and raise at the caller's line", function()
    mm.configure{ url = stub.url, token = fx.users.sysadmin.token, retries = 0 }
    local created = assert(mm.create_command(new_command()))
    assert_command(created)
    assert.equal(3 + 1, #assert(mm.list_commands{ team_id = team("T"), custom_only = true }))
    assert.is_table(by_trigger(assert(mm.list_autocomplete_commands(team("T"))), "echo"))
    assert.is_table(assert(mm.list_command_autocomplete_suggestions(team("T"), { user_input = "/" }))[1])
    local got = assert(mm.get_command_by_id(created.id))
    got.description = "module level"
    assert.equal("module level", assert(mm.update_command(got)).description)
    assert.is_true(mm.move_command(created.id, team("T2")))
    local tok = assert(mm.regen_token(created.id))
    assert.equal(stub.command(created.id).token, tok)
    tok = assert(mm.regen_command_token(created.id))
    assert.equal(stub.command(created.id).token, tok)
    assert.is_true(mm.delete_command(created.id))
    local resp = assert(mm.execute_command{ channel_id = channel("CH"), command = "/shrug" })
    assert.equal("in_channel", resp.response_type)
    local _, err = mm.get_command_by_id(created.id)
    http_error(err, 404, NOT_FOUND)
    local rotated, failed = mm.rotate_team_tokens(team("T"))
    assert.equal(3, #rotated)
    assert.same({}, failed)
    stub.reset()
    -- errors point at the caller's line
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, msg = pcall(function() mm.create_command(new_command{ method = "p" }) end)
    assert.is_false(ok)
    assert.matches("^[^:]*commands_client_spec%.lua:" .. line .. ": bad argument #1 to 'create_command' "
      .. "%(field 'method'", msg)
    raises("^bad argument #2 to 'move_command' %(id expected, got no value%)$", mm.move_command, cmd("C_admin"))
    nothing_sent()
  end)
end)

describe("rotate_team_tokens", function()
  -- Every reported token is the one the stub now holds.
  local function assert_in_force(rotated)
    for _, r in ipairs(rotated) do
      assert.equal(stub.command(r.id).token, r.token, r.trigger)
    end
  end

  it("gives every custom command of the team a new token and reports each", function()
    local c = clients.new("sysadmin")
    local on_t2 = assert(c:create_command(new_command{ team_id = team("T2"), trigger = "ont2" }))
    local seen = {}
    local rotated, failed = c:rotate_team_tokens(team("T"), { on_result = function(command, token, err)
      seen[#seen + 1] = { command.id, token, err }
    end })
    assert.same({}, failed)
    assert.equal(3, #rotated)
    assert_in_force(rotated)
    local want = { [cmd("C_admin")] = "C_admin", [cmd("C_basic")] = "C_basic", [cmd("C_other")] = "C_other" }
    for i, r in ipairs(rotated) do
      assert.same({ "id", "token", "trigger" }, check.keys(r))
      local name = want[r.id]
      assert.equal(fx.commands[name].trigger, r.trigger)
      assert.are_not.equal(fx.commands[name].token, r.token)
      want[r.id] = nil
      -- on_result saw the same, in the same order
      assert.same({ r.id, r.token }, { seen[i][1], seen[i][2] })
      assert.is_nil(seen[i][3])
    end
    assert.same({}, want)
    assert.equal(3, #seen)
    -- nothing else changed: the deleted command, the other team's
    assert.equal(fx.commands.C_deleted.token, stub.command(cmd("C_deleted")).token)
    assert.equal(on_t2.token, stub.command(on_t2.id).token)
    -- one listing, then one regen per command
    local reqs = stub.requests()
    local n = #reqs
    sent(reqs[n - 3], "GET", "/api/v4/commands?team_id=" .. team("T") .. "&custom_only=true", nil,
      fx.users.sysadmin.token)
    for i = n - 2, n do
      assert.equal("PUT", reqs[i].method)
      assert.matches("^/api/v4/commands/%w+/regen_token$", reqs[i].uri)
    end
  end)

  it("with opts.commands: only those; ids outside the team fail as not_found, in the order given", function()
    local c = clients.new("sysadmin")
    for _ = 1, 5 do -- the order must not depend on a hash table's
      stub.reset()
      local on_t2 = assert(c:create_command(new_command{ team_id = team("T2"), trigger = "ont2" }))
      local ids = { cmd("C_deleted"), on_t2.id, cmd("C_other"), UNKNOWN, cmd("C_admin") }
      local seen = {}
      local function on_result(command, token, err) seen[#seen + 1] = { command.id, token ~= nil, err and err.kind } end
      local rotated, failed = c:rotate_team_tokens(team("T"), { commands = ids, on_result = on_result })
      assert.equal(2, #rotated)
      assert_in_force(rotated)
      local rotated_ids = { [rotated[1].id] = true, [rotated[2].id] = true }
      assert.same({ [cmd("C_other")] = true, [cmd("C_admin")] = true }, rotated_ids)
      assert.equal(3, #failed)
      for i, id in ipairs{ cmd("C_deleted"), on_t2.id, UNKNOWN } do
        assert.equal(id, failed[i].id)
        assert.is_true(mm.is_error(failed[i].error))
        assert.equal("not_found", failed[i].error.kind)
        assert.is_truthy(failed[i].error.message:find(id, 1, true))
        assert.same({ id, false, "not_found" }, seen[i])
      end
      assert.equal(5, #seen)
      assert.equal(on_t2.token, stub.command(on_t2.id).token)
      assert.equal(fx.commands.C_basic.token, stub.command(cmd("C_basic")).token)
      assert.equal(fx.commands.C_deleted.token, stub.command(cmd("C_deleted")).token)
    end
  end)

  it("a user who may manage only some commands rotates those; the others are not_found, untouched", function()
    grant(OWN)
    local rotated, failed = clients.new("basic"):rotate_team_tokens(team("T"))
    assert.same({}, failed)
    assert.equal(1, #rotated)
    assert.equal(cmd("C_basic"), rotated[1].id)
    assert.equal("basiccmd", rotated[1].trigger)
    assert_in_force(rotated)
    stub.reset()
    grant(OWN)
    rotated, failed = clients.new("basic"):rotate_team_tokens(team("T"),
                                                              { commands = { cmd("C_other"), cmd("C_basic") } })
    assert.equal(1, #rotated)
    assert_in_force(rotated)
    assert.equal(1, #failed)
    assert.equal(cmd("C_other"), failed[1].id)
    assert.equal("not_found", failed[1].error.kind)
    assert.equal(fx.commands.C_other.token, stub.command(cmd("C_other")).token)
    assert.equal(fx.commands.C_admin.token, stub.command(cmd("C_admin")).token)
    -- the regen of a command it may not manage was never sent
    for _, r in ipairs(stub.requests()) do assert.is_nil(r.uri:find(cmd("C_other"), 1, true)) end
  end)

  it("returns nil, err when the commands cannot be listed; nothing is rotated", function()
    local rotated, err = clients.new("basic"):rotate_team_tokens(team("T"))
    assert.is_nil(rotated)
    http_error(err, 403, PERMISSIONS)
    assert.equal(1, #stub.requests())
    local none
    none, err = clients.new("sysadmin"):rotate_team_tokens(team("T2"))
    assert.same({}, none)
    assert.same({}, err)
  end)

  it("a command deleted between listing and rotation fails with its 404; the rest are in force", function()
    local c = clients.new("sysadmin")
    local other = clients.new("sysadmin")
    local order = {}
    local rotated, failed = c:rotate_team_tokens(team("T"), { concurrency = 1, on_result = function(command, token)
      order[#order + 1] = command.trigger
      if #order == 1 then assert(other:delete_command(cmd("C_other"))) end
      assert.is_truthy(token or command.id == cmd("C_other"))
    end })
    assert.same({ "admincmd", "basiccmd", "othercmd" }, order) -- one at a time: the listing's order
    assert.equal(2, #rotated)
    assert_in_force(rotated)
    assert.equal(1, #failed)
    assert.equal(cmd("C_other"), failed[1].id)
    assert.equal("othercmd", failed[1].trigger)
    http_error(failed[1].error, 404, NOT_FOUND)
    assert.equal(fx.commands.C_other.token, stub.command(cmd("C_other")).token)
  end)

  it("requests failing in the middle (flaky 503) are reported; with retries they are rotated", function()
    local flaky = clients.fault("flaky503:1", "sysadmin")
    -- use up the listing's failure and C_basic's regen failure first
    local _, err = flaky:list_commands{ team_id = team("T"), custom_only = true }
    http_error(err, 503)
    _, err = flaky:regen_token(cmd("C_basic"))
    http_error(err, 503)
    local rotated, failed = flaky:rotate_team_tokens(team("T"))
    assert.equal(1, #rotated)
    assert.equal(cmd("C_basic"), rotated[1].id)
    assert_in_force(rotated)
    assert.equal(2, #failed)
    for _, f in ipairs(failed) do
      http_error(f.error, 503)
      assert.equal(1, f.error.attempts)
      assert.equal(fx.commands[f.trigger == "admincmd" and "C_admin" or "C_other"].token, stub.command(f.id).token)
    end
    stub.reset()
    flaky = clients.fault("flaky503:1", "sysadmin", { retries = 1, max_retry_wait = 0.01 })
    rotated, failed = flaky:rotate_team_tokens(team("T"))
    assert.same({}, failed)
    assert.equal(3, #rotated)
    assert_in_force(rotated)
    assert.equal(8, #stub.requests()) -- each of the four requests twice
  end)

  it("a connection closed before the answer is retried (PUT): the token reported is the one in force", function()
    local flaky = clients.fault("flaky_close:1", "sysadmin", { retries = 1, max_retry_wait = 0.01 })
    local rotated, failed = flaky:rotate_team_tokens(team("T"))
    assert.same({}, failed)
    assert.equal(3, #rotated)
    assert_in_force(rotated)
  end)

  it("arguments and options raise before anything is sent", function()
    local c = clients.new("sysadmin")
    local f = c.rotate_team_tokens
    raises("^bad argument #1 to 'rotate_team_tokens' %(team id must be 26 characters, got 4%)$", f, c, "junk")
    raises("^bad argument #1 to 'rotate_team_tokens' %(team id expected, got no value%)$", f, c)
    raises("^bad argument #2 to 'rotate_team_tokens' %(options table expected%)$", f, c, team("T"), "all")
    raises("^bad argument #2 to 'rotate_team_tokens' %(unknown option 'command'%)$", f, c, team("T"),
      { command = { cmd("C_admin") } })
    raises("option 'commands' must be a table", f, c, team("T"), { commands = cmd("C_admin") })
    raises("option 'commands' item #2: id must be 26 characters, got 4", f, c, team("T"),
      { commands = { cmd("C_admin"), "junk" } })
    raises("command " .. cmd("C_admin") .. " is listed twice", f, c, team("T"),
      { commands = { cmd("C_admin"), cmd("C_admin") } })
    raises("option 'commands' must be a list", f, c, team("T"), { commands = { first = cmd("C_admin") } })
    raises("option 'commands' must be a list", f, c, team("T"), { commands = { cmd("C_admin"), nil, cmd("C_other") } })
    raises("option 'on_result' must be a function", f, c, team("T"), { on_result = true })
    raises("option 'concurrency' must be a number", f, c, team("T"), { concurrency = "2" })
    for _, n in ipairs{ 0, 1025, 1.5 } do
      raises("^bad argument #2 to 'rotate_team_tokens' %(option 'concurrency' must be a whole number from 1 to ",
        f, c, team("T"), { concurrency = n })
    end
    raises("call rotate_team_tokens with a colon", c.rotate_team_tokens, team("T"))
    nothing_sent()
  end)
end)
