-- Jobs routes (api-contract.md §2, api-contract-families.md §2):
-- POST /api/v4/jobs and GET /api/v4/jobs/{id}.
local api = require "mmstub.api"
local state = require "mmstub.state"
local json = require "mmstub.json"

local M = {}

local app_error, permission_error = api.app_error, api.permission_error
local BODY_LIMIT = api.BODY_LIMIT

api.add_messages{
  ["api.job.unable_to_create_job.incorrect_job_type"] = "The job type of the job you are trying to create is invalid",
  ["model.job.is_valid.type.app_error"] = "Invalid job type.",
  ["app.job.get.app_error"] = "Unable to get the job.",
  ["api.job.retrieve.nopermissions"] = "The job types of a job you are trying to retrieve does not contain permissions",
}

-- §2.3: job type -> create permission. access_control_sync is special-cased.
local CREATE_PERM = {
  data_retention = "create_data_retention_job",
  message_export = "create_compliance_export_job",
  elasticsearch_post_indexing = "create_elasticsearch_post_indexing_job",
  elasticsearch_post_aggregation = "create_elasticsearch_post_aggregation_job",
  ldap_sync = "create_ldap_sync_job",
  access_control_sync = "manage_system",
}
-- §2.8: job type -> read permission.
local READ_PERM = {
  data_retention = "read_data_retention_job",
  message_export = "read_compliance_export_job",
  elasticsearch_post_indexing = "read_elasticsearch_post_indexing_job",
  elasticsearch_post_aggregation = "read_elasticsearch_post_aggregation_job",
  ldap_sync = "read_ldap_sync_job",
  access_control_sync = "manage_system",
  mobile_session_metadata = "read_jobs",
}
-- Types with a worker in every build (§2.3); `cloud` needs manage_jobs but
-- never has a worker; the rest have one only with the enterprise interface.
local TE_WORKER = {}
for t in ([[migrations plugins product_notices expiry_notify active_users import_process
            import_delete export_process export_delete extract_content]]):gmatch("%S+") do
  CREATE_PERM[t], READ_PERM[t], TE_WORKER[t] = "manage_jobs", "read_jobs", true
end
CREATE_PERM.cloud, READ_PERM.cloud = "manage_jobs", "read_jobs"
local EE_WORKER = { data_retention = true, message_export = true, elasticsearch_post_indexing = true,
                    elasticsearch_post_aggregation = true, ldap_sync = true, access_control_sync = true }

local function job_response(ctx, status, job)
  -- json.NewEncoder(w).Encode(job): trailing newline (§2.5)
  return api.reply(ctx, status, json.job(job) .. "\n")
end

-- POST /api/v4/jobs (§2.2)
local function create_job(ctx, session)
  if ngx.ctx.body_refused then
    return app_error(ctx, 413, "api.context.request_body_too_large.app_error", "http: request body too large")
  end
  local body = api.body()
  -- json.Decoder reads at most BODY_LIMIT bytes; a value that needs more is
  -- the MaxBytesReader error -> 413, anything else that fails is 400.
  local node, err = json.decode_first(body:sub(1, BODY_LIMIT))
  if not node and err == "eof" and #body > BODY_LIMIT then
    return app_error(ctx, 413, "api.context.request_body_too_large.app_error", "http: request body too large")
  end
  local req = node and json.to_job(node)
  if not req then
    return app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", "job")
  end
  local perm = CREATE_PERM[req.type]
  if not perm then -- 400 before 403 (§2.2 step 3)
    return app_error(ctx, 400, "api.job.unable_to_create_job.incorrect_job_type", "")
  end
  local allowed = state.has_permission(session, perm)
  -- access_control_sync may also pass via manage_channel_access_rules on
  -- channel data.policy_id; the stub has no channels, so only manage_system.
  if not allowed then return permission_error(ctx, session, perm) end
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

--- Move a stored job one step, as a worker would between two polls (§2.8
-- step 4; the pacing is stub behaviour, case 29): each GET counts as a
-- poll; `steps` polls see in_progress, the next one the terminal outcome.
function M.advance_job(job)
  local s = job.stub
  if job.status ~= "pending" and job.status ~= "in_progress" then return job end
  s.polls = s.polls + 1
  local now = state.now_ms()
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

-- GET /api/v4/jobs/{job_id} (§2.8)
local function get_job(ctx, session, id)
  if #id ~= 26 then
    return app_error(ctx, 400, "api.context.invalid_url_param.app_error", "", "job_id")
  end
  local job = state.get_job(id)
  if not job then return app_error(ctx, 404, "app.job.get.app_error", "") end
  local perm = READ_PERM[job.type]
  if not perm then return app_error(ctx, 400, "api.job.retrieve.nopermissions", "") end
  if not state.has_permission(session, perm) then return permission_error(ctx, session, perm) end
  return job_response(ctx, 200, M.advance_job(job))
end

M.routes = {
  { "POST", "^/api/v4/jobs$", create_job },
  { "GET", "^/api/v4/jobs/([A-Za-z0-9]+)$", get_job },
}

return M
