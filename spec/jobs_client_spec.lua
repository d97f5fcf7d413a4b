-- The jobs API through the client: every jobs case (47-74) of
-- api-contract-families.md §6 with the fixture jobs J1-J11, the values and
-- errors the client returns, the exact requests it sends (the stub's
-- request log), argument checks that send nothing, batches of every jobs
-- operation and the module-level functions. Cases the client refuses to
-- send (a malformed id or status) reach the server through c:request.
local mm = require "mm"
local cjson = require "cjson"
local mime = require "mime"
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local bad_values = require "support.bad_values"
local files = require "support.files"
local rawserver = require "support.rawserver"

local raises, http_error = check.raises, check.http_error
local fx
local UNKNOWN = clients.UNKNOWN

local J = clients.job

-- Fixture jobs as the client must return them: plain tables, a null
-- `data` left out, no stub-only `file`.
local function jobs(...)
  local out = {}
  for i, n in ipairs({ ... }) do
    local job = {}
    for k, v in pairs(fx.jobs["J" .. n]) do
      if k ~= "file" and v ~= cjson.null then job[k] = v end
    end
    out[i] = job
  end
  return out
end

-- A list the client returned: a plain Lua sequence (no metatable, no
-- other keys) of exactly these fixture jobs, numbers as integers.
local function assert_jobs(list, ...)
  assert.is_table(list)
  assert.is_nil(getmetatable(list))
  local n = 0
  for k in pairs(list) do
    n = n + 1
    assert.equal("number", type(k))
  end
  assert.equal(n, #list)
  assert.same(jobs(...), list)
  for _, job in ipairs(list) do
    assert.is_nil(getmetatable(job))
    if math.type then
      for _, k in ipairs{ "priority", "create_at", "start_at", "last_activity_at", "progress" } do
        assert.equal("integer", math.type(job[k]), k)
      end
    end
  end
end

-- The stub received exactly these requests, {method, uri[, body]}, each
-- with every byte as `mm` sends it for `user`.
local function assert_sent(user, ...)
  local want, reqs = { ... }, stub.requests()
  assert.equal(#want, #reqs)
  for i, w in ipairs(want) do
    check.sent(reqs[i], { method = w[1], uri = w[2], body = w[3], token = fx.users[user].token })
  end
end

local function status_of(n) return stub.job(J(n)).status end

local function download_on() stub.config{ download_export_results = true } end

-- J6's stored export, as the stub wrote it.
local function j6_bytes() return mime.unb64(fx.jobs.J6.file.base64) end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
end)

describe("get_jobs (GET /api/v4/jobs)", function()
  it("case 47: page 0 of 2 -> J10, J9 as a Lua sequence of plain jobs", function()
    local list, err = clients.new("sysadmin"):get_jobs{ page = 0, per_page = 2 }
    assert.is_nil(err)
    assert_jobs(list, 10, 9)
    assert_sent("sysadmin", { "GET", "/api/v4/jobs?page=0&per_page=2" })
  end)

  it("case 47: no query sends none; every readable job, newest first, J11 never", function()
    assert_jobs(clients.new("sysadmin"):get_jobs(), 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
    assert_jobs(clients.new("sysadmin"):get_jobs{}, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
    assert_sent("sysadmin", { "GET", "/api/v4/jobs" }, { "GET", "/api/v4/jobs" })
  end)

  it("case 48: job_type and status filters, alone and together, keys in a stable order", function()
    local c = clients.new("sysadmin")
    assert_jobs(c:get_jobs{ job_type = "ldap_sync" }, 4)
    assert_jobs(c:get_jobs{ status = "pending" }, 5, 4, 1)
    assert_jobs(c:get_jobs{ status = "pending", job_type = "ldap_sync" }, 4)
    -- the same query from tables filled in another order
    local q = {}
    q.status, q.job_type, q.per_page, q.page = "pending", "ldap_sync", 200, 0
    assert_jobs(c:get_jobs(q), 4)
    assert_sent("sysadmin", { "GET", "/api/v4/jobs?job_type=ldap_sync" }, { "GET", "/api/v4/jobs?status=pending" },
      { "GET", "/api/v4/jobs?job_type=ldap_sync&status=pending" },
      { "GET", "/api/v4/jobs?page=0&per_page=200&job_type=ldap_sync&status=pending" })
  end)

  it("numbers in the query are whole decimals without exponent or fraction", function()
    local c = clients.new("sysadmin")
    assert_jobs(c:get_jobs{ page = 2.0, per_page = 4.0 }, 2, 1)
    assert.same({}, c:get_jobs{ page = 2 ^ 31 - 1, per_page = 200 })
    assert.same({}, c:get_jobs{ per_page = 0 }) -- an empty page, not the default 60
    assert_sent("sysadmin", { "GET", "/api/v4/jobs?page=2&per_page=4" },
      { "GET", "/api/v4/jobs?page=2147483647&per_page=200" }, { "GET", "/api/v4/jobs?per_page=0" })
  end)

  it("case 49: basic -> 403; sysmanager active_users -> 403", function()
    local list, err = clients.new("basic"):get_jobs()
    local _
    assert.is_nil(list)
    http_error(err, 403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
    assert.equal("GET", err.method)
    assert.equal("/api/v4/jobs", err.path)
    assert.equal(1, err.attempts)
    _, err = clients.new("sysmanager"):get_jobs{ job_type = "active_users" }
    http_error(err, 403, "api.context.permissions.app_error")
    assert.equal("/api/v4/jobs?job_type=active_users", err.path)
  end)

  it("case 50: a job_type the server does not know -> 400 invalid_url_param", function()
    local _, err = clients.new("sysadmin"):get_jobs{ job_type = "no_such" }
    http_error(err, 400, "api.context.invalid_url_param.app_error",
               "Invalid or missing job_type parameter in request URL.")
  end)

  it("case 51: job_type cleanup_desktop_tokens -> 400 nopermissions", function()
    local _, err = clients.new("sysadmin"):get_jobs{ job_type = "cleanup_desktop_tokens" }
    http_error(err, 400, "api.job.retrieve.nopermissions")
  end)

  it("case 52: status=bogus is refused before sending; the server's 400 through request", function()
    local c = clients.new("sysadmin")
    raises("bad argument #1 to 'get_jobs' %(field 'status': job status must be one of pending, in_progress, "
      .. "success, error, cancel_requested, canceled, warning, got 'bogus'%)", c.get_jobs, c, { status = "bogus" })
    assert.same({}, stub.requests())
    local v, err = c:request("GET", "jobs", { query = { status = "bogus" } })
    assert.is_nil(v)
    http_error(err, 400, "api.job.status.invalid", "Invalid status set")
  end)

  it("case 52 as the real server may garble it (families 2.2.1): a 200 [] followed by the AppError", function()
    -- the stub answers a clean 400; a raw server sends what the Go handler
    -- writes when its gzip wrapper does not hold the body back
    local body = '[]{"id":"api.job.status.invalid","message":"Invalid status set","detailed_error":"",'
      .. '"request_id":"' .. UNKNOWN .. '","status_code":400}'
    local srv = rawserver.start{ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body
      .. "\r\n\r\n" .. body }
    local c = clients.new(nil, { url = srv.url, token = "t" })
    local v, err = c:request("GET", "jobs", { query = { status = "bogus" } })
    srv:finish()
    assert.is_nil(v)
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
    assert.matches("api.job.status.invalid", err.body, 1, true)
  end)

  it("case 53: an empty store answers null: an empty table; [] with status: an empty table", function()
    stub.clear_jobs()
    local c = clients.new("sysadmin")
    local list, err = c:get_jobs()
    assert.is_nil(err)
    assert.same({}, list)
    assert.is_nil(getmetatable(list))
    assert.is_nil(next(list))
    assert.same({}, c:get_jobs{ status = "pending" })
    -- what the server said, through request: null and []
    assert.equal(mm.null, c:request("GET", "jobs"))
    assert.same({}, c:request("GET", "jobs", { query = { status = "pending" } }))
  end)

  it("a list answer that is not a list of objects is kind 'decode' (an independent server)", function()
    local function answer(body)
      return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    end
    local srv = rawserver.start{ answer('{"id":"x"}'), answer('[{"id":"x"},5]'), answer("[]"), answer("null"),
                                 answer('[{"id":"x","data":null}]') }
    local c = clients.new(nil, { url = srv.url, token = "t" })
    local v, err = c:get_jobs()
    local _
    assert.is_nil(v)
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
    assert.equal("response is not a list of jobs", err.message)
    assert.equal('{"id":"x"}', err.body)
    _, err = c:get_jobs_by_type("active_users")
    assert.equal("decode", err.kind)
    assert.same({}, c:get_jobs())
    assert.same({}, c:get_jobs())
    assert.same({ { id = "x" } }, c:get_jobs())
    local got = srv:finish()
    assert.equal(5, #got)
    assert.matches("^GET /api/v4/jobs HTTP/1%.1\r\n", got[1])
    assert.matches("^GET /api/v4/jobs/type/active_users HTTP/1%.1\r\n", got[2])
    assert.matches("\r\nAuthorization: Bearer t\r\n", got[1])
  end)
end)

describe("get_jobs_by_type (GET /api/v4/jobs/type/{job_type})", function()
  it("case 54: active_users per_page 2 -> J3, J2; page 1 -> J1", function()
    local c = clients.new("sysadmin")
    assert_jobs(c:get_jobs_by_type("active_users", { per_page = 2 }), 3, 2)
    assert_jobs(c:get_jobs_by_type("active_users", { page = 1, per_page = 2 }), 1)
    assert_jobs(c:get_jobs_by_type("active_users"), 3, 2, 1)
    assert_sent("sysadmin", { "GET", "/api/v4/jobs/type/active_users?per_page=2" },
      { "GET", "/api/v4/jobs/type/active_users?page=1&per_page=2" }, { "GET", "/api/v4/jobs/type/active_users" })
  end)

  it("case 55: an empty or 33-character type is refused before sending; the server's answers via request", function()
    local c = clients.new("sysadmin")
    raises("bad argument #1 to 'get_jobs_by_type' %(job type must be letters, digits, '_' or '%-', got ''%)",
           c.get_jobs_by_type, c, "")
    raises("bad argument #1 to 'get_jobs_by_type' %(job type must be at most 32 characters, got 33%)",
           c.get_jobs_by_type, c, ("a"):rep(33))
    assert.same({}, stub.requests())
    local _, err = c:request("GET", "jobs/type/")
    http_error(err, 404, "api.context.404.app_error")
    _, err = c:request("GET", "jobs/type/" .. ("a"):rep(33))
    http_error(err, 400, "api.context.invalid_url_param.app_error")
    -- 32 characters are the client's and the server's limit
    _, err = c:get_jobs_by_type(("a"):rep(32))
    http_error(err, 400, "api.job.retrieve.nopermissions")
  end)

  it("case 56: an unknown type -> 400 nopermissions; a readable type without jobs -> empty", function()
    local c = clients.new("sysadmin")
    local _, err = c:get_jobs_by_type("no_such_type")
    http_error(err, 400, "api.job.retrieve.nopermissions")
    local list = assert(c:get_jobs_by_type("elasticsearch_post_aggregation"))
    assert.same({}, list)
  end)

  it("case 57: basic data_retention -> 403; sysmanager elasticsearch_post_indexing -> 200", function()
    local _, err = clients.new("basic"):get_jobs_by_type("data_retention")
    http_error(err, 403, "api.context.permissions.app_error")
    assert.same({}, assert(clients.new("sysmanager"):get_jobs_by_type("elasticsearch_post_indexing")))
  end)
end)

describe("download_job (GET /api/v4/jobs/{id}/download)", function()
  local dir
  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.remove(dir) end)

  it("case 58: downloads off -> 501, an error and no file, before the lookup", function()
    local c = clients.new("basic")
    local body, err = c:download_job(UNKNOWN)
    assert.is_nil(body)
    http_error(err, 501, "app.job.download_export_results_not_enabled",
      "DownloadExportResults in config.json is false. Please set this to true to download the results of this job.")
    local n
    n, err = c:download_job(UNKNOWN, dir .. "/out.zip")
    assert.is_nil(n)
    http_error(err, 501, "app.job.download_export_results_not_enabled")
    assert.same({}, files.list(dir))
    assert_sent("basic", { "GET", "/api/v4/jobs/" .. UNKNOWN .. "/download" },
                { "GET", "/api/v4/jobs/" .. UNKNOWN .. "/download" })
  end)

  it("case 59: unknown id -> 404; basic and sysmanager J6 -> 403", function()
    download_on()
    local _, err = clients.new("basic"):download_job(UNKNOWN, dir .. "/out.zip")
    http_error(err, 404, "app.job.get.app_error", "Unable to get the job.")
    _, err = clients.new("basic"):download_job(J(6))
    http_error(err, 403, "api.context.permissions.app_error")
    _, err = clients.new("sysmanager"):download_job(J(6), dir .. "/out.zip")
    http_error(err, 403, "api.context.permissions.app_error")
    assert.same({}, files.list(dir))
  end)

  it("case 60: not downloadable -> 400; another type -> 400 incorrect_job_type, also for basic", function()
    download_on()
    local _, err = clients.new("sysadmin"):download_job(J(7))
    http_error(err, 400, "api.job.unable_to_download_job", "Unable to download this job")
    _, err = clients.new("sysadmin"):download_job(J(10), dir .. "/out.zip")
    http_error(err, 400, "api.job.unable_to_download_job.incorrect_job_type")
    _, err = clients.new("basic"):download_job(J(10))
    http_error(err, 400, "api.job.unable_to_download_job.incorrect_job_type")
    assert.same({}, files.list(dir))
  end)

  it("case 61: J8 (no file) and J9 (absolute export_dir) -> 404 unable_to_download_job", function()
    download_on()
    for _, n in ipairs{ 8, 9 } do
      local _, err = clients.new("sysadmin"):download_job(J(n), dir .. "/out.zip")
      http_error(err, 404, "api.job.unable_to_download_job", "Unable to download this job")
    end
    assert.same({}, files.list(dir))
  end)

  it("case 62: J6 -> the stored bytes, in memory or in a file, and the content type", function()
    download_on()
    local c = clients.new("sysadmin")
    local body, ctype = c:download_job(J(6))
    assert.equal(j6_bytes(), body)
    assert.equal("application/zip", ctype)
    local n
    n, ctype = c:download_job(J(6), dir .. "/J6.zip")
    assert.equal(fx.jobs.J6.file.size, n)
    assert.equal("application/zip", ctype)
    assert.equal(j6_bytes(), files.read(dir .. "/J6.zip"))
    assert.equal(fx.jobs.J6.file.sha256, files.sha256(dir .. "/J6.zip"))
    assert.same({ "J6.zip" }, files.list(dir))
    assert_sent("sysadmin", { "GET", "/api/v4/jobs/" .. J(6) .. "/download" },
                { "GET", "/api/v4/jobs/" .. J(6) .. "/download" })
  end)

  it("case 63: id 1234 is refused before sending; the server's 400 through request", function()
    download_on()
    local c = clients.new("sysadmin")
    raises("bad argument #1 to 'download_job' %(id must be 26 characters, got 4%)", c.download_job, c, "1234")
    assert.same({}, stub.requests())
    local _, err = c:request("GET", "jobs/1234/download")
    http_error(err, 400, "api.context.invalid_url_param.app_error",
               "Invalid or missing job_id parameter in request URL.")
  end)
end)

describe("cancel_job (POST /api/v4/jobs/{id}/cancel)", function()
  it("case 64: basic -> 403; sysadmin -> true and J1 is canceled; a POST without a body", function()
    local ok, err = clients.new("basic"):cancel_job(J(1))
    assert.is_nil(ok)
    http_error(err, 403, "api.context.permissions.app_error")
    assert.equal("POST", err.method)
    assert.equal("/api/v4/jobs/" .. J(1) .. "/cancel", err.path)
    assert.equal("pending", status_of(1))
    ok, err = clients.new("sysadmin"):cancel_job(J(1))
    assert.is_true(ok)
    assert.is_nil(err)
    assert.equal("canceled", status_of(1))
    local reqs = stub.requests()
    assert.equal(2, #reqs)
    check.sent(reqs[2], { method = "POST", uri = "/api/v4/jobs/" .. J(1) .. "/cancel",
                          token = fx.users.sysadmin.token })
  end)

  it("case 65: in-progress J2 -> true, then cancel_requested", function()
    assert.is_true(clients.new("sysadmin"):cancel_job(J(2)))
    assert.equal("cancel_requested", status_of(2))
  end)

  it("case 66: a finished job, or one canceled already -> 500, never retried (POST)", function()
    local c = clients.new("sysadmin", { retries = 2 })
    local _, err = c:cancel_job(J(3))
    http_error(err, 500, "jobs.request_cancellation.status.error",
               "Could not request cancellation for job that is not in a cancelable state.")
    assert.equal(1, err.attempts)
    assert.is_true(c:cancel_job(J(1)))
    _, err = c:cancel_job(J(1))
    http_error(err, 500, "jobs.request_cancellation.status.error")
    assert.equal(3, #stub.requests())
  end)

  it("case 67: unknown id -> 404; J11 -> 400 incorrect_job_type; 1234 refused, the server's 400 via request", function()
    local c = clients.new("sysadmin")
    local _, err = c:cancel_job(UNKNOWN)
    http_error(err, 404, "app.job.get.app_error")
    _, err = c:cancel_job(J(11))
    http_error(err, 400, "api.job.unable_to_create_job.incorrect_job_type")
    raises("bad argument #1 to 'cancel_job' %(id must be 26 characters, got 4%)", c.cancel_job, c, "1234")
    assert.equal(2, #stub.requests())
    _, err = c:request("POST", "jobs/1234/cancel")
    http_error(err, 400, "api.context.invalid_url_param.app_error")
  end)
end)

describe("update_job_status (PATCH /api/v4/jobs/{id}/status)", function()
  local function url(n) return "/api/v4/jobs/" .. (type(n) == "number" and J(n) or n) .. "/status" end

  it("case 68: basic -> 403; a body without status (via request) -> 400 before the permission check", function()
    local ok, err = clients.new("basic"):update_job_status(J(5), "cancel_requested")
    local _
    assert.is_nil(ok)
    http_error(err, 403, "api.context.permissions.app_error")
    assert.equal("PATCH", err.method)
    _, err = clients.new("basic"):request("PATCH", url(5), { body = {} })
    http_error(err, 400, "api.context.invalid_body_param.app_error", "Invalid or missing status in request body.")
    assert_sent("basic", { "PATCH", url(5), '{"status":"cancel_requested"}' }, { "PATCH", url(5), "{}" })
    assert.equal("pending", status_of(5))
  end)

  it("case 69: pending J5 to cancel_requested, force false -> true, and J5 is canceled", function()
    assert.is_true(clients.new("sysadmin"):update_job_status(J(5), "cancel_requested", { force = false }))
    assert.equal("canceled", status_of(5))
    assert_sent("sysadmin", { "PATCH", url(5), '{"status":"cancel_requested","force":false}' })
  end)

  it("case 70: pending -> canceled: 400; with force -> true", function()
    local c = clients.new("sysadmin")
    local _, err = c:update_job_status(J(5), "canceled")
    http_error(err, 400, "api.job.status.invalid", "Invalid status set")
    assert.equal("pending", status_of(5))
    assert.is_true(c:update_job_status(J(5), "canceled", { force = true }))
    assert.equal("canceled", status_of(5))
    assert_sent("sysadmin", { "PATCH", url(5), '{"status":"canceled"}' },
                { "PATCH", url(5), '{"status":"canceled","force":true}' })
  end)

  it("case 71: a finished job re-queued with force; in_progress -> pending without", function()
    local c = clients.new("sysadmin")
    assert.is_true(c:update_job_status(J(3), "pending", { force = true }))
    assert.equal("pending", status_of(3))
    assert.is_true(c:update_job_status(J(2), "pending", {}))
    assert.equal("pending", status_of(2))
    assert_sent("sysadmin", { "PATCH", url(3), '{"status":"pending","force":true}' },
                { "PATCH", url(2), '{"status":"pending"}' })
  end)

  it("case 72: to success -> 400; forced -> 500, never retried (PATCH)", function()
    local c = clients.new("sysadmin", { retries = 2 })
    local _, err = c:update_job_status(J(4), "success")
    http_error(err, 400, "api.job.status.invalid")
    _, err = c:update_job_status(J(4), "success", { force = true })
    http_error(err, 500, "app.job.update_status.app_error", "Unable to update job status. Invalid status set")
    assert.equal(1, err.attempts)
    assert.equal(2, #stub.requests())
    assert.equal("pending", status_of(4))
  end)

  it("case 73: force as a string and a non-string status are refused; the server's answers via request", function()
    local c = clients.new("sysadmin")
    raises("bad argument #3 to 'update_job_status' %(field 'force': boolean expected, got string%)",
           c.update_job_status, c, J(4), "canceled", { force = "true" })
    raises("bad argument #2 to 'update_job_status' %(job status must be one of .-, got number%)",
           c.update_job_status, c, J(4), 5)
    assert.same({}, stub.requests())
    local _, err = c:request("PATCH", url(4), { body = '{"status":"canceled","force":"true"}' })
    http_error(err, 400, "api.job.status.invalid")
    _, err = c:request("PATCH", url(4), { body = { status = 5 } })
    http_error(err, 400, "api.context.invalid_body_param.app_error")
    assert.equal("pending", status_of(4))
  end)

  it("case 74: unknown id -> 404; J11 -> 400 unable_to_manage_job", function()
    local c = clients.new("sysadmin")
    local _, err = c:update_job_status(UNKNOWN, "canceled")
    http_error(err, 404, "app.job.get.app_error")
    _, err = c:update_job_status(J(11), "canceled")
    http_error(err, 400, "api.job.unable_to_manage_job.incorrect_job_type",
               "You do not have permission to manage this job type")
  end)
end)

describe("jobs arguments are checked before anything is sent", function()
  it("every id argument", function()
    local c = clients.new("sysadmin")
    for _, case in ipairs(bad_values.IDS) do
      local pat = "%(.-" .. case[2]
      raises("bad argument #1 to 'cancel_job' " .. pat, c.cancel_job, c, case[1])
      raises("bad argument #1 to 'update_job_status' " .. pat, c.update_job_status, c, case[1], "canceled")
      raises("bad argument #1 to 'download_job' " .. pat, c.download_job, c, case[1])
      raises("bad argument #1 to 'download_job' " .. pat, c.download_job, c, case[1], "/tmp/x.zip")
    end
    assert.same({}, stub.requests())
  end)

  it("query tables: kinds, ranges and names", function()
    local c = clients.new("sysadmin")
    local bad = {
      { "x", "query table expected, got string" }, { 5, "query table expected, got number" },
      { { pages = 1 }, "unknown field 'pages' %(expected 'page', 'per_page', 'job_type', 'status'%)" },
      { { [1] = 0 }, "unknown field '1'" },
      { { page = -1 }, "field 'page': page must be a whole number from 0 to 2147483647, got %-1" },
      { { page = 1.5 }, "field 'page': page must be a whole number from 0 to 2147483647, got 1%.5" },
      { { page = 2 ^ 31 }, "field 'page': page must be a whole number" },
      { { page = "1" }, "field 'page': page must be a whole number from 0 to 2147483647, got 1" },
      { { page = 0 / 0 }, "field 'page': page must be a whole number" },
      { { per_page = 201 }, "field 'per_page': per_page must be a whole number from 0 to 200, got 201" },
      { { per_page = math.huge }, "field 'per_page': per_page must be a whole number" },
      { { per_page = true }, "field 'per_page': per_page must be a whole number" },
      { { job_type = "" }, "field 'job_type': job type must be letters, digits" },
      { { job_type = "a b" }, "field 'job_type': job type must be letters, digits" },
      { { job_type = "a&b=c" }, "field 'job_type': job type must be letters, digits" },
      { { job_type = ("a"):rep(33) }, "field 'job_type': job type must be at most 32 characters" },
      { { job_type = 5 }, "field 'job_type': job type must be a string, got number" },
      { { status = "PENDING" }, "field 'status': job status must be one of" },
      { { status = true }, "field 'status': job status must be one of .-, got boolean" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #1 to 'get_jobs' %(" .. case[2], c.get_jobs, c, case[1])
    end
    -- a type list takes only page and per_page
    raises("bad argument #2 to 'get_jobs_by_type' %(unknown field 'job_type' %(expected 'page', 'per_page'%)%)",
           c.get_jobs_by_type, c, "active_users", { job_type = "x" })
    raises("bad argument #2 to 'get_jobs_by_type' %(field 'per_page': per_page must be a whole number",
           c.get_jobs_by_type, c, "active_users", { per_page = -1 })
    for _, t in ipairs{ { nil, "must be a string, got no value" }, { 5, "must be a string, got number" },
                        { "a/b", "must be letters" }, { "a.b", "must be letters" }, { "é", "must be letters" },
                        { "a\0", "must be letters" } } do
      raises("bad argument #1 to 'get_jobs_by_type' %(job type " .. t[2], c.get_jobs_by_type, c, t[1])
    end
    assert.same({}, stub.requests())
  end)

  it("status and options of update_job_status", function()
    local c = clients.new("sysadmin")
    for _, s in ipairs{ { nil, "got no value" }, { "", "got ''" }, { "Canceled", "got 'Canceled'" },
                        { "bogus", "got 'bogus'" }, { true, "got boolean" } } do
      raises("bad argument #2 to 'update_job_status' %(job status must be one of pending, in_progress, success, "
        .. "error, cancel_requested, canceled, warning, " .. s[2] .. "%)", c.update_job_status, c, J(5), s[1])
    end
    for _, o in ipairs{ { "force", "table expected, got string" }, { true, "table expected, got boolean" },
                        { { force = 1 }, "field 'force': boolean expected, got number" },
                        { { forse = true }, "unknown field 'forse' %(expected 'force'%)" } } do
      raises("bad argument #3 to 'update_job_status' %(" .. o[2], c.update_job_status, c, J(5), "canceled", o[1])
    end
    assert.same({}, stub.requests())
  end)

  it("file and options of download_job", function()
    local c = clients.new("sysadmin")
    for _, f in ipairs{ { "", "file name expected, got string" }, { 5, "file name expected, got number" },
                        { {}, "file name expected, got table" }, { "a\0b", "file name must not contain NUL bytes" } } do
      raises("bad argument #2 to 'download_job' %(" .. f[2], c.download_job, c, J(6), f[1])
    end
    raises("bad argument #3 to 'download_job' %(field 'on_progress': function expected, got string%)",
           c.download_job, c, J(6), nil, { on_progress = "print" })
    raises("bad argument #3 to 'download_job' %(unknown field 'progress' %(expected 'on_progress'%)%)",
           c.download_job, c, J(6), "/tmp/x", { progress = print })
    assert.same({}, stub.requests())
  end)

  it("the module-level functions check the same way, before anything is sent", function()
    mm.configure{ url = stub.url, token = fx.users.sysadmin.token, retries = 0 }
    raises("bad argument #1 to 'cancel_job' %(id must be 26 characters, got 4%)", mm.cancel_job, "1234")
    raises("bad argument #2 to 'update_job_status' %(job status", mm.update_job_status, J(5), "done")
    raises("bad argument #1 to 'get_jobs' %(field 'per_page'", mm.get_jobs, { per_page = 1000 })
    raises("bad argument #1 to 'get_jobs_by_type' %(job type", mm.get_jobs_by_type, "")
    raises("bad argument #1 to 'download_job' %(id expected, got no value%)", mm.download_job)
    assert.same({}, stub.requests())
  end)
end)

describe("jobs calls in a batch", function()
  local dir
  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.remove(dir) end)

  it("every jobs operation by name; results and errors in order; a download to a path gives its byte count", function()
    download_on()
    local c = clients.new("sysadmin")
    local path = dir .. "/J6.zip"
    local results, failed = c:batch({
      { "get_jobs", { per_page = 2 } },
      { "get_jobs_by_type", "active_users", { per_page = 2 } },
      { "cancel_job", J(1) },
      { "update_job_status", J(5), "canceled", { force = true } },
      { "download_job", J(6), path },
      { "download_job", J(6) },
      { "cancel_job", J(3) },
      { "download_job", J(8), dir .. "/J8.zip" },
      { "get_jobs", { job_type = "no_such" } },
    }, { concurrency = 3 })
    assert.equal(3, failed)
    assert.equal(9, #results)
    assert_jobs(results[1], 10, 9)
    assert_jobs(results[2], 3, 2)
    assert.is_true(results[3])
    assert.is_true(results[4])
    assert.equal(fx.jobs.J6.file.size, results[5])
    assert.equal(j6_bytes(), files.read(path))
    assert.equal(j6_bytes(), results[6])
    http_error(results[7], 500, "jobs.request_cancellation.status.error")
    http_error(results[8], 404, "api.job.unable_to_download_job")
    http_error(results[9], 400, "api.context.invalid_url_param.app_error")
    assert.same({ "J6.zip" }, files.list(dir))
    assert.equal("canceled", status_of(1))
    assert.equal("canceled", status_of(5))
    -- each request as a single call sends it
    local by_uri = {}
    for _, r in ipairs(stub.requests()) do by_uri[r.method .. " " .. r.uri] = r end
    local token = fx.users.sysadmin.token
    check.sent(by_uri["GET /api/v4/jobs?per_page=2"], { method = "GET", uri = "/api/v4/jobs?per_page=2",
                                                        token = token })
    check.sent(by_uri["PATCH /api/v4/jobs/" .. J(5) .. "/status"], { method = "PATCH",
      uri = "/api/v4/jobs/" .. J(5) .. "/status", body = '{"status":"canceled","force":true}', token = token })
    check.sent(by_uri["POST /api/v4/jobs/" .. J(1) .. "/cancel"], { method = "POST",
      uri = "/api/v4/jobs/" .. J(1) .. "/cancel", token = token })
  end)

  it("an empty list sends nothing", function()
    local results, failed = clients.new("sysadmin"):batch({})
    assert.same({}, results)
    assert.equal(0, failed)
    assert.same({}, stub.requests())
  end)

  it("checks every call's arguments before sending any", function()
    local c = clients.new("sysadmin")
    local good = { "cancel_job", J(1) }
    local bad = {
      { { "cancel_job", "1234" }, "item #2: argument #1: id must be 26 characters, got 4" },
      { { "cancel_job" }, "item #2: argument #1: id expected, got no value" },
      { { "update_job_status", J(5), "done" }, "item #2: argument #2: job status must be one of" },
      { { "update_job_status", J(5), "canceled", { force = "yes" } },
        "item #2: argument #3: field 'force': boolean expected, got string" },
      { { "get_jobs", { per_page = 201 } }, "item #2: argument #1: field 'per_page'" },
      { { "get_jobs_by_type", "" }, "item #2: argument #1: job type must be letters" },
      { { "download_job", J(6), "" }, "item #2: argument #2: file name expected" },
      { { "download_job", J(6), dir .. "/x", { on_progress = print } },
        "item #2: option 'on_progress' is for single calls %(a batch has its own%)" },
      { { "cancel_jobs", J(1) },
        "call #2 must be { name, arguments%.%.%. } with the name of an endpoint, got cancel_jobs" },
      { { J(1) }, "call #2 must be { name, arguments%.%.%. }" },
      { "cancel_job", "call #2 must be { name, arguments%.%.%. } with the name of an endpoint, got string" },
    }
    for _, case in ipairs(bad) do
      raises("bad argument #1 to 'batch' %(" .. case[2], c.batch, c, { good, case[1] })
    end
    assert.same({}, stub.requests())
    assert.same({}, files.list(dir))
    assert.equal("pending", status_of(1))
  end)
end)

describe("jobs module-level functions (the default client)", function()
  it("each jobs operation, and a batch, on the configured client", function()
    download_on()
    mm.configure{ url = stub.url, token = fx.users.sysadmin.token, retries = 0 }
    assert_jobs(mm.get_jobs{ per_page = 2 }, 10, 9)
    assert_jobs(mm.get_jobs_by_type("active_users", { page = 1, per_page = 2 }), 1)
    assert.is_true(mm.cancel_job(J(1)))
    assert.is_true(mm.update_job_status(J(5), "canceled", { force = true }))
    local dir = files.tmpdir()
    finally(function() files.remove(dir) end)
    local n, ctype = mm.download_job(J(6), dir .. "/J6.zip")
    assert.equal(fx.jobs.J6.file.size, n)
    assert.equal("application/zip", ctype)
    assert.equal(j6_bytes(), mm.download_job(J(6)))
    local _, err = mm.cancel_job(J(3))
    http_error(err, 500, "jobs.request_cancellation.status.error")
    local results, failed = mm.batch{ { "cancel_job", J(2) }, { "get_jobs_by_type", "ldap_sync" } }
    assert.equal(0, failed)
    assert.is_true(results[1])
    assert_jobs(results[2], 4)
    assert.equal("canceled", status_of(1))
    assert.equal("canceled", status_of(5))
    assert.equal("cancel_requested", status_of(2))
    assert_sent("sysadmin", { "GET", "/api/v4/jobs?per_page=2" },
      { "GET", "/api/v4/jobs/type/active_users?page=1&per_page=2" }, { "POST", "/api/v4/jobs/" .. J(1) .. "/cancel" },
      { "PATCH", "/api/v4/jobs/" .. J(5) .. "/status", '{"status":"canceled","force":true}' },
      { "GET", "/api/v4/jobs/" .. J(6) .. "/download" }, { "GET", "/api/v4/jobs/" .. J(6) .. "/download" },
      { "POST", "/api/v4/jobs/" .. J(3) .. "/cancel" }, { "POST", "/api/v4/jobs/" .. J(2) .. "/cancel" },
      { "GET", "/api/v4/jobs/type/ldap_sync" })
  end)
end)

describe("jobs calls on an independent Mattermost-shaped server", function()
  local function reply(body)
    return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
  end

  it("sends these exact bytes and reads {\"status\":\"OK\"} in either case", function()
    local srv = rawserver.start{ reply('{"status":"OK"}'), reply('{"status":"ok"}'), reply('{"status":"FAIL"}'),
                                 reply('{"status":"OK"}') }
    local c = clients.new(nil, { url = srv.url, token = "tok" })
    assert.is_true(c:update_job_status(UNKNOWN, "canceled", { force = true }))
    assert.is_true(c:cancel_job(UNKNOWN))
    local ok, err = c:cancel_job(UNKNOWN)
    assert.is_nil(ok)
    assert.equal("decode", err.kind)
    assert.equal("status is not OK: FAIL", err.message)
    assert.is_true(c:update_job_status(UNKNOWN, "pending"))
    local got = srv:finish()
    local host = srv.url:match("//(.*)")
    local ua = "User-Agent: lua-mattermost/" .. mm._VERSION .. " (libcurl/" .. require("mm.core").curl_version .. ")"
    local head = "Host: " .. host .. "\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer tok\r\n"
      .. "Accept: application/json\r\n" .. ua .. "\r\n"
    assert.same({
      "PATCH /api/v4/jobs/" .. UNKNOWN .. "/status HTTP/1.1\r\n" .. head
        .. 'Content-Type: application/json\r\nContent-Length: 34\r\n\r\n{"status":"canceled","force":true}',
      "POST /api/v4/jobs/" .. UNKNOWN .. "/cancel HTTP/1.1\r\n" .. head .. "Content-Length: 0\r\n\r\n",
      "POST /api/v4/jobs/" .. UNKNOWN .. "/cancel HTTP/1.1\r\n" .. head .. "Content-Length: 0\r\n\r\n",
      "PATCH /api/v4/jobs/" .. UNKNOWN .. "/status HTTP/1.1\r\n" .. head
        .. 'Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"status":"pending"}',
    }, got)
  end)
end)

describe("compression", function()
  it("Accept-Encoding: gzip is sent unless compression = false; a gzipped list decodes the same", function()
    local plain = clients.new("sysadmin", { compression = false })
    local list = assert(plain:get_jobs())
    assert_jobs(list, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
    assert_jobs(clients.new("sysadmin"):get_jobs(), 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
    local reqs = stub.requests()
    check.sent(reqs[1], { method = "GET", uri = "/api/v4/jobs", token = fx.users.sysadmin.token, gzip = false })
    check.sent(reqs[2], { method = "GET", uri = "/api/v4/jobs", token = fx.users.sysadmin.token })
  end)
end)
