-- Black-box spec of the stub server against contract §7 (cases 1-46).
-- Run: bin/mm-stub run -- lua5.4 /usr/bin/busted spec/stub_spec.lua
local rawhttp = require "support.rawhttp"
local S = require "support.stubapi"
local cjson = require "cjson"

local URL, ID_PATTERN = S.URL, S.ID_PATTERN
local call, control, config, token, assert_error = S.call, S.control, S.config, S.token, S.assert_error
local assert_404_route, random_id, now_ms = S.assert_404_route, S.random_id, S.now_ms

local fx -- GET /__stub/fixtures

local function post_job(body, opts)
  opts = opts or {}
  opts.body = body
  return call("POST", "/api/v4/jobs", opts)
end

local JOB1 = '{"type":"active_users","data":{"thing":"stuff"}}'

local function job_of(r)
  assert.are.equal("\n", r.body:sub(-1)) -- json.Encoder: trailing newline
  -- model.Job field order (§2.5)
  assert.is_truthy(r.body:match('^{"id":"%w+","type":"[^"]*","priority":%d+,"create_at":%d+,"start_at":%d+,'
    .. '"last_activity_at":%d+,"status":"[%w_]+","progress":%d+,"data":[{n]'), r.body)
  return cjson.decode(r.body), r.body
end

before_each(function() fx = S.reset() end)

describe("POST /api/v4/jobs", function()
  it("case 1: sysadmin creates an active_users job -> 201 pending job", function()
    local before = now_ms()
    local r = post_job(JOB1, { as = "sysadmin" })
    assert.are.equal(201, r.status)
    assert.are.equal("application/json", r.h["content-type"])
    local job, raw = job_of(r)
    assert.is_truthy(job.id:match(ID_PATTERN))
    assert.is_truthy(raw:match('^{"id":"%w+","type":"active_users","priority":0,"create_at":%d+,"start_at":0,'
      .. '"last_activity_at":0,"status":"pending","progress":0,"data":{"thing":"stuff"}}\n$'), raw)
    assert.is_true(job.create_at >= before - 1000 and job.create_at <= now_ms() + 1000)
  end)

  it("case 2: no data -> 201 with data null", function()
    local r = post_job('{"type":"active_users"}', { as = "sysadmin" })
    assert.are.equal(201, r.status)
    assert.is_truthy(r.body:match(',"data":null}\n$'), r.body)
  end)

  it("case 3: client-sent id/status/create_at/progress are ignored", function()
    local r = post_job('{"type":"active_users","id":"x","status":"success","create_at":5,"progress":50}',
                       { as = "sysadmin" })
    assert.are.equal(201, r.status)
    local job = job_of(r)
    assert.is_truthy(job.id:match(ID_PATTERN))
    assert.are.equal("pending", job.status)
    assert.are.equal(0, job.progress)
    assert.is_true(math.abs(job.create_at - now_ms()) < 60000)
  end)

  it("case 4: sysmanager -> 403 permissions", function()
    assert_error(post_job(JOB1, { as = "sysmanager" }), 403, "api.context.permissions.app_error",
                 "You do not have the appropriate permissions.")
  end)

  it("case 5: basic -> 403 permissions", function()
    assert_error(post_job(JOB1, { as = "basic" }), 403, "api.context.permissions.app_error")
  end)

  it("case 6: random 26-char type -> 400 incorrect_job_type", function()
    assert_error(post_job('{"type":"' .. random_id() .. '"}', { as = "sysadmin" }), 400,
                 "api.job.unable_to_create_job.incorrect_job_type",
                 "The job type of the job you are trying to create is invalid")
  end)

  it("case 7: basic with an unknown type -> 400 before 403", function()
    assert_error(post_job('{"type":"no_such_type"}', { as = "basic" }), 400,
                 "api.job.unable_to_create_job.incorrect_job_type")
  end)

  it("case 8: {} and null -> 400 incorrect_job_type", function()
    assert_error(post_job("{}", { as = "sysadmin" }), 400, "api.job.unable_to_create_job.incorrect_job_type")
    assert_error(post_job("null", { as = "sysadmin" }), 400, "api.job.unable_to_create_job.incorrect_job_type")
  end)

  it("case 9: cleanup_desktop_tokens (no create permission) -> 400 incorrect_job_type", function()
    assert_error(post_job('{"type":"cleanup_desktop_tokens"}', { as = "sysadmin" }), 400,
                 "api.job.unable_to_create_job.incorrect_job_type")
  end)

  it("case 10: data_retention and cloud on Team Edition -> 400 model.job.is_valid.type; enterprise -> 201", function()
    assert_error(post_job('{"type":"data_retention"}', { as = "sysadmin" }), 400,
                 "model.job.is_valid.type.app_error", "Invalid job type.")
    assert_error(post_job('{"type":"cloud"}', { as = "sysadmin" }), 400, "model.job.is_valid.type.app_error")
    config({ enterprise = true })
    local r = post_job('{"type":"data_retention"}', { as = "sysadmin" })
    assert.are.equal(201, r.status)
    assert.are.equal("data_retention", job_of(r).type)
    assert_error(post_job('{"type":"cloud"}', { as = "sysadmin" }), 400, "model.job.is_valid.type.app_error")
  end)

  it("case 11: basic with data_retention -> 403 (permission before worker)", function()
    assert_error(post_job('{"type":"data_retention"}', { as = "basic" }), 403, "api.context.permissions.app_error")
  end)

  it("case 12: body 'not json' -> 400 invalid_body_param", function()
    assert_error(post_job("not json", { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing job in request body.")
  end)

  it("case 13: empty body -> 400 invalid_body_param", function()
    assert_error(post_job("", { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error")
    assert_error(call("POST", "/api/v4/jobs", { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error")
  end)

  it("case 14: body [] -> 400 invalid_body_param", function()
    assert_error(post_job("[]", { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error")
  end)

  it("case 15: non-string data value -> 400 invalid_body_param", function()
    assert_error(post_job('{"type":"active_users","data":{"n":1}}', { as = "sysadmin" }), 400,
                 "api.context.invalid_body_param.app_error")
  end)

  it("case 16: numeric type -> 400 invalid_body_param", function()
    assert_error(post_job('{"type":5}', { as = "sysadmin" }), 400, "api.context.invalid_body_param.app_error")
  end)

  it("case 17: body of 300513 bytes -> 413; a 300512-byte value is still read", function()
    local function padded(size)
      local head, tail = '{"type":"active_users","data":{"p":"', '"}}'
      return head .. ("x"):rep(size - #head - #tail) .. tail
    end
    assert_error(post_job(padded(300513), { as = "sysadmin" }), 413,
                 "api.context.request_body_too_large.app_error",
                 "Unable to process request. Request body too large.")
    assert_error(post_job(padded(1000000), { as = "sysadmin" }), 413, "api.context.request_body_too_large.app_error")
    assert.are.equal(201, post_job(padded(300512), { as = "sysadmin" }).status)
  end)

  it("case 17: a body past nginx's own limit (64 MiB) still gets the AppError 413, after auth", function()
    -- Only the headers are sent: nginx refuses on Content-Length alone.
    local function announce(opts)
      local headers = opts.as and S.auth(opts.as) or {}
      headers[#headers + 1] = { "Content-Length", "70000000" }
      local r, err = rawhttp.request(URL, { method = "POST", path = "/api/v4/jobs", no_length = true,
                                            headers = headers })
      assert(r, err)
      return r
    end
    assert_error(announce{ as = "sysadmin" }, 413, "api.context.request_body_too_large.app_error")
    assert_error(announce{}, 401, "api.context.session_expired.app_error")
  end)

  it("case 18: no Authorization -> 401 session_expired", function()
    assert_error(post_job(JOB1), 401, "api.context.session_expired.app_error",
                 "Invalid or expired session, please login again.")
  end)

  it("case 19: Bearer garbage -> 401 session_expired and the cookie is cleared", function()
    local r = post_job(JOB1, { headers = { { "Authorization", "Bearer garbage" } } })
    assert_error(r, 401, "api.context.session_expired.app_error")
    assert.are.equal("MMAUTHTOKEN=; Path=/; Max-Age=0; HttpOnly", r.h["set-cookie"])
  end)

  it("case 20: Bearer/bearer/BEARER/Token with the sysadmin token -> 201", function()
    for _, word in ipairs({ "Bearer", "bearer", "BEARER", "Token", "token" }) do
      local r = post_job(JOB1, { headers = { { "Authorization", word .. " " .. token("sysadmin") } } })
      assert.are.equal(201, r.status, word)
    end
    -- exactly one separator is sliced off (§1.2): a second space is part of the token
    local r = post_job(JOB1, { headers = { { "Authorization", "Bearer  " .. token("sysadmin") } } })
    assert_error(r, 401, "api.context.session_expired.app_error")
  end)

  it("case 21: ?access_token=<PAT> -> 401 token_provided; an OAuth token works", function()
    local r = call("POST", "/api/v4/jobs?access_token=" .. token("sysadmin"), { body = JOB1 })
    assert_error(r, 401, "api.context.token_provided.app_error",
                 "Session is not OAuth but token was provided in the query string.")
    r = call("POST", "/api/v4/jobs?access_token=" .. fx.users.sysadmin.oauth_token, { body = JOB1 })
    assert.are.equal(201, r.status)
  end)

  it("case 22: cookie without CSRF -> 401; with X-Requested-With or X-CSRF-Token -> 201", function()
    local cookie = { "Cookie", "MMAUTHTOKEN=" .. fx.users.sysadmin.session_token }
    assert_error(post_job(JOB1, { headers = { cookie } }), 401, "api.context.session_expired.app_error")
    assert.are.equal(201, post_job(JOB1, { headers = { cookie, { "X-Requested-With", "XMLHttpRequest" } } }).status)
    local csrf = { "X-CSRF-Token", fx.users.sysadmin.csrf_token }
    assert.are.equal(201, post_job(JOB1, { headers = { cookie, csrf } }).status)
    assert_error(post_job(JOB1, { headers = { cookie, { "X-CSRF-Token", "wrong" } } }), 401,
                 "api.context.session_expired.app_error")
    -- the cookie wins over a valid Authorization header
    assert_error(post_job(JOB1, { as = "sysadmin", headers = { { "Cookie", "MMAUTHTOKEN=bad" } } }), 401,
                 "api.context.session_expired.app_error")
    config({ strict_csrf = true })
    assert_error(post_job(JOB1, { headers = { cookie, { "X-Requested-With", "XMLHttpRequest" } } }), 401,
                 "api.context.session_expired.app_error")
  end)

  it("case 23: no Content-Type header -> 201", function()
    local r = post_job(JOB1, { as = "sysadmin" })
    assert.are.equal(201, r.status)
    local sent = control("GET", "/__stub/requests")
    for _, h in ipairs(sent[#sent].headers) do assert.are_not.equal("content-type", h[1]:lower()) end
  end)

  it("case 24: X-Request-Id and X-Version-Id on success and error; security headers", function()
    for _, r in ipairs({ post_job(JOB1, { as = "sysadmin" }), post_job(JOB1) }) do
      assert.is_truthy(r.h["x-request-id"]:match(ID_PATTERN))
      assert.is_truthy(r.h["x-version-id"]:match("^9%.11%.0%.9%.11%.0%.%x+%.false$"), r.h["x-version-id"])
      assert.are.equal("nosniff", r.h["x-content-type-options"])
      assert.are.equal("no-referrer", r.h["referrer-policy"])
      assert.are.equal("", r.h["permissions-policy"])
      assert.is_nil(r.h["expires"]) -- GET only
    end
    local a, b = post_job(JOB1, { as = "sysadmin" }), post_job(JOB1, { as = "sysadmin" })
    assert.are_not.equal(a.h["x-request-id"], b.h["x-request-id"])
  end)

  it("decodes like Go: trailing bytes ignored, keys case-insensitive, data {} kept, HTML escaped", function()
    local r = post_job('{"type":"active_users"} trailing garbage', { as = "sysadmin" })
    assert.are.equal(201, r.status)
    r = post_job('{"extra":[1, {"a":[true,null,"s"]}], "type" : "active_users"}', { as = "sysadmin" })
    assert.are.equal(201, r.status) -- unknown keys are skipped, whatever their shape
    r = post_job('{"TYPE":"active_users","Data":{}}', { as = "sysadmin" })
    assert.are.equal(201, r.status)
    assert.is_truthy(r.body:match(',"data":{}}\n$'), r.body)
    r = post_job('{"type":"active_users","data":{"b":"</x>&","a":"\\u00e9/"}}', { as = "sysadmin" })
    assert.is_truthy(r.body:find(',"data":{"a":"\195\169/","b":"\\u003c/x\\u003e\\u0026"}}\n$'), r.body)
    assert_error(post_job('{"type":"active_users","progress":1.5}', { as = "sysadmin" }), 400,
                 "api.context.invalid_body_param.app_error")
    assert_error(post_job('{"type":"active_users"', { as = "sysadmin" }), 400,
                 "api.context.invalid_body_param.app_error")
  end)
end)

describe("GET /api/v4/jobs/{id}", function()
  local function create(as)
    local r = post_job(JOB1, { as = as or "sysadmin" })
    assert.are.equal(201, r.status)
    return job_of(r)
  end

  it("case 25: sysadmin gets the job -> 200, same job, Expires: 0", function()
    local job = create()
    config({ job_outcome = "never" }) -- only affects later jobs
    local stored = control("GET", "/__stub/jobs/" .. job.id)
    assert.are.equal("pending", stored.status)
    local r = call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" })
    assert.are.equal(200, r.status)
    assert.are.equal("0", r.h["expires"])
    assert.are.equal("application/json", r.h["content-type"])
    local got = job_of(r)
    assert.are.equal(job.id, got.id)
    assert.are.equal("active_users", got.type)
    assert.are.equal(job.create_at, got.create_at)
    assert.are.same({ thing = "stuff" }, got.data)
  end)

  it("case 26: id 1234 -> 400 invalid_url_param job_id", function()
    assert_error(call("GET", "/api/v4/jobs/1234", { as = "sysadmin" }), 400,
                 "api.context.invalid_url_param.app_error", "Invalid or missing job_id parameter in request URL.")
  end)

  it("case 27: unknown 26-char id -> 404 app.job.get.app_error", function()
    assert_error(call("GET", "/api/v4/jobs/" .. random_id(), { as = "sysadmin" }), 404,
                 "app.job.get.app_error", "Unable to get the job.")
  end)

  it("case 28: basic reading an active_users job -> 403", function()
    local job = create()
    assert_error(call("GET", "/api/v4/jobs/" .. job.id, { as = "basic" }), 403, "api.context.permissions.app_error")
  end)

  it("case 29: successive GETs: pending -> in_progress -> success; error outcome sets data.error", function()
    local job = create()
    local r1 = job_of(call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" }))
    assert.are.equal("in_progress", r1.status)
    assert.is_true(r1.start_at > 0)
    assert.is_true(r1.last_activity_at >= r1.start_at)
    assert.are.equal(50, r1.progress)
    local r2 = job_of(call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" }))
    assert.are.equal("success", r2.status)
    assert.are.equal(100, r2.progress)
    assert.are.equal(r1.start_at, r2.start_at)
    assert.are.equal("success", job_of(call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" })).status)

    config({ job_outcome = "error", job_steps = 2 })
    job = create()
    local seen = {}
    for i = 1, 3 do seen[i] = job_of(call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" })) end
    assert.are.equal("in_progress", seen[1].status)
    assert.are.equal("in_progress", seen[2].status)
    assert.is_true(seen[2].progress > seen[1].progress)
    assert.are.equal("error", seen[3].status)
    assert.are.equal("string", type(seen[3].data.error))
    assert.are.equal("stuff", seen[3].data.thing)

    config({ job_outcome = "never", job_steps = 0 })
    job = create()
    for _ = 1, 5 do
      assert.are.equal("in_progress", job_of(call("GET", "/api/v4/jobs/" .. job.id, { as = "sysadmin" })).status)
    end
  end)

  it("non-alphanumeric id -> router 404", function()
    assert_404_route(call("GET", "/api/v4/jobs/ab-cd", { as = "sysadmin" }), "/api/v4/jobs/ab-cd")
  end)
end)

describe("PUT /api/v4/commands/{id}/regen_token", function()
  local function regen(cmd, as, opts)
    opts = opts or {}
    opts.as = as
    return call(opts.method or "PUT", "/api/v4/commands/" .. (fx.commands[cmd] and fx.commands[cmd].id or cmd)
                .. "/regen_token", opts)
  end
  local function assert_token(r, old)
    assert.are.equal(200, r.status)
    assert.are.equal("application/json", r.h["content-type"])
    local t = r.body:match('^{"token":"(%w+)"}$') -- no trailing newline
    assert.is_truthy(t and t:match(ID_PATTERN), r.body)
    assert.are_not.equal(old, t)
    return t
  end
  local function grant(...) S.grant("team_user", { ... }) end

  it("case 30: sysadmin on C_admin -> 200 new token, twice; fixtures show the live token", function()
    local t1 = assert_token(regen("C_admin", "sysadmin"), fx.commands.C_admin.token)
    local t2 = assert_token(regen("C_admin", "sysadmin"), t1)
    assert.are.equal(t2, control("GET", "/__stub/fixtures").commands.C_admin.token)
  end)

  it("case 31: basic without manage_own on C_admin -> 404", function()
    assert_error(regen("C_admin", "basic"), 404, "store.sql_command.save.get.app_error", "Unable to get the command.")
  end)

  it("case 32: basic with manage_own on C_basic -> 200", function()
    assert_error(regen("C_basic", "basic"), 404, "store.sql_command.save.get.app_error")
    grant("manage_own_slash_commands")
    assert_token(regen("C_basic", "basic"), fx.commands.C_basic.token)
  end)

  it("case 33: basic with manage_own only on C_other -> 403", function()
    grant("manage_own_slash_commands")
    assert_error(regen("C_other", "basic"), 403, "api.context.permissions.app_error")
  end)

  it("case 34: basic with manage_own + manage_others on C_other -> 200", function()
    grant("manage_own_slash_commands", "manage_others_slash_commands")
    assert_token(regen("C_other", "basic"), fx.commands.C_other.token)
  end)

  it("case 35: tadmin on C_other -> 200", function()
    assert_token(regen("C_other", "tadmin"), fx.commands.C_other.token)
  end)

  it("case 36: outsider on C_admin (another team) -> 404, not 403; grants are team-scoped", function()
    assert_error(regen("C_admin", "outsider"), 404, "store.sql_command.save.get.app_error")
    grant("manage_own_slash_commands", "manage_others_slash_commands")
    assert_error(regen("C_admin", "outsider"), 404, "store.sql_command.save.get.app_error")
    -- a command of T2, where tadmin (team_admin on T only) is no member
    local r = call("POST", "/api/v4/commands", { as = "sysadmin", body = cjson.encode({
      team_id = fx.teams.T2.id, trigger = "t2cmd", method = "P", url = "http://e.test/h" }) })
    assert.are.equal(201, r.status)
    assert_error(regen(cjson.decode(r.body).id, "tadmin"), 404, "store.sql_command.save.get.app_error")
    assert_token(regen("C_other", "tadmin"), fx.commands.C_other.token)
  end)

  it("case 37: junk id -> 400 invalid_url_param command_id", function()
    assert_error(regen("junk", "sysadmin"), 400, "api.context.invalid_url_param.app_error",
                 "Invalid or missing command_id parameter in request URL.")
  end)

  it("case 38: unknown 26-char id -> 404", function()
    assert_error(regen(random_id(), "sysadmin"), 404, "store.sql_command.save.get.app_error")
  end)

  it("case 39: deleted command -> 404", function()
    assert_error(regen("C_deleted", "sysadmin"), 404, "store.sql_command.save.get.app_error")
  end)

  it("case 40: commands disabled -> 404", function()
    config({ enable_commands = false })
    assert_error(regen("C_admin", "sysadmin"), 404, "store.sql_command.save.get.app_error")
  end)

  it("case 41: no auth -> 401", function()
    assert_error(regen("C_admin"), 401, "api.context.session_expired.app_error")
  end)

  it("case 42: GET or POST on regen_token -> 404 catch-all", function()
    local path = "/api/v4/commands/" .. fx.commands.C_admin.id .. "/regen_token"
    assert_404_route(regen("C_admin", "sysadmin", { method = "GET" }), path)
    assert_404_route(regen("C_admin", "sysadmin", { method = "POST" }), path)
    assert_404_route(call("PUT", "/api/v4/commands/a%2Bb/regen_token", { as = "sysadmin" }),
                     "/api/v4/commands/a+b/regen_token")
  end)

  it("case 43: a body with the PUT is ignored -> 200", function()
    assert_token(regen("C_admin", "sysadmin", { body = '{"token":"mine"}' }), fx.commands.C_admin.token)
    assert_token(regen("C_admin", "sysadmin", { body = ("x"):rep(400000) }))
  end)
end)

describe("cross-cutting", function()
  it("case 44: rate limit 1/s burst 2 -> three pass, the 4th gets the plain-text 429", function()
    config({ rate_limit = { per_sec = 1, burst = 2 } })
    local conn = assert(rawhttp.connect(URL))
    local function one()
      return assert(conn:request({ method = "POST", path = "/api/v4/jobs", body = JOB1,
                                   headers = S.auth("sysadmin") }))
    end
    local rs = { one(), one(), one(), one() }
    conn:close()
    for i = 1, 3 do
      assert.are.equal(201, rs[i].status)
      assert.are.equal("3", rs[i].h["x-ratelimit-limit"])
      assert.are.equal(tostring(3 - i), rs[i].h["x-ratelimit-remaining"])
      assert.is_truthy(tonumber(rs[i].h["x-ratelimit-reset"]))
      assert.is_nil(rs[i].h["retry-after"])
    end
    local r = rs[4]
    assert.are.equal(429, r.status)
    assert.are.equal("text/plain; charset=utf-8", r.h["content-type"])
    assert.are.equal("limit exceeded\n", r.body)
    assert.is_true(tonumber(r.h["retry-after"]) > 0)
    assert.are.equal("0", r.h["x-ratelimit-remaining"])
    -- in front of auth and routing, and the control API is exempt
    assert.are.equal(429, call("GET", "/api/v4/nowhere").status)
    control("GET", "/__stub/ping")
    config({ rate_limit = false })
    assert.are.equal(201, post_job(JOB1, { as = "sysadmin" }).status)
    assert.is_nil(post_job(JOB1, { as = "sysadmin" }).h["x-ratelimit-limit"])
  end)

  it("case 45: detailed_error empty by default; developer mode shows userId/permission", function()
    assert_error(post_job(JOB1, { as = "basic" }), 403, "api.context.permissions.app_error")
    config({ developer = true })
    local body = cjson.decode(post_job(JOB1, { as = "basic" }).body)
    assert.are.equal("userId=" .. fx.users.basic.id .. ", permission=manage_jobs", body.detailed_error)
  end)

  it("case 46: Content-Type is exactly application/json on JSON answers", function()
    for _, r in ipairs({ post_job(JOB1, { as = "sysadmin" }), post_job("[]", { as = "sysadmin" }),
                         call("PUT", "/api/v4/commands/" .. fx.commands.C_admin.id .. "/regen_token",
                              { as = "sysadmin" }) }) do
      assert.are.equal("application/json", r.h["content-type"])
    end
  end)

  it("keep-alive: 100 requests on one connection are counted on one connection", function()
    local conn = assert(rawhttp.connect(URL))
    for _ = 1, 100 do
      local r = assert(conn:request({ method = "GET", path = "/api/v4/jobs/1234",
                                      headers = S.auth("sysadmin") }))
      assert.are.equal(400, r.status)
    end
    conn:close()
    local conns = control("GET", "/__stub/connections")
    assert.are.equal(1, #conns)
    assert.are.equal(100, conns[1].requests)
  end)

  it("request log: method, URI, headers in wire order and the raw body", function()
    local body = '{"type":"active_users"}'
    call("POST", "/api/v4/jobs?x=1%202", { headers = { { "X-B", "2" }, { "X-A", "1" } }, body = body })
    local log = control("GET", "/__stub/requests")
    assert.are.equal(1, #log)
    assert.are.equal("POST", log[1].method)
    assert.are.equal("/api/v4/jobs?x=1%202", log[1].uri)
    assert.are.equal(body, log[1].body)
    local names = {}
    for _, h in ipairs(log[1].headers) do names[#names + 1] = h[1] end
    assert.are.same({ "Host", "X-B", "X-A", "Content-Length" }, names)
  end)

  it("request log: bodies over 64 KiB are cut, body_length is the real length", function()
    local body = ("x"):rep(65536) .. ("y"):rep(1000)
    call("POST", "/api/v4/jobs", { body = body })
    local r = assert(rawhttp.request(URL, { method = "GET", path = "/__stub/requests" }))
    assert.are.equal("0", r.h["x-stub-dropped"])
    local log = cjson.decode(r.body)
    assert.are.equal(65536 + 1000, log[1].body_length)
    assert.are.equal(("x"):rep(65536), log[1].body)
  end)

  it("control lists are JSON arrays, [] when empty, with their dropped counts", function()
    for _, path in ipairs({ "/__stub/connections", "/__stub/requests", "/__stub/redirect_log", "/__stub/posts",
                            "/__stub/harness/requests" }) do
      local r = assert(rawhttp.request(URL, { method = "GET", path = path }))
      assert.are.equal(200, r.status, path)
      assert.are.equal("application/json", r.h["content-type"], path)
      assert.are.equal("[]", r.body, path)
      if path ~= "/__stub/connections" then assert.are.equal("0", r.h["x-stub-dropped"], path) end
    end
  end)

  it("PUT /__stub/config: a rejected patch changes nothing; bad values -> 400 JSON", function()
    local before = control("GET", "/__stub/config")
    local function rejected(patch)
      local r = assert(rawhttp.request(URL, { method = "PUT", path = "/__stub/config", body = patch }))
      assert.are.equal(400, r.status, patch)
      assert.are.equal("application/json", r.h["content-type"])
      assert.are.equal("string", type(cjson.decode(r.body).error), r.body)
    end
    -- a valid grant next to an unknown key is not applied
    rejected('{"grant":{"role":"team_user","permissions":["manage_own_slash_commands"]},"nope":1}')
    rejected('{"developer":true,"job_steps":-1}')
    rejected('{"rate_limit":{"per_sec":"1","burst":2}}')
    rejected('{"rate_limit":{"per_sec":1,"burst":"2"}}')
    rejected('{"rate_limit":{"per_sec":0,"burst":2}}')
    rejected('{"rate_limit":{"per_sec":1,"burst":2.5}}')
    rejected('{"grant":{"role":"team_user","permissions":{"a":"manage_own_slash_commands"}}}')
    rejected('{"grant":{"role":"team_user","permissions":[1]}}')
    assert.are.same(before, control("GET", "/__stub/config"))
    assert.is_nil(next(before.grants))
    assert_error(call("PUT", "/api/v4/commands/" .. fx.commands.C_basic.id .. "/regen_token", { as = "basic" }),
                 404, "store.sql_command.save.get.app_error")
  end)

  it("URL longer than 2048 -> 414", function()
    local r = call("GET", "/api/v4/jobs/" .. ("a"):rep(26) .. "?q=" .. ("x"):rep(2100), { as = "sysadmin" })
    assert.are.equal(414, r.status)
    assert.are.equal("basic_security_check.url.too_long_error", cjson.decode(r.body).id)
  end)
end)
