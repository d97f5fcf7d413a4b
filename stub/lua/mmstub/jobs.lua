-- Jobs routes (api-contract.md §2, api-contract-families.md §2):
-- POST /api/v4/jobs, GET /api/v4/jobs, GET /api/v4/jobs/type/{job_type},
-- GET /api/v4/jobs/{id}, GET /api/v4/jobs/{id}/download,
-- POST /api/v4/jobs/{id}/cancel and PATCH /api/v4/jobs/{id}/status.
local api = require "mmstub.api"
local state = require "mmstub.state"
local json = require "mmstub.json"
local files = require "mmstub.files"

local M = {}

local app_error, permission_error, atoi = api.app_error, api.permission_error, api.atoi
local BODY_LIMIT = api.BODY_LIMIT

-- English messages *(fork only: i18n/en.json)*.
api.add_messages{
  ["api.job.unable_to_create_job.incorrect_job_type"] = "The job type of the job you are trying to create is invalid",
  ["model.job.is_valid.type.app_error"] = "Invalid job type.",
  ["app.job.get.app_error"] = "Unable to get the job.",
  ["api.job.retrieve.nopermissions"] = "The job types of a job you are trying to retrieve does not contain permissions",
  ["api.job.status.invalid"] = "Invalid status set",
  ["api.job.unable_to_manage_job.incorrect_job_type"] = "You do not have permission to manage this job type",
  ["api.job.unable_to_download_job"] = "Unable to download this job",
  ["api.job.unable_to_download_job.incorrect_job_type"] =
    "The job type you are trying to download is not supported at the moment",
  ["app.job.download_export_results_not_enabled"] =
    "DownloadExportResults in config.json is false. Please set this to true to download the results of this job.",
  ["jobs.request_cancellation.status.error"] =
    "Could not request cancellation for job that is not in a cancelable state.",
  ["app.job.update_status.app_error"] = "Unable to update job status. Invalid status set",
}

-- ---------------------------------------------------------------- permission tables

-- Families §2.1: job type -> {read, create (also cancel), manage (PATCH
-- status)} permission; a type missing from a column gets that column's 400.
-- access_control_sync may also be created via manage_channel_access_rules
-- on the channel data.policy_id; not emulated (no fixture channel grants
-- it): manage_system only.
local READ_PERM, CREATE_PERM, MANAGE_PERM = {}, {}, {}
for _, row in ipairs({
  { "data_retention", "read_data_retention_job", "create_data_retention_job", "manage_data_retention_job" },
  { "message_export", "read_compliance_export_job", "create_compliance_export_job",
    "manage_compliance_export_job" },
  { "elasticsearch_post_indexing", "read_elasticsearch_post_indexing_job",
    "create_elasticsearch_post_indexing_job", "manage_elasticsearch_post_indexing_job" },
  { "elasticsearch_post_aggregation", "read_elasticsearch_post_aggregation_job",
    "create_elasticsearch_post_aggregation_job", "manage_elasticsearch_post_aggregation_job" },
  { "ldap_sync", "read_ldap_sync_job", "create_ldap_sync_job", "manage_ldap_sync_job" },
  { "access_control_sync", "manage_system", "manage_system", "manage_system" },
  { "mobile_session_metadata", "read_jobs" },
}) do
  READ_PERM[row[1]], CREATE_PERM[row[1]], MANAGE_PERM[row[1]] = row[2], row[3], row[4]
end
-- Downloads (families §2.4): message_export jobs only, 400 for any other
-- type, with a permission of their own.
local DOWNLOAD_PERM = { message_export = "download_compliance_export_result" }
-- Types with a worker in every build (api-contract.md §2.3); `cloud` has
-- the same permissions but never a worker; the rest of CREATE_PERM have one
-- only with the enterprise job interface.
local TE_WORKER = {}
for t in ([[migrations plugins product_notices expiry_notify active_users import_process
            import_delete export_process export_delete extract_content cloud]]):gmatch("%S+") do
  READ_PERM[t], CREATE_PERM[t], MANAGE_PERM[t] = "read_jobs", "manage_jobs", "manage_jobs"
  TE_WORKER[t] = t ~= "cloud"
end
local EE_WORKER = { data_retention = true, message_export = true, elasticsearch_post_indexing = true,
                    elasticsearch_post_aggregation = true, ldap_sync = true, access_control_sync = true }

-- model.AllJobTypes at MM@000847670673 (api-contract.md §2.6): what
-- GET /jobs accepts as job_type and lists without one.
local ALL_JOB_TYPES = {}
for t in ([[data_retention message_export elasticsearch_post_indexing elasticsearch_post_aggregation
            bleve_post_indexing ldap_sync migrations plugins expiry_notify product_notices active_users
            import_process import_delete export_process export_delete cloud extract_content
            last_accessible_post last_accessible_file cleanup_desktop_tokens]]):gmatch("%S+") do
  ALL_JOB_TYPES[#ALL_JOB_TYPES + 1] = t
  ALL_JOB_TYPES[t] = true
end

-- model.IsValidJobStatus
local STATUSES = { pending = true, in_progress = true, success = true, error = true,
                   cancel_requested = true, canceled = true, warning = true }

-- ---------------------------------------------------------------- helpers

local function job_response(ctx, status, job)
  -- json.NewEncoder(w).Encode(job): trailing newline (api-contract.md §2.5)
  return api.reply(ctx, status, json.job(job) .. "\n")
end

-- RequireJobId: IsValidId (26 letters or digits; the route admits ASCII
-- alphanumerics only), else 400.
local function bad_job_id(ctx, id)
  if #id ~= 26 then return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "job_id") end
end

local function not_found(ctx) return app_error(ctx, 404, "app.job.get.app_error", "") end

-- The permission check of every route that names a job type: the type's
-- entry in `perms` (a column of the permission tables), 400 `no_entry`
-- when it has none, else 403 when the session lacks it. Returns that error
-- response, or nil when the session may go on.
local function type_denied(ctx, session, perms, job_type, no_entry)
  local perm = perms[job_type]
  if not perm then return app_error(ctx, 400, no_entry, "") end
  if not state.has_permission(session, perm) then return permission_error(ctx, session, perm) end
end

-- The stored job `id` of a route on one job, checked as type_denied does
-- with `perms` and `no_entry`: the job, or nil and the 404 or that error.
local function permitted_job(ctx, session, id, perms, no_entry)
  local job = state.get_job(id)
  if not job then return nil, not_found(ctx) end
  local denied = type_denied(ctx, session, perms, job.type, no_entry)
  if denied then return nil, denied end
  return job
end

-- Params page / per_page (families §1.2): bad or negative page -> 0;
-- per_page falls back to the legacy pageSize, bad or negative -> 60,
-- capped at 200.
local function paging(args)
  local page = atoi(api.query("page", args))
  if not page or page < 0 then page = 0 end
  local per_page = atoi(api.query("per_page", args)) or atoi(api.query("pageSize", args))
  if not per_page or per_page < 0 then per_page = 60 elseif per_page > 200 then per_page = 200 end
  return page, per_page
end

-- ORDER BY CreateAt DESC; then the newest stored first.
local function newest_first(list)
  table.sort(list, function(a, b)
    if a.create_at ~= b.create_at then return a.create_at > b.create_at end
    return a.seq > b.seq
  end)
  return list
end

-- The stored jobs of `types` (a set) and `status` (nil: any), newest
-- first, one page of them.
local function select_jobs(types, status, page, per_page)
  local hits = {}
  for _, job in ipairs(state.all_jobs()) do
    if types[job.type] and (not status or job.status == status) then hits[#hits + 1] = job end
  end
  newest_first(hits)
  local out = {}
  for i = page * per_page + 1, math.min(#hits, (page + 1) * per_page) do out[#out + 1] = hits[i] end
  return out
end

-- json.Marshal of []*model.Job: `empty` ("null" or "[]") for none; no
-- trailing newline.
local function job_list(list, empty)
  if #list == 0 then return empty end
  local parts = {}
  for n, job in ipairs(list) do parts[n] = json.job(job) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- ---------------------------------------------------------------- pacing (stub behaviour)

--- Move a job created by POST /jobs one step, as a worker would between two
-- polls (api-contract.md §2.8 step 4; case 29): each GET /jobs/{id} counts
-- as a poll; `steps` polls see in_progress, the next one the outcome. A
-- cancel_requested job is canceled at the next poll (its worker reacted).
-- Jobs stored directly (fixtures, POST /__stub/jobs) have no pacing.
function M.advance_job(job)
  local s = job.stub
  if not s then return job end
  local now = state.now_ms()
  if job.status == "cancel_requested" then
    job.status, job.last_activity_at = "canceled", now
    state.save_job(job)
    return job
  end
  if job.status ~= "pending" and job.status ~= "in_progress" then return job end
  s.polls = s.polls + 1
  if s.polls == 1 then job.start_at = now end
  job.last_activity_at = now
  if s.outcome == "never" or s.polls <= s.steps then
    job.status = "in_progress"
    job.progress = s.outcome == "never" and math.min(99, s.polls * 10)
                   or math.floor(100 * s.polls / (s.steps + 1))
  elseif s.outcome == "error" then
    job.status = "error"
    job.data = job.data or {}
    job.data.error = "stub: job failed (job_outcome=error)"
  else
    job.status = s.outcome
    if s.outcome ~= "canceled" then job.progress = 100 end
  end
  state.save_job(job)
  return job
end

-- Store updates: Store.Job().UpdateStatus / UpdateStatusOptimistically set
-- the status and last_activity_at.
local function set_status(job, status)
  job.status, job.last_activity_at = status, state.now_ms()
  -- a re-queued job is claimed again by a worker: its pacing starts over
  if status == "pending" and job.stub then job.stub.polls = 0 end
  state.save_job(job)
end

-- JobServer.RequestCancellation (families §2.5 step 4): pending ->
-- canceled, in_progress -> cancel_requested, else false.
local function request_cancellation(job)
  if job.status == "pending" then set_status(job, "canceled")
  elseif job.status == "in_progress" then set_status(job, "cancel_requested")
  else return false end
  return true
end

local function cancel_failed(ctx, job)
  return app_error(ctx, 500, "jobs.request_cancellation.status.error", "id=" .. job.id)
end

-- ---------------------------------------------------------------- routes

-- POST /api/v4/jobs (api-contract.md §2.2)
local function create_job(ctx, session)
  local node, err = api.decode_body(ctx, "job")
  if not node then return err end
  local req = json.to_job(node)
  if not req then
    return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "job")
  end
  -- 400 before 403 (§2.2 step 3)
  local denied = type_denied(ctx, session, CREATE_PERM, req.type, "api.job.unable_to_create_job.incorrect_job_type")
  if denied then return denied end
  local job = {
    id = state.new_id(), type = req.type, priority = 0, create_at = state.now_ms(),
    start_at = 0, last_activity_at = 0, status = "pending", progress = 0, data = req.data,
  }
  if not (TE_WORKER[req.type] or (ctx.cfg.enterprise and EE_WORKER[req.type])) then
    return app_error(ctx, 400, "model.job.is_valid.type.app_error", "id=" .. job.id)
  end
  -- The stub decides at creation how the job will run (see M.advance_job).
  job.stub = { outcome = ctx.cfg.job_outcome, steps = ctx.cfg.job_steps, polls = 0 }
  state.save_job(job)
  return job_response(ctx, 201, job)
end

-- GET /api/v4/jobs (families §2.2)
local function get_jobs(ctx, session)
  local args = ngx.req.get_uri_args(0)
  local job_type = api.query("job_type", args)
  local types = {}
  if job_type ~= "" then
    if not ALL_JOB_TYPES[job_type] then
      -- access_control_sync is readable but not in AllJobTypes: 400 here *(inferred)*
      return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "job_type")
    end
    local denied = type_denied(ctx, session, READ_PERM, job_type, "api.job.retrieve.nopermissions")
    if denied then return denied end
    types[job_type] = true
  else
    -- every readable type; those without a read permission are skipped
    local any = false
    for _, t in ipairs(ALL_JOB_TYPES) do
      local perm = READ_PERM[t]
      if perm and state.has_permission(session, perm) then types[t], any = true, true end
    end
    if not any then return permission_error(ctx, session, "") end -- no permission named
  end
  local status = api.query("status", args)
  if status ~= "" and not STATUSES[status] then
    -- The server sets this error but does not return, so it writes the
    -- list and then the error: `[]{...}` (families §2.2.1, inferred). The
    -- emulator answers the clean 400 the contract asks for.
    return app_error(ctx, 400, "api.job.status.invalid", "")
  end
  local page, per_page = paging(args)
  -- An empty page is `null` without a status (sqlx leaves the slice nil),
  -- `[]` with one (families §2.2 step 6, inferred).
  local list = select_jobs(types, status ~= "" and status or nil, page, per_page)
  return api.reply(ctx, 200, job_list(list, status == "" and "null" or "[]"))
end

-- GET /api/v4/jobs/type/{job_type} (families §2.3)
local function get_jobs_by_type(ctx, session, job_type)
  if #job_type > 32 then -- RequireJobType ("" cannot match the route)
    return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "job_type")
  end
  -- not checked against AllJobTypes
  local denied = type_denied(ctx, session, READ_PERM, job_type, "api.job.retrieve.nopermissions")
  if denied then return denied end
  local page, per_page = paging(ngx.req.get_uri_args(0))
  return api.reply(ctx, 200, job_list(select_jobs({ [job_type] = true }, nil, page, per_page), "[]"))
end

-- GET /api/v4/jobs/{job_id} (api-contract.md §2.8)
local function get_job(ctx, session, id)
  local bad = bad_job_id(ctx, id)
  if bad then return bad end
  local job, err = permitted_job(ctx, session, id, READ_PERM, "api.job.retrieve.nopermissions")
  if not job then return err end
  return job_response(ctx, 200, M.advance_job(job))
end

-- path.Base
local function path_base(p)
  if p == "" then return "." end
  p = p:gsub("/+$", "")
  if p == "" then return "/" end
  return p:match("[^/]*$")
end

-- filepath.IsLocal(filepath.Clean(p)): relative, not empty, not escaping
local function is_local(p)
  if p == "" or p:sub(1, 1) == "/" then return false end
  local depth = 0
  for part in p:gmatch("[^/]+") do
    if part == ".." then
      depth = depth - 1
      if depth < 0 then return false end
    elseif part ~= "." then
      depth = depth + 1
    end
  end
  return true
end

local DOWNLOAD_DETAIL = "job.Data did not include export_dir, export_dir was malformed, or jobId.zip wasn't found"

-- GET /api/v4/jobs/{job_id}/download (families §2.4)
local function download_job(ctx, session, id)
  local bad = bad_job_id(ctx, id)
  if bad then return bad end
  if not ctx.cfg.download_export_results then -- before the lookup and any permission
    return app_error(ctx, 501, "app.job.download_export_results_not_enabled", "")
  end
  local job, err = permitted_job(ctx, session, id, DOWNLOAD_PERM, "api.job.unable_to_download_job.incorrect_job_type")
  if not job then return err end
  local data = job.data or {}
  if not api.parse_bool(data.is_downloadable) then
    return app_error(ctx, 400, "api.job.unable_to_download_job", "")
  end
  local dir = data.export_dir
  local base = path_base(dir or "")
  if dir and dir ~= "" and base ~= "/" and base ~= "." then
    -- A directory export is zipped on the fly by the server; the stub's file
    -- store holds no directories, so every one is missing: 404 as for a
    -- missing directory, or for an absolute or escaping path.
    return app_error(ctx, 404, "api.job.unable_to_download_job",
                     is_local(dir) and "error creating zip reader" or DOWNLOAD_DETAIL)
  end
  -- the legacy file export/<job_id>.zip
  local rel, path = files.export_path(job.id)
  local size = files.size(path)
  if not size then return app_error(ctx, 404, "api.job.unable_to_download_job", DOWNLOAD_DETAIL) end
  -- web.WriteFileResponse (families §2.4 step 7); http.ServeContent's part
  -- (Content-Length, Last-Modified, Accept-Ranges, Range, conditionals) is
  -- nginx's, which serves the file (see api.send).
  files.set_mtime(path, math.floor(job.last_activity_at / 1000))
  local resp = api.reply(ctx, 200, "")
  local name = job.id .. ".zip" -- url.PathEscape leaves an id alone
  api.set_header(resp, "Content-Type", "application/zip")
  api.set_header(resp, "Cache-Control", "private, max-age=86400")
  api.set_header(resp, "Content-Disposition", 'attachment;filename="' .. name .. '"; filename*=UTF-8\'\'' .. name)
  api.set_header(resp, "X-Frame-Options", "DENY")
  api.set_header(resp, "Content-Security-Policy", "Frame-ancestors 'none'")
  resp.file = { uri = "/__files/" .. rel, path = path, size = size, mtime = math.floor(job.last_activity_at / 1000) }
  return resp
end

-- POST /api/v4/jobs/{job_id}/cancel (families §2.5); a body is ignored.
local function cancel_job(ctx, session, id)
  local bad = bad_job_id(ctx, id)
  if bad then return bad end
  -- "if permission to create, permission to cancel"
  local job, err = permitted_job(ctx, session, id, CREATE_PERM, "api.job.unable_to_create_job.incorrect_job_type")
  if not job then return err end
  if not request_cancellation(job) then return cancel_failed(ctx, job) end
  return api.status_ok(ctx)
end

-- model.Job.IsValidStatusChange
local TRANSITIONS = {
  in_progress = { pending = true, cancel_requested = true },
  pending = { cancel_requested = true },
  cancel_requested = { canceled = true },
}

-- model.StringInterfaceFromJSON: the first JSON value decoded into a map
-- (decode errors swallowed: an empty map); returns the `status` and
-- `force` nodes (a repeated key: the last one).
local function status_props()
  local node = json.decode_first(api.body():sub(1, BODY_LIMIT))
  local props = {}
  if node and node.kind == "object" then
    for n, key in ipairs(node.keys) do props[key] = node.vals[n] end
  end
  return props.status, props.force
end

-- PATCH /api/v4/jobs/{job_id}/status (families §2.6)
local function update_job_status(ctx, session, id)
  local bad = bad_job_id(ctx, id)
  if bad then return bad end
  local status_node, force_node = status_props()
  if not status_node or status_node.kind ~= "string" then -- before the lookup
    return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "status")
  end
  local status = status_node.value
  local force = force_node and force_node.kind == "bool" and force_node.value -- "true" counts as false
  local job, err = permitted_job(ctx, session, id, MANAGE_PERM, "api.job.unable_to_manage_job.incorrect_job_type")
  if not job then return err end
  if not force and not (TRANSITIONS[job.status] or {})[status] then
    return app_error(ctx, 400, "api.job.status.invalid", "")
  end
  -- App.UpdateJobStatus
  if status == "pending" or status == "canceled" then -- SetJobPending / SetJobCanceled: unconditional
    set_status(job, status)
  elseif status == "cancel_requested" then -- even with force, only from pending / in_progress
    if not request_cancellation(job) then return cancel_failed(ctx, job) end
  else
    return app_error(ctx, 500, "app.job.update_status.app_error", "")
  end
  return api.status_ok(ctx)
end

-- ---------------------------------------------------------------- control (/__stub/jobs)

--- GET /__stub/jobs: every stored job, newest first, as the API encodes
-- them (not advanced).
function M.list_all()
  return job_list(newest_first(state.all_jobs()), "[]")
end

local STORE_KEYS = { id = true, type = true, status = true, priority = true, create_at = true, start_at = true,
                     last_activity_at = true, progress = true, data = true, file = true }
local INT_KEYS = { "priority", "create_at", "start_at", "last_activity_at", "progress" }

local function whole(v) return type(v) == "number" and v >= 0 and v <= 2 ^ 53 and v == math.floor(v) end

-- The job of a POST /__stub/jobs body, or nil, message.
local function stored_job(spec)
  if type(spec) ~= "table" then return nil, "body must be a JSON object" end
  for k in pairs(spec) do
    if not STORE_KEYS[k] then return nil, "unknown key: " .. tostring(k) end
  end
  local id = spec.id or state.new_id()
  if type(id) ~= "string" or not id:match("^" .. ("[A-Za-z0-9]"):rep(26) .. "$") then
    return nil, "id must be 26 letters or digits"
  end
  if state.get_job(id) then return nil, "a job with id " .. id .. " is already stored" end
  local typ, status = spec.type or "message_export", spec.status or "success"
  if type(typ) ~= "string" or typ == "" then return nil, "type must be a non-empty string" end
  if not STATUSES[status] then
    return nil, "status must be pending|in_progress|success|error|cancel_requested|canceled|warning"
  end
  for _, k in ipairs(INT_KEYS) do
    if spec[k] ~= nil and not whole(spec[k]) then return nil, k .. " must be a whole number >= 0" end
  end
  local data = spec.data
  if data == ngx.null then data = nil end
  if data ~= nil then
    local ok = type(data) == "table"
    for k, v in pairs(ok and data or {}) do
      if type(k) ~= "string" or type(v) ~= "string" then ok = false end
    end
    if not ok then return nil, "data must be null or an object of strings" end
  elseif spec.file then
    data = { is_downloadable = "true" }
  end
  local now, pending = state.now_ms(), status == "pending"
  local create_at = spec.create_at or now
  return {
    id = id, type = typ, priority = spec.priority or 0, create_at = create_at,
    start_at = spec.start_at or (pending and 0 or create_at),
    last_activity_at = spec.last_activity_at or (pending and 0 or now),
    status = status, progress = spec.progress or (status == "success" and 100 or 0), data = data,
  }
end

-- The "file" of a POST /__stub/jobs body: {size =, content =, sha256 =} or nil, message.
local function export_file_spec(f)
  if type(f) ~= "table" then return nil, 'file must be {"size":N, "content":"pattern"|"zeros", "sha256":bool}' end
  for k in pairs(f) do
    if k ~= "size" and k ~= "content" and k ~= "sha256" then return nil, "unknown file key: " .. tostring(k) end
  end
  if not whole(f.size) then return nil, "file.size must be a whole number >= 0" end
  local content = f.content or "pattern"
  if content ~= "pattern" and content ~= "zeros" then return nil, 'file.content must be "pattern" or "zeros"' end
  if f.sha256 ~= nil and type(f.sha256) ~= "boolean" then return nil, "file.sha256 must be a boolean" end
  return { size = f.size, content = content, sha256 = f.sha256 == true }
end

--- POST /__stub/jobs: store a job directly, as the fixtures are (never
-- advanced), optionally with a generated legacy export file
-- export/<id>.zip of `size` bytes (files.generate). `spec` is the decoded
-- body. Returns the answer's JSON, {"job":{...},"file":{...}} (the job as
-- the API encodes it), or nil, HTTP status, message.
function M.store(spec)
  local job, err = stored_job(spec)
  if not job then return nil, 400, err end
  local info
  if spec.file ~= nil then
    local f
    f, err = export_file_spec(spec.file)
    if not f then return nil, 400, err end
    local rel, path = files.export_path(job.id)
    local sum
    sum, err = files.generate(path, f.size, f.content, f.sha256)
    if not sum then return nil, 500, "cannot write the export file: " .. tostring(err) end
    state.note_export_file(job.id)
    files.set_mtime(path, math.floor(job.last_activity_at / 1000))
    info = ',"file":{"path":' .. json.string(rel) .. ',"size":' .. string.format("%d", f.size)
           .. ',"content":' .. json.string(f.content)
           .. (f.sha256 and ',"sha256":' .. json.string(sum) or "") .. "}"
  end
  state.save_job(job)
  return '{"job":' .. json.job(job) .. (info or "") .. "}"
end

M.routes = {
  { "POST", "^/api/v4/jobs$", create_job },
  { "GET", "^/api/v4/jobs$", get_jobs },
  { "GET", "^/api/v4/jobs/type/([A-Za-z0-9_%-]+)$", get_jobs_by_type },
  { "GET", "^/api/v4/jobs/([A-Za-z0-9]+)$", get_job },
  { "GET", "^/api/v4/jobs/([A-Za-z0-9]+)/download$", download_job },
  { "POST", "^/api/v4/jobs/([A-Za-z0-9]+)/cancel$", cancel_job },
  { "PATCH", "^/api/v4/jobs/([A-Za-z0-9]+)/status$", update_job_status },
}

return M
