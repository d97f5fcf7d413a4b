-- Black-box spec of the stub's jobs routes against api-contract-families.md
-- §2 and its cases 47-74 (fixture jobs J1-J11), plus job downloads through
-- the fault modes and the jobs control API.
-- Run: bin/mm-stub run -- spec/run lua5.4 /usr/bin/busted spec/stub_jobs_spec.lua
local rawhttp = require "support.rawhttp"
local S = require "support.stubapi"
local pattern = require "support.export_pattern"
local files = require "support.files"
local cjson = require "cjson"
local mime = require "mime"
local socket = require "socket"

local call, control, config, assert_error = S.call, S.control, S.config, S.assert_error
local assert_status_ok = S.assert_status_ok

local function J(n) return S.fx.jobs["J" .. n] end
local function jobs(...)
  local out = {}
  for i, n in ipairs({ ... }) do out[i] = J(n) end
  return out
end

-- A list answer (families §2.2 step 6): 200 application/json, exactly
-- `expected`, no trailing newline.
local function assert_list(r, expected)
  assert.are.equal(200, r.status, r.body)
  assert.are.equal("application/json", r.h["content-type"])
  assert.are.equal("0", r.h["expires"])
  assert.are.equal(expected, r.body)
end

-- The job as GET /api/v4/jobs/{id} shows it now (sysadmin).
local function job_now(id)
  local r = call("GET", "/api/v4/jobs/" .. id, { as = "sysadmin" })
  assert.are.equal(200, r.status, r.body)
  return cjson.decode(r.body)
end

local function cancel(id, as) return call("POST", "/api/v4/jobs/" .. id .. "/cancel", { as = as or "sysadmin" }) end
local function patch(id, body, as)
  return call("PATCH", "/api/v4/jobs/" .. id .. "/status", { as = as or "sysadmin", body = body })
end
local function download(id, as, headers)
  return call("GET", "/api/v4/jobs/" .. id .. "/download", { as = as or "sysadmin", headers = headers })
end

-- POST /__stub/jobs: a job stored directly (optionally with an export file).
local function store(spec)
  local r = assert(rawhttp.request(S.URL, { method = "POST", path = "/__stub/jobs", body = cjson.encode(spec) }))
  return r, r.status == 200 and cjson.decode(r.body) or nil
end

-- A job created through the API (paced by job_outcome/job_steps).
local function create(typ)
  local r = call("POST", "/api/v4/jobs", { as = "sysadmin", body = '{"type":"' .. (typ or "active_users") .. '"}' })
  assert.are.equal(201, r.status, r.body)
  return cjson.decode(r.body)
end

local LAST_MODIFIED_J6 = "Wed, 01 Jan 2025 00:06:00 GMT" -- J6 last_activity_at 1735689960000

before_each(S.reset)

describe("GET /api/v4/jobs", function()
  it("case 47: sysadmin page 0 of 2 -> [J10, J9], newest first; J11 is never listed; no newline", function()
    assert_list(call("GET", "/api/v4/jobs?page=0&per_page=2", { as = "sysadmin" }), S.list_json(jobs(10, 9)))
    assert_list(call("GET", "/api/v4/jobs?page=1&per_page=2", { as = "sysadmin" }), S.list_json(jobs(8, 7)))
    -- defaults page 0, per_page 60: every readable fixture job
    assert_list(call("GET", "/api/v4/jobs", { as = "sysadmin" }), S.list_json(jobs(10, 9, 8, 7, 6, 5, 4, 3, 2, 1)))
  end)

  it("case 48: job_type and status filters, alone and together", function()
    assert_list(call("GET", "/api/v4/jobs?job_type=ldap_sync", { as = "sysadmin" }), S.list_json(jobs(4)))
    assert_list(call("GET", "/api/v4/jobs?status=pending", { as = "sysadmin" }), S.list_json(jobs(5, 4, 1)))
    assert_list(call("GET", "/api/v4/jobs?job_type=ldap_sync&status=pending", { as = "sysadmin" }),
                S.list_json(jobs(4)))
    assert_list(call("GET", "/api/v4/jobs?job_type=ldap_sync&status=success", { as = "sysadmin" }), "[]")
  end)

  it("case 49: basic -> 403 naming no permission; sysmanager active_users -> 403; sysmanager sees ldap_sync", function()
    assert_error(call("GET", "/api/v4/jobs", { as = "basic" }), 403, "api.context.permissions.app_error",
                 "You do not have the appropriate permissions.")
    assert_error(call("GET", "/api/v4/jobs?job_type=active_users", { as = "sysmanager" }), 403,
                 "api.context.permissions.app_error")
    -- without a type: the types sysmanager may read (ldap_sync, elasticsearch_*)
    assert_list(call("GET", "/api/v4/jobs", { as = "sysmanager" }), S.list_json(jobs(4)))
    config({ developer = true })
    assert_error(call("GET", "/api/v4/jobs", { as = "basic" }), 403, "api.context.permissions.app_error", nil,
                 "userId=" .. S.fx.users.basic.id .. ", permission=")
    assert_error(call("GET", "/api/v4/jobs?job_type=active_users", { as = "sysmanager" }), 403,
                 "api.context.permissions.app_error", nil,
                 "userId=" .. S.fx.users.sysmanager.id .. ", permission=read_jobs")
  end)

  it("case 50: job_type not in AllJobTypes -> 400 invalid_url_param job_type", function()
    assert_error(call("GET", "/api/v4/jobs?job_type=no_such", { as = "sysadmin" }), 400,
                 "api.context.invalid_url_param.app_error", "Invalid or missing job_type parameter in request URL.")
    -- readable, but not in AllJobTypes *(inferred)*
    assert_error(call("GET", "/api/v4/jobs?job_type=access_control_sync", { as = "sysadmin" }), 400,
                 "api.context.invalid_url_param.app_error")
    -- checked before the permission
    assert_error(call("GET", "/api/v4/jobs?job_type=no_such", { as = "basic" }), 400,
                 "api.context.invalid_url_param.app_error")
  end)

  it("case 51: job_type cleanup_desktop_tokens (no read permission entry) -> 400 nopermissions", function()
    assert_error(call("GET", "/api/v4/jobs?job_type=cleanup_desktop_tokens", { as = "sysadmin" }), 400,
                 "api.job.retrieve.nopermissions",
                 "The job types of a job you are trying to retrieve does not contain permissions")
  end)

  it("case 52: status=bogus -> a clean 400 api.job.status.invalid, after the permission checks", function()
    assert_error(call("GET", "/api/v4/jobs?status=bogus", { as = "sysadmin" }), 400, "api.job.status.invalid",
                 "Invalid status set")
    assert_error(call("GET", "/api/v4/jobs?status=PENDING", { as = "sysadmin" }), 400, "api.job.status.invalid")
    assert_error(call("GET", "/api/v4/jobs?status=bogus", { as = "basic" }), 403, "api.context.permissions.app_error")
  end)

  it("case 53: empty store -> null without status, [] with it", function()
    control("DELETE", "/__stub/jobs")
    assert_list(call("GET", "/api/v4/jobs", { as = "sysadmin" }), "null")
    assert_list(call("GET", "/api/v4/jobs?status=pending", { as = "sysadmin" }), "[]")
    assert_list(call("GET", "/api/v4/jobs?job_type=active_users", { as = "sysadmin" }), "null")
    assert_list(call("GET", "/api/v4/jobs/type/active_users", { as = "sysadmin" }), "[]")
    -- a page past the end is empty in the same way
    S.reset()
    assert_list(call("GET", "/api/v4/jobs?page=9", { as = "sysadmin" }), "null")
    assert_list(call("GET", "/api/v4/jobs?page=9&status=pending", { as = "sysadmin" }), "[]")
  end)

  it("page and per_page are parsed as params.go does", function()
    for i = 1, 205 do
      assert.are.equal(200, store({ type = "active_users", status = "pending", create_at = 1700000000000 + i }).status)
    end
    local function count(query)
      local r = call("GET", "/api/v4/jobs?job_type=active_users" .. query, { as = "sysadmin" })
      assert.are.equal(200, r.status)
      local list = cjson.decode(r.body)
      return list == cjson.null and 0 or #list
    end
    assert.are.equal(60, count(""))           -- default
    assert.are.equal(200, count("&per_page=500")) -- capped
    assert.are.equal(60, count("&per_page=abc"))  -- parse error
    assert.are.equal(60, count("&per_page=-1"))   -- negative
    assert.are.equal(0, count("&per_page=0"))     -- kept: an empty page
    assert.are.equal(3, count("&per_page=%2B3"))  -- Atoi takes a sign
    assert.are.equal(5, count("&pageSize=5"))     -- the legacy name
    assert.are.equal(5, count("&per_page=x&pageSize=5"))
    assert.are.equal(60, count("&per_page=1.5"))
    assert.are.equal(8, count("&page=1&per_page=200")) -- 208 active_users jobs in all
    assert.are.equal(200, count("&page=-1&per_page=200")) -- negative page: 0
    assert.are.equal(200, count("&page=abc&per_page=200"))
    assert.are.equal(200, count("&page=99999999999999999999&per_page=200")) -- out of int range: 0
  end)

  it("lists jobs created by POST /jobs too, newest first, without advancing them", function()
    local a, b = create(), create()
    local want = S.list_json({ b, a, J(3), J(2), J(1) })
    assert_list(call("GET", "/api/v4/jobs?job_type=active_users", { as = "sysadmin" }), want)
    assert_list(call("GET", "/api/v4/jobs?job_type=active_users", { as = "sysadmin" }), want)
    local polled = job_now(a.id) -- a poll advances it
    assert.are.equal("in_progress", polled.status)
    assert_list(call("GET", "/api/v4/jobs?job_type=active_users&status=in_progress", { as = "sysadmin" }),
                S.list_json({ polled, J(2) }))
  end)
end)

describe("GET /api/v4/jobs/type/{job_type}", function()
  it("case 54: active_users per_page 2 -> [J3, J2]; page 1 -> [J1]", function()
    assert_list(call("GET", "/api/v4/jobs/type/active_users?per_page=2", { as = "sysadmin" }),
                S.list_json(jobs(3, 2)))
    assert_list(call("GET", "/api/v4/jobs/type/active_users?page=1&per_page=2", { as = "sysadmin" }),
                S.list_json(jobs(1)))
    assert_list(call("GET", "/api/v4/jobs/type/active_users?page=2&per_page=2", { as = "sysadmin" }), "[]")
  end)

  it("case 55: empty type -> router 404; 33 characters -> 400 invalid_url_param; 32 -> 400 nopermissions", function()
    S.assert_404_route(call("GET", "/api/v4/jobs/type/", { as = "sysadmin" }), "/api/v4/jobs/type/")
    S.assert_404_route(call("GET", "/api/v4/jobs/type/a.b", { as = "sysadmin" }), "/api/v4/jobs/type/a.b")
    assert_error(call("GET", "/api/v4/jobs/type/" .. ("a"):rep(33), { as = "sysadmin" }), 400,
                 "api.context.invalid_url_param.app_error", "Invalid or missing job_type parameter in request URL.")
    assert_error(call("GET", "/api/v4/jobs/type/" .. ("a"):rep(32), { as = "sysadmin" }), 400,
                 "api.job.retrieve.nopermissions")
  end)

  it("case 56: unknown type -> 400 nopermissions; a readable type with no jobs -> []", function()
    assert_error(call("GET", "/api/v4/jobs/type/no_such_type", { as = "sysadmin" }), 400,
                 "api.job.retrieve.nopermissions")
    assert_list(call("GET", "/api/v4/jobs/type/elasticsearch_post_aggregation", { as = "sysadmin" }), "[]")
    -- not checked against AllJobTypes: access_control_sync is fine here
    assert_list(call("GET", "/api/v4/jobs/type/access_control_sync", { as = "sysadmin" }), "[]")
  end)

  it("case 57: basic data_retention -> 403; sysmanager elasticsearch_post_indexing -> 200", function()
    assert_error(call("GET", "/api/v4/jobs/type/data_retention", { as = "basic" }), 403,
                 "api.context.permissions.app_error")
    assert_list(call("GET", "/api/v4/jobs/type/elasticsearch_post_indexing", { as = "sysmanager" }), "[]")
    assert_error(call("GET", "/api/v4/jobs/type/active_users"), 401, "api.context.session_expired.app_error")
  end)
end)

describe("GET /api/v4/jobs/{id}/download", function()
  it("case 58: DownloadExportResults off -> 501 before the lookup and any permission", function()
    assert_error(download(S.random_id(), "basic"), 501, "app.job.download_export_results_not_enabled",
                 "DownloadExportResults in config.json is false. Please set this to true to download the results"
                 .. " of this job.")
    assert_error(download(J(6).id), 501, "app.job.download_export_results_not_enabled")
  end)

  it("case 59: enabled: basic random id -> 404; basic and sysmanager J6 -> 403", function()
    config({ download_export_results = true })
    assert_error(download(S.random_id(), "basic"), 404, "app.job.get.app_error", "Unable to get the job.")
    assert_error(download(J(6).id, "basic"), 403, "api.context.permissions.app_error")
    assert_error(download(J(6).id, "sysmanager"), 403, "api.context.permissions.app_error")
    config({ developer = true })
    assert_error(download(J(6).id, "basic"), 403, "api.context.permissions.app_error", nil,
                 "userId=" .. S.fx.users.basic.id .. ", permission=download_compliance_export_result")
  end)

  it("case 60: not downloadable -> 400; another type -> 400 incorrect_job_type, even for basic", function()
    config({ download_export_results = true })
    assert_error(download(J(7).id), 400, "api.job.unable_to_download_job", "Unable to download this job")
    assert_error(download(J(10).id), 400, "api.job.unable_to_download_job.incorrect_job_type",
                 "The job type you are trying to download is not supported at the moment")
    assert_error(download(J(10).id, "basic"), 400, "api.job.unable_to_download_job.incorrect_job_type")
  end)

  it("case 61: J8 (no file) and J9 (absolute export_dir) -> 404 unable_to_download_job", function()
    config({ download_export_results = true })
    assert_error(download(J(8).id), 404, "api.job.unable_to_download_job", "Unable to download this job")
    assert_error(download(J(9).id), 404, "api.job.unable_to_download_job", "Unable to download this job")
  end)

  it("case 62: J6 -> 200 application/zip with the stored bytes and the file-serving headers", function()
    config({ download_export_results = true })
    local r = download(J(6).id)
    assert.are.equal(200, r.status)
    local name = J(6).id .. ".zip"
    assert.are.equal("application/zip", r.h["content-type"])
    assert.are.equal('attachment;filename="' .. name .. "\"; filename*=UTF-8''" .. name, r.h["content-disposition"])
    assert.are.equal("private, max-age=86400", r.h["cache-control"])
    assert.are.equal("nosniff", r.h["x-content-type-options"])
    assert.are.equal("DENY", r.h["x-frame-options"])
    assert.are.equal("Frame-ancestors 'none'", r.h["content-security-policy"])
    assert.are.equal(LAST_MODIFIED_J6, r.h["last-modified"])
    assert.are.equal("bytes", r.h["accept-ranges"])
    assert.are.equal("0", r.h["expires"])
    assert.is_truthy(r.h["x-request-id"]:match(S.ID_PATTERN))
    assert.is_truthy(r.h["x-version-id"])
    assert.is_nil(r.h["etag"])
    local bytes = mime.unb64(J(6).file.base64)
    assert.are.equal(J(6).file.size, #bytes)
    assert.are.equal(tostring(#bytes), r.h["content-length"])
    assert.are.equal(bytes, r.body)
    assert.are.equal("PK\3\4", r.body:sub(1, 4)) -- a zip archive
    assert.is_truthy(r.body:find("actiance_export.xml", 1, true))
    -- still GET only: the router has no HEAD for it
    assert.are.equal(404, call("HEAD", "/api/v4/jobs/" .. J(6).id .. "/download", { as = "sysadmin" }).status)
  end)

  it("case 63: job id 1234 -> 400 invalid_url_param job_id, enabled or not", function()
    assert_error(download("1234"), 400, "api.context.invalid_url_param.app_error",
                 "Invalid or missing job_id parameter in request URL.")
    config({ download_export_results = true })
    assert_error(download("1234"), 400, "api.context.invalid_url_param.app_error")
  end)

  it("Range, If-Modified-Since and an unsatisfiable Range, as http.ServeContent answers them", function()
    config({ download_export_results = true })
    local bytes = mime.unb64(J(6).file.base64)
    local r = download(J(6).id, "sysadmin", { { "Range", "bytes=4-9" } })
    assert.are.equal(206, r.status)
    assert.are.equal("bytes 4-9/" .. #bytes, r.h["content-range"])
    assert.are.equal(bytes:sub(5, 10), r.body)
    assert.are.equal("application/zip", r.h["content-type"])
    r = download(J(6).id, "sysadmin", { { "Range", "bytes=-3" } })
    assert.are.equal(206, r.status)
    assert.are.equal(bytes:sub(-3), r.body)
    r = download(J(6).id, "sysadmin", { { "If-Modified-Since", LAST_MODIFIED_J6 } })
    assert.are.equal(304, r.status)
    assert.are.equal("", r.body)
    r = download(J(6).id, "sysadmin", { { "If-Modified-Since", "Wed, 01 Jan 2025 00:05:59 GMT" } })
    assert.are.equal(200, r.status)
    r = download(J(6).id, "sysadmin", { { "Range", "bytes=" .. #bytes .. "-" } })
    assert.are.equal(416, r.status)
    assert.are.equal("text/plain; charset=utf-8", r.h["content-type"])
    assert.are.equal("bytes */" .. #bytes, r.h["content-range"])
    assert.are.equal("invalid range: failed to overlap\n", r.body)
  end)

  it("export_dir decides the file; is_downloadable is parsed as strconv.ParseBool", function()
    config({ download_export_results = true })
    local function stored(data)
      local r, out = store({ data = data, file = { size = 10000 } })
      assert.are.equal(200, r.status, r.body)
      return out.job.id
    end
    for _, dir in ipairs({ ".", "/", "a/.", "./", "" }) do -- base name "." or "/": the legacy file
      local r = download(stored({ is_downloadable = "true", export_dir = dir }))
      assert.are.equal(200, r.status, dir)
      assert.is_true(pattern.check(r.body, 0))
    end
    for _, dir in ipairs({ "exports/x", "../x", "/abs" }) do -- a directory export: none in the stub
      assert_error(download(stored({ is_downloadable = "true", export_dir = dir })), 404,
                   "api.job.unable_to_download_job")
    end
    for _, v in ipairs({ "1", "t", "T", "TRUE", "True" }) do
      assert.are.equal(200, download(stored({ is_downloadable = v })).status, v)
    end
    for _, v in ipairs({ "yes", "on", "", "tRUE" }) do
      assert_error(download(stored({ is_downloadable = v })), 400, "api.job.unable_to_download_job")
    end
  end)
end)

describe("POST /api/v4/jobs/{id}/cancel", function()
  it("case 64: basic -> 403; sysadmin cancels pending J1 -> 200 OK, and J1 is canceled", function()
    assert_error(cancel(J(1).id, "basic"), 403, "api.context.permissions.app_error")
    local before = socket.gettime() * 1000
    assert_status_ok(cancel(J(1).id))
    local job = job_now(J(1).id)
    assert.are.equal("canceled", job.status) -- not cancel_requested
    assert.is_true(job.last_activity_at >= before - 1000)
    assert.are.equal(J(1).start_at, job.start_at)
  end)

  it("case 65: in-progress J2 -> 200, then cancel_requested (fixtures never advance)", function()
    assert_status_ok(cancel(J(2).id))
    assert.are.equal("cancel_requested", job_now(J(2).id).status)
    assert.are.equal("cancel_requested", job_now(J(2).id).status)
  end)

  it("case 66: a finished job, or one canceled already -> 500 request_cancellation", function()
    assert_error(cancel(J(3).id), 500, "jobs.request_cancellation.status.error",
                 "Could not request cancellation for job that is not in a cancelable state.")
    assert_status_ok(cancel(J(1).id))
    assert_error(cancel(J(1).id), 500, "jobs.request_cancellation.status.error")
    config({ developer = true })
    assert_error(cancel(J(3).id), 500, "jobs.request_cancellation.status.error", nil, "id=" .. J(3).id)
  end)

  it("case 67: unknown id -> 404; 1234 -> 400; J11 -> 400 incorrect_job_type (the create table)", function()
    assert_error(cancel(S.random_id()), 404, "app.job.get.app_error")
    assert_error(cancel("1234"), 400, "api.context.invalid_url_param.app_error",
                 "Invalid or missing job_id parameter in request URL.")
    assert_error(cancel(J(11).id), 400, "api.job.unable_to_create_job.incorrect_job_type")
    -- the create permission decides: sysmanager may create ldap_sync jobs, not data_retention
    assert_status_ok(cancel(J(4).id, "sysmanager"))
    assert_error(cancel(J(5).id, "sysmanager"), 403, "api.context.permissions.app_error")
    S.assert_404_route(call("GET", "/api/v4/jobs/" .. J(5).id .. "/cancel", { as = "sysadmin" }),
                       "/api/v4/jobs/" .. J(5).id .. "/cancel")
  end)

  it("a body is ignored; jobs created by POST /jobs are cancelable while their worker runs", function()
    assert_status_ok(call("POST", "/api/v4/jobs/" .. J(1).id .. "/cancel", { as = "sysadmin", body = "not json" }))
    local job = create()
    assert_status_ok(cancel(job.id))
    assert.are.equal("canceled", job_now(job.id).status)
    config({ job_outcome = "never" })
    job = create()
    assert.are.equal("in_progress", job_now(job.id).status)
    assert_status_ok(cancel(job.id))
    assert.are.equal("cancel_requested", control("GET", "/__stub/jobs/" .. job.id).status)
    -- its worker notices at the next poll (stub pacing)
    assert.are.equal("canceled", job_now(job.id).status)
  end)
end)

describe("PATCH /api/v4/jobs/{id}/status", function()
  it("case 68: basic -> 403; a body without status -> 400 before the lookup and permissions", function()
    assert_error(patch(J(5).id, '{"status":"cancel_requested"}', "basic"), 403, "api.context.permissions.app_error")
    assert_error(patch(J(5).id, "{}", "basic"), 400, "api.context.invalid_body_param.app_error",
                 "Invalid or missing status in request body.")
    assert_error(patch(S.random_id(), "{}"), 400, "api.context.invalid_body_param.app_error")
    config({ developer = true })
    assert_error(patch(J(5).id, '{"status":"cancel_requested"}', "basic"), 403,
                 "api.context.permissions.app_error", nil,
                 "userId=" .. S.fx.users.basic.id .. ", permission=manage_data_retention_job")
  end)

  it("case 69: pending J5 to cancel_requested -> 200, and J5 is canceled", function()
    assert_status_ok(patch(J(5).id, '{"status":"cancel_requested","force":false}'))
    assert.are.equal("canceled", job_now(J(5).id).status)
  end)

  it("case 70: pending -> canceled is no valid change: 400; forced -> 200", function()
    assert_error(patch(J(5).id, '{"status":"canceled"}'), 400, "api.job.status.invalid", "Invalid status set")
    assert.are.equal("pending", job_now(J(5).id).status)
    assert_status_ok(patch(J(5).id, '{"status":"canceled","force":true}'))
    assert.are.equal("canceled", job_now(J(5).id).status)
  end)

  it("case 71: forced re-queue of a finished job; in_progress -> pending without force", function()
    assert_status_ok(patch(J(3).id, '{"status":"pending","force":true}'))
    local j3 = job_now(J(3).id)
    assert.are.equal("pending", j3.status)
    assert.are.equal(100, j3.progress) -- only status and last_activity_at change
    assert_status_ok(patch(J(2).id, '{"status":"pending"}'))
    assert.are.equal("pending", job_now(J(2).id).status)
  end)

  it("case 72: to success -> 400; forced -> 500 update_status", function()
    assert_error(patch(J(4).id, '{"status":"success"}'), 400, "api.job.status.invalid")
    assert_error(patch(J(4).id, '{"status":"success","force":true}'), 500, "app.job.update_status.app_error",
                 "Unable to update job status. Invalid status set")
    assert.are.equal("pending", job_now(J(4).id).status)
  end)

  it("case 73: force as a string counts as false; a non-string status -> 400 invalid_body_param", function()
    assert_error(patch(J(4).id, '{"status":"canceled","force":"true"}'), 400, "api.job.status.invalid")
    assert_error(patch(J(4).id, '{"status":5}'), 400, "api.context.invalid_body_param.app_error")
    for _, body in ipairs({ "", "not json", "[]", "null", '{"status":null}', '{"Status":"canceled"}',
                            '{"status":"canceled"', '["status","canceled"]' }) do
      assert_error(patch(J(4).id, body), 400, "api.context.invalid_body_param.app_error")
    end
    -- the first JSON value only; a repeated key: the last one
    assert_status_ok(patch(J(4).id, '{"status":"bogus","status":"cancel_requested"} trailing'))
    assert.are.equal("canceled", job_now(J(4).id).status)
  end)

  it("case 74: unknown id -> 404; J11 -> 400 unable_to_manage_job", function()
    assert_error(patch(S.random_id(), '{"status":"canceled"}'), 404, "app.job.get.app_error")
    assert_error(patch(J(11).id, '{"status":"canceled"}'), 400, "api.job.unable_to_manage_job.incorrect_job_type",
                 "You do not have permission to manage this job type")
    assert_error(patch("1234", '{"status":"canceled"}'), 400, "api.context.invalid_url_param.app_error")
  end)

  it("cancel_requested even when forced only from pending or in_progress; canceled after cancel_requested", function()
    assert_error(patch(J(3).id, '{"status":"cancel_requested","force":true}'), 500,
                 "jobs.request_cancellation.status.error")
    assert_status_ok(patch(J(2).id, '{"status":"cancel_requested"}'))
    assert.are.equal("cancel_requested", job_now(J(2).id).status)
    assert_status_ok(patch(J(2).id, '{"status":"canceled"}'))
    assert.are.equal("canceled", job_now(J(2).id).status)
  end)
end)

describe("job downloads through the fault modes #faults", function()
  local SIZE = 3 * 1024 * 1024 + 5 -- several of the stub's 1 MiB chunks, the last one short
  local id

  before_each(function()
    config({ download_export_results = true })
    local r, out = store({ file = { size = SIZE } })
    assert.are.equal(200, r.status, r.body)
    id = out.job.id
  end)

  -- GET the download through /__fault/<mode>; returns the response (maybe
  -- partial), the receive error and the seconds it took.
  local function fetch(mode, timeout)
    local conn = assert(rawhttp.connect(S.URL, timeout))
    local t0 = socket.gettime()
    local r, err = conn:request({ method = "GET", path = "/__fault/" .. mode .. "/api/v4/jobs/" .. id .. "/download",
                                  headers = S.auth("sysadmin") })
    conn:close()
    return r, err, socket.gettime() - t0
  end

  it("pass: the whole file", function()
    local r, err = fetch("pass")
    assert.is_nil(err)
    assert.are.equal(200, r.status)
    assert.are.equal(tostring(SIZE), r.h["content-length"])
    assert.are.equal(SIZE, #r.body)
    assert.is_true(pattern.check(r.body, 0))
  end)

  it("close_mid_body: the whole length announced, half the file, then the connection closes", function()
    local r, err = fetch("close_mid_body")
    assert.are.equal("closed", err)
    assert.are.equal(200, r.status)
    assert.are.equal("application/zip", r.h["content-type"])
    assert.are.equal(tostring(SIZE), r.h["content-length"])
    assert.are.equal(math.floor(SIZE / 2), #r.body)
    assert.is_true(pattern.check(r.body, 0))
  end)

  it("truncated: every byte, a Content-Length 100 longer, then the connection closes", function()
    local r, err = fetch("truncated")
    assert.are.equal("closed", err)
    assert.are.equal(tostring(SIZE + 100), r.h["content-length"])
    assert.are.equal(SIZE, #r.body)
    assert.is_true(pattern.check(r.body, 0))
  end)

  it("slow_body: the headers at once, the file after S seconds", function()
    local r, err = fetch("slow_body", 0.5)
    assert.are.equal("timeout", err)
    assert.are.equal(200, r.status)
    assert.are.equal("bytes", r.h["accept-ranges"])
    assert.is_truthy(r.h["last-modified"])
    assert.are.equal("", r.body)
    local took
    r, err, took = fetch("slow_body:1")
    assert.is_nil(err)
    assert.is_true(took >= 0.9)
    assert.are.equal(SIZE, #r.body)
    assert.is_true(pattern.check(r.body, 0))
  end)

  it("slow_headers: nothing for S seconds, then the whole file", function()
    local r, err = fetch("slow_headers", 0.5)
    assert.is_nil(r)
    assert.are.equal("timeout", err)
    local took
    r, err, took = fetch("slow_headers:1")
    assert.is_nil(err)
    assert.is_true(took >= 0.9)
    assert.are.equal(200, r.status)
    assert.are.equal(SIZE, #r.body)
  end)

  it("an error answer is cut like any other: the download refused, half its AppError", function()
    config({ download_export_results = false })
    local r, err = fetch("close_mid_body")
    assert.are.equal("closed", err)
    assert.are.equal(501, r.status)
    assert.are.equal(math.floor(tonumber(r.h["content-length"]) / 2), #r.body)
  end)
end)

describe("control API: jobs", function()
  local PREFIX = assert(os.getenv("MM_STUB_PREFIX"))

  it("GET /__stub/fixtures: J1-J11 with fixed NewId-shaped ids, oldest first, as the contract lists them", function()
    local want = {
      { "active_users", "pending" }, { "active_users", "in_progress" }, { "active_users", "success" },
      { "ldap_sync", "pending" }, { "data_retention", "pending" }, { "message_export", "success" },
      { "message_export", "success" }, { "message_export", "success" }, { "message_export", "success" },
      { "cloud", "success" }, { "cleanup_desktop_tokens", "pending" },
    }
    local seen = {}
    for n, w in ipairs(want) do
      local j = J(n)
      assert.is_truthy(j.id:match(S.ID_PATTERN), j.id)
      assert.is_nil(seen[j.id])
      seen[j.id] = true
      assert.are.same(w, { j.type, j.status })
      if n > 1 then assert.is_true(j.create_at > J(n - 1).create_at) end
      local stored = control("GET", "/__stub/jobs/" .. j.id)
      stored.file = j.file
      assert.are.same(j, stored) -- stored as listed
    end
    assert.are.same({ is_downloadable = "true" }, J(6).data)
    assert.are.equal(cjson.null, J(7).data)
    assert.are.same({ is_downloadable = "true" }, J(8).data)
    assert.are.same({ is_downloadable = "true", export_dir = "/bad/absolute/path" }, J(9).data)
    local f = J(6).file
    assert.are.equal("export/" .. J(6).id .. ".zip", f.path)
    assert.is_truthy(f.sha256:match("^" .. ("%x"):rep(64) .. "$"))
    assert.are.equal(f.size, #mime.unb64(f.base64))
    assert.are.equal(f.size, files.size(PREFIX .. "/files/" .. f.path))
    assert.is_nil(J(8).file)
  end)

  it("POST /__stub/jobs stores a job directly: listed, never advanced, defaults filled in", function()
    local r, out = store({ type = "active_users", status = "pending", data = { k = "v" } })
    assert.are.equal(200, r.status, r.body)
    local job = out.job
    assert.is_truthy(job.id:match(S.ID_PATTERN))
    assert.are.same({ k = "v" }, job.data)
    for _ = 1, 3 do assert.are.equal("pending", job_now(job.id).status) end
    assert.are.equal(job.id, cjson.decode(call("GET", "/api/v4/jobs?per_page=1", { as = "sysadmin" }).body)[1].id)
    -- defaults: a finished message_export job, no data without a file
    r, out = store({})
    assert.are.equal(200, r.status)
    assert.are.same({ "message_export", "success", 100 }, { out.job.type, out.job.status, out.job.progress })
    assert.are.equal(cjson.null, out.job.data)
    assert.is_nil(out.file)
    -- the fixture id space: a chosen id, once
    r, out = store({ id = ("a"):rep(26), type = "ldap_sync", status = "in_progress", create_at = 5, progress = 7 })
    assert.are.equal(200, r.status, r.body)
    assert.are.same(out.job, control("GET", "/__stub/jobs/" .. ("a"):rep(26)))
    assert.are.equal(400, (store({ id = ("a"):rep(26) })).status)
    -- GET /__stub/jobs: every stored job, newest first
    local all = control("GET", "/__stub/jobs")
    assert.are.equal(14, #all)
    assert.are.equal(job.id, all[2].id)
    assert.are.equal(("a"):rep(26), all[14].id)
  end)

  it("POST /__stub/jobs with a file: a downloadable message_export job of any size, content to verify", function()
    config({ download_export_results = true })
    local size = 3 * 1024 * 1024 + 5
    local r, out = store({ file = { size = size, sha256 = true } })
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ is_downloadable = "true" }, out.job.data)
    local f = out.file
    assert.are.same({ "export/" .. out.job.id .. ".zip", size, "pattern" }, { f.path, f.size, f.content })
    assert.are.equal(size, files.size(PREFIX .. "/files/" .. f.path))
    local d = download(out.job.id)
    assert.are.equal(200, d.status)
    assert.are.equal(size, #d.body)
    assert.is_true(pattern.check(d.body, 0))
    assert.are.equal(os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(out.job.last_activity_at / 1000)),
                     d.h["last-modified"])
    -- the reported sha256 is the download's
    local tmp = os.tmpname()
    local fh = assert(io.open(tmp, "wb"))
    fh:write(d.body)
    fh:close()
    local p = assert(io.popen("env -u LD_PRELOAD sha256sum " .. tmp)) -- (make test-asan preloads ASan)
    local sum = p:read("*a"):match("^(%x+)")
    p:close()
    os.remove(tmp)
    assert.are.equal(sum, f.sha256)
    -- a pattern the spec's checker rejects when shifted or changed
    assert.is_false((pattern.check(d.body:sub(2), 0)))
    assert.are.equal(4096, select(2, pattern.check(d.body:sub(1, 4096) .. "x" .. d.body:sub(4098), 0)))
  end)

  it("a 5 GiB export in an instant: a sparse file of zeros, served by nginx (Range to its end)", function()
    config({ download_export_results = true })
    local size = 5 * 1024 ^ 3 + 1
    local r, out = store({ file = { size = size, content = "zeros" } })
    assert.are.equal(200, r.status, r.body)
    assert.are.equal(size, files.size(PREFIX .. "/files/" .. out.file.path))
    local d = download(out.job.id, "sysadmin", { { "Range", "bytes=-10" } })
    assert.are.equal(206, d.status)
    assert.are.equal(("bytes %d-%d/%d"):format(size - 10, size - 1, size), d.h["content-range"])
    assert.are.equal(("\0"):rep(10), d.body)
  end)

  it("POST /__stub/jobs refuses bad input with 400 and stores nothing", function()
    local before = #control("GET", "/__stub/jobs")
    for _, body in ipairs({
      { nope = 1 }, { id = "short" }, { id = J(1).id }, { type = "" }, { type = 5 }, { status = "done" },
      { create_at = -1 }, { progress = 1.5 }, { data = { n = 1 } }, { data = "x" },
      { file = { size = -1 } }, { file = { size = 1.5 } }, { file = {} }, { file = { size = 1, content = "x" } },
      { file = { size = 1, sha256 = "yes" } }, { file = { size = 1, extra = 1 } }, { file = 5 },
    }) do
      local r = store(body)
      assert.are.equal(400, r.status, cjson.encode(body))
      assert.are.equal("string", type(cjson.decode(r.body).error), r.body)
    end
    local r = assert(rawhttp.request(S.URL, { method = "POST", path = "/__stub/jobs", body = "not json" }))
    assert.are.equal(400, r.status)
    assert.are.equal(before, #control("GET", "/__stub/jobs"))
  end)

  it("DELETE /__stub/jobs empties the store and removes generated files; reset restores the fixtures", function()
    local _, out = store({ file = { size = 5000 } })
    local path = PREFIX .. "/files/" .. out.file.path
    assert.are.equal(5000, files.size(path))
    control("DELETE", "/__stub/jobs")
    assert.is_nil(files.size(path))
    assert.are.same({}, control("GET", "/__stub/jobs"))
    assert_error(call("GET", "/api/v4/jobs/" .. J(1).id, { as = "sysadmin" }), 404, "app.job.get.app_error")
    -- fixture files belong to the file store, not the job store
    assert.are.equal(J(6).file.size, files.size(PREFIX .. "/files/" .. J(6).file.path))
    _, out = store({ file = { size = 5000 } })
    path = PREFIX .. "/files/" .. out.file.path
    S.reset()
    assert.is_nil(files.size(path))
    assert.are.equal(11, #control("GET", "/__stub/jobs"))
    assert.are.equal("pending", job_now(J(1).id).status)
  end)

  it("download_export_results: a boolean in PUT /__stub/config; --download-exports starts with it on", function()
    assert.is_false(control("GET", "/__stub/config").download_export_results)
    local r = assert(rawhttp.request(S.URL, { method = "PUT", path = "/__stub/config",
                                              body = '{"download_export_results":"yes"}' }))
    assert.are.equal(400, r.status)
    assert.is_true(config({ download_export_results = true }).download_export_results)
    S.reset()
    assert.is_false(control("GET", "/__stub/config").download_export_results)
    local p = assert(io.popen("env -u LD_PRELOAD bin/mm-stub run --no-tls --download-exports -- "
      .. "sh -c 'curl -sS --noproxy \"*\" \"$MM_STUB_URL/__stub/config\"' 2>&1"))
    local out = p:read("*a")
    p:close()
    local ok, cfg = pcall(cjson.decode, out)
    assert.is_true(ok, out)
    assert.is_true(cfg.download_export_results)
  end)
end)
