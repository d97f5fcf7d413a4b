--- A client for the Mattermost REST API v4.
--
-- `mm` knows Mattermost: endpoints, URLs, JSON, argument checks, retries,
-- pacing for the server's rate limiter, and the shape of results and
-- errors. The HTTP work is done in C by `mm.core` over libcurl.
--
-- Every operation of the jobs and commands APIs is a method of a client
-- and a module-level function (on the default client), made from the
-- endpoint table `mm.endpoints`; `client:request` reaches any other
-- `/api/v4` route.
--
-- Bad arguments raise at once and send nothing. Everything the world does
-- wrong (an HTTP error, a timeout, a refused connection, a body that is
-- not JSON) returns `nil, err`, where `err` is an error object (see
-- `mm.is_error`) with stable fields and a one-line `tostring`.
--
-- @module mm
-- @usage
-- local mm = require "mm"
-- local job = assert(mm.create_job{ type = "active_users" })
-- print(job.id, job.status)
local core = require "mm.core"
local client = require "mm.client"
local endpoints = require "mm.endpoints"
local errors = require "mm.errors"
local codec = require "mm.codec"
local jobs = require "mm.jobs"

local mm = {
  _VERSION = client.VERSION,
}

local Client = client.Client
local invoker, argmsg = client.invoker, client.argmsg
local getenv = os.getenv

--- The endpoint table: one row per operation (see `mm.endpoints`), each
-- with at least `name`, `method`, `path`, `args` and `result`.
mm.endpoints = endpoints.rows

--- The value `client:request` returns for a JSON `null` body.
mm.null = codec.null

--- Tells whether a value is an `mm` error object.
-- Error objects have these fields, any of which may be nil:
-- `kind` (`"http"`, `"timeout"`, `"connect_timeout"`, `"connect"`, `"tls"`,
-- `"network"`, `"too_large"`, `"decode"`, `"protocol"`, `"url"`, `"file"`,
-- `"job"`, `"wait_timeout"`, `"canceled"`, `"aborted"`, `"not_found"`,
-- `"curl"`), `status` (HTTP status), `id`, `message`, `detailed_error`,
-- `request_id`, `status_code` (from Mattermost's error body), `body` (a
-- non-JSON error body, cut to 1 KiB), `curl_code`, `attempts`, `method`,
-- `path`, `retry_after` (seconds), `location` (of a 3xx), `job`.
-- @param v any value
-- @treturn boolean
-- @usage
-- local token, err = c:regen_token(id)
-- if mm.is_error(err) and err.status == 404 then print("no such command") end
mm.is_error = errors.is_error

--- Makes an error object from a plain table of its fields (one that
-- crossed from another Lua state, e.g. an nginx thread pool).
-- @tparam table t the fields
mm.error_from = errors.from

--- Default option values, documented in the README. Read-only: a program
-- sets its options on its clients, never for the whole process.
-- @table defaults
mm.defaults = setmetatable({}, {
  __index = client.DEFAULTS,
  __newindex = function() error("mm.defaults is read-only: pass options to mm.new or mm.configure", 2) end,
  __pairs = function() return next, client.DEFAULTS, nil end,
  __metatable = false,
})

--- Catches signals for a program that must stop cleanly (the `mm` CLI):
-- the signals are blocked and queued, and a client given the watcher as
-- option `interrupt` stops starting requests once one arrives, lets those
-- in flight finish (a second signal aborts them) and returns what it has.
-- For programs, not libraries: it changes the calling thread's signal
-- mask. Linux only.
-- @tparam table names among `"INT"`, `"TERM"`, `"HUP"`, `"QUIT"`
-- @return a watcher: `w:caught()` gives the first signal's name and the
-- count so far (nil before any), `w:close()` restores the mask
-- @usage
-- local stop = mm.catch_signals{ "INT", "TERM" }
-- local c = mm.new{ url = url, token = token, interrupt = stop }
function mm.catch_signals(names)
  return core.signals(names)
end

--- Creates a client.
-- @tparam table opts options:
--
-- * `url` (string, required): the server root, e.g. `https://chat.example.com`;
--   a trailing slash, a sub-path and a URL ending in `/api/v4` are accepted.
-- * `token` (string, required): a personal access token or session token.
-- * `timeout`, `connect_timeout` (seconds; defaults 30 and 10).
-- * `retries` (default 2), `max_retry_wait` (seconds, default 30).
-- * `max_rate_wait` (seconds, default 120): how long a request refused
--   with 429 may wait for the rate limiter before it fails.
-- * `max_body` (bytes, default 8 MiB): larger responses fail with kind `too_large`.
-- * `compression` (boolean, default true): ask for gzip.
-- * `user_agent` (string): replaces the default `lua-mattermost/<version> ...`.
-- * `cafile`, `capath`: CA certificates to trust; `sslcert`, `sslkey`: a client certificate.
-- * `insecure` (boolean): turns TLS verification off. Never the default; says so in `tostring(client)`.
-- * `proxy`, `noproxy`: as libcurl's; without them, libcurl's variables
--   (`http_proxy`, `https_proxy`, `all_proxy`, `no_proxy`) are read when the client is made.
-- * `debug` (function or `true`): receives each request and response line,
--   `Authorization` redacted; `MM_DEBUG=1` in the environment logs to stderr.
-- * `interrupt`: a watcher from `mm.catch_signals`.
--
-- Unknown options, wrong types and a token with white space or control
-- characters raise an error.
-- @treturn Client
-- @usage
-- local c = mm.new{ url = "https://chat.example.com", token = os.getenv("MM_TOKEN") }
-- local job = assert(c:create_job{ type = "active_users" })
-- c:close()
function mm.new(opts)
  local c, why = client.new(opts)
  if not c then error(argmsg("new", 1, why), 2) end
  return c
end

-- ------------------------------------------------------------------------
-- The default client, for the module-level functions.

local default_client

--- Sets up the default client used by the module-level functions.
-- Without it, the default client is made on first use from the
-- environment variables `MM_URL` and `MM_TOKEN`.
-- @tparam table opts as for `mm.new`
-- @usage
-- mm.configure{ url = "https://chat.example.com", token = token, retries = 3 }
-- local token = assert(mm.regen_token(command_id))
function mm.configure(opts)
  local c, why = client.new(opts)
  if not c then error(argmsg("configure", 1, why), 2) end
  if default_client then default_client:close() end
  default_client = c
end

-- The default client, or nil and the message to raise.
local function default()
  if default_client and not default_client._closed then return default_client end
  local url, token = getenv("MM_URL"), getenv("MM_TOKEN")
  if url == nil or url == "" then
    return nil, "mm: no server configured: set MM_URL and MM_TOKEN, or call mm.configure{ url = ..., token = ... }"
  end
  if token == nil or token == "" then
    return nil, "mm: no token configured: set MM_TOKEN, or call mm.configure{ url = ..., token = ... }"
  end
  local c, why = client.new{ url = url, token = token }
  if not c then return nil, "mm: " .. why:gsub("option 'url'", "MM_URL"):gsub("option 'token'", "MM_TOKEN") end
  default_client = c
  return c
end

-- ------------------------------------------------------------------------
-- Methods and module-level functions. A method is `f(self, ...)`
-- returning ok, a, b: ok nil means `a` is the message to raise; then a,
-- b are returned as they are (value, extra or nil, err).

local function method(name, f)
  Client[name] = function(self, ...)
    local ok, a, b = f(self, ...)
    if not ok then error(a, 2) end
    return a, b
  end
  mm[name] = function(...)
    local c, why = default()
    if not c then error(why, 2) end
    local ok, a, b = f(c, ...)
    if not ok then error(a, 2) end
    return a, b
  end
end

for _, row in ipairs(endpoints.rows) do
  method(row.name, invoker(row))
  for _, alias in ipairs(row.aliases or {}) do
    -- the same row, but errors name the function the caller used
    method(alias, invoker(setmetatable({ name = alias }, { __index = row })))
  end
end

method("wait_job", jobs.wait_job)
method("rotate_team_tokens", jobs.rotate_team_tokens)

-- client:request(method, path, opts)
method("request", function(self, m, path, opts)
  local why = client.check_self(self, "request")
  if why then return nil, why end
  local url, body, ropts, row = client.build_request(self, m, path, opts)
  if not url then return nil, argmsg("request", body, ropts) end
  local value, err, extra = client.perform(self, row, row.method, url, body, ropts)
  if err then return true, nil, err end
  return true, value, extra
end)

-- Batches: the general form, and the two named ones.
local function batch_of(fname, name)
  return function(self, list, opts)
    local items, conc = client.prepare_batch(self, fname, name, list, opts, endpoints.by_name)
    if not items then return nil, conc end
    return client.run_batch(self, items, conc, opts)
  end
end
method("batch", batch_of("batch"))
method("regen_tokens", batch_of("regen_tokens", "regen_token"))
method("create_jobs", batch_of("create_jobs", "create_job"))

-- ------------------------------------------------------------------------
-- Reference of the methods made above (for LDoc; the code is the loop).

--- A client, made by `mm.new`: its own URL, token, options and connections.
-- Every method is also a module-level function on the default client
-- (`mm.get_job(id)` is `default:get_job(id)`).
-- @type Client

--- Lists jobs: `GET /api/v4/jobs`.
-- @function Client:get_jobs
-- @tparam[opt] table query `page` (from 0), `per_page` (0-200, default 60), `job_type`, `status`
-- @return a list of jobs (newest first; empty when there are none)
-- @usage local failed = assert(c:get_jobs{ job_type = "message_export", status = "error" })

--- Lists the jobs of one type: `GET /api/v4/jobs/type/{job_type}`.
-- @function Client:get_jobs_by_type
-- @tparam string job_type e.g. `"active_users"`
-- @tparam[opt] table query `page`, `per_page`
-- @return a list of jobs

--- Gets a job: `GET /api/v4/jobs/{id}`.
-- @function Client:get_job
-- @tparam string id the job id (26 characters)
-- @return the job, or nil and an error

--- Creates a job: `POST /api/v4/jobs`.
-- @function Client:create_job
-- @tparam table job `type` (non-empty string) and optional `data` (string
-- keys; string, number or boolean values, sent as strings)
-- @return the job (`id, type, priority, create_at, start_at,
-- last_activity_at, status, progress, data`), or nil and an error
-- @usage local job, err = c:create_job{ type = "active_users", data = { thing = "stuff" } }

--- Cancels a job: `POST /api/v4/jobs/{id}/cancel` (a pending job becomes
-- `canceled`, a running one `cancel_requested`).
-- @function Client:cancel_job
-- @tparam string id the job id
-- @return true, or nil and an error

--- Sets a job's status: `PATCH /api/v4/jobs/{id}/status`.
-- @function Client:update_job_status
-- @tparam string id the job id
-- @tparam string status one of the seven job statuses
-- @tparam[opt] table options `force` (boolean): skip the transition check
-- @return true, or nil and an error

--- Downloads a job's result (a compliance export's zip):
-- `GET /api/v4/jobs/{id}/download`. With a file name, the body is
-- streamed to a temporary file beside it and renamed over it when whole;
-- on any failure the file is untouched and nothing is left behind. A file
-- that exists must be a regular file (a device, FIFO or directory is
-- refused with kind `"file"`); a symbolic link is replaced, never written
-- through.
-- @function Client:download_job
-- @tparam string id the job id
-- @tparam[opt] string file where to write it; without it, the body is
-- returned as a string (within `max_body`)
-- @tparam[opt] table options `on_progress(bytes, total)`: called about every
-- 0.25 s while the body comes (`total` nil when unknown) and once at the
-- end; an error it raises ends the download and is raised again
-- @return bytes written (or the body) and the content type, or nil and an error
-- @usage local n = assert(c:download_job(id, "/var/backups/export.zip"))

--- Creates a slash command: `POST /api/v4/commands`.
-- @function Client:create_command
-- @tparam table command `team_id`, `trigger`, `method` (`"P"` or `"G"`),
-- `url` required; `display_name`, `description`, `username`, `icon_url`,
-- `auto_complete`, `auto_complete_desc`, `auto_complete_hint`, `creator_id`, `token` optional.
-- Checked as the server would: `trigger` 1-128 ASCII letters, digits,
-- `_ . / -`, not starting with `/` (the server lower-cases it); `url`
-- `http://` or `https://` with a host, at most 1024 bytes;
-- `display_name` at most 64 bytes, `description` 128; text valid UTF-8
-- without NUL bytes. Any other field (`id`, the times, `plugin_id`) is
-- an error.
-- @return the command (with its token)

--- Lists a team's commands: `GET /api/v4/commands`.
-- @function Client:list_commands
-- @tparam table query `team_id` (required), `custom_only` (boolean; only
-- then are tokens included)
-- @return a list of commands

--- Lists the commands of a team's autocomplete:
-- `GET /api/v4/teams/{team_id}/commands/autocomplete`.
-- @function Client:list_autocomplete_commands
-- @tparam string team_id
-- @return a list of commands

--- Autocomplete suggestions for what a user typed:
-- `GET /api/v4/teams/{team_id}/commands/autocomplete_suggestions`.
-- @function Client:list_command_autocomplete_suggestions
-- @tparam string team_id
-- @tparam table query `user_input` (required), `channel_id`, `root_id`
-- @return a list of suggestions (`Complete, Suggestion, Hint, Description, IconData`)

--- Gets a command: `GET /api/v4/commands/{id}` (404 also when the caller
-- may not see it).
-- @function Client:get_command_by_id
-- @tparam string id
-- @return the command (with its token)

--- Replaces a command: `PUT /api/v4/commands/{id}`, `id` being
-- `command.id`. The server replaces the whole object, so every field it
-- takes from the body must be given: start from `get_command_by_id`.
-- @function Client:update_command
-- @tparam table command the whole command
-- @return the updated command
-- @usage
-- local cmd = assert(c:get_command_by_id(id))
-- cmd.url = "https://hooks.example.com/new"
-- assert(c:update_command(cmd))

--- Deletes a command: `DELETE /api/v4/commands/{id}`.
-- @function Client:delete_command
-- @tparam string id
-- @return true

--- Moves a command to another team: `PUT /api/v4/commands/{id}/move`.
-- @function Client:move_command
-- @tparam string id
-- @tparam string team_id the destination
-- @return true

--- Regenerates a slash command's token:
-- `PUT /api/v4/commands/{id}/regen_token`. Also `regen_command_token`.
-- @function Client:regen_token
-- @tparam string id the command id (26 characters, lower-case letters and digits)
-- @return the new token, or nil and an error
-- @usage local token, err = c:regen_token("4xp9fdt7pbgium38k8k9kdzdwe")

--- Runs a slash command: `POST /api/v4/commands/execute`.
-- @function Client:execute_command
-- @tparam table args `channel_id`, `command` (`"/trigger text"`) required;
-- `team_id`, `root_id`, `parent_id` optional
-- @return the command response (`response_type`, `text`, ...)

--- Polls a job until it reaches a terminal status (`success`, `error`,
-- `canceled`, `warning`) or the timeout passes.
-- @function Client:wait_job
-- @tparam string id the job id
-- @tparam[opt] table opts `timeout` (seconds for the whole wait, default
-- 60), `interval` (seconds between polls, default 1), `on_poll(job)`
-- (called with each job seen)
-- @return the final job; or nil and an error: kind `"job"` when the job
-- ended in `error` (the job is `err.job`), kind `"wait_timeout"` when it
-- did not finish in time (the last job seen is `err.job`), or the error
-- of a poll
-- @usage local done, err = c:wait_job(job.id, { timeout = 120, interval = 2 })

--- Gives every custom command of a team a new token (or those listed).
-- @function Client:rotate_team_tokens
-- @tparam string team_id
-- @tparam[opt] table opts `commands` (a list of ids to rotate; default
-- all the team's custom commands this user may manage), `concurrency`,
-- `on_result(command, token, err)` (called as each answer arrives: record
-- the token at once), `on_hold(seconds)` (as for `batch`)
-- @return rotated, failed: lists of `{id, trigger, token}` and `{id,
-- trigger, error}`, in the order the answers came; listed ids that are
-- not among the team's commands this user may manage come first in
-- `failed`, in the order given, with kind `"not_found"` and no request
-- sent for them. Or nil and an error when the commands cannot be listed.

--- Any other `/api/v4` route, with the same errors, retries, scrubbing,
-- timeouts and debug log.
-- @function Client:request
-- @tparam string method GET, HEAD, POST, PUT, PATCH or DELETE
-- @tparam string path relative to `/api/v4` (or starting with it)
-- @tparam[opt] table opts `query` (table; values strings, numbers,
-- booleans or lists of them), `body` (table sent as JSON, or a string),
-- `idempotent` (default true for GET, HEAD, PUT, DELETE), `file` (write
-- a 2xx body to this file, as `download_job` does)
-- @return the decoded JSON (`mm.null` for `null`), or the body when it
-- is not JSON; or nil and an error
-- @usage local me = assert(c:request("GET", "/users/me"))

--- Runs many calls concurrently, paced as one client.
-- Each call is `{ name, arg1, arg2, ... }` with the name of a method made
-- from the endpoint table. All are checked before any is sent.
-- @function Client:batch
-- @tparam table calls the list of calls
-- @tparam[opt] table opts `concurrency` (default 16, at most 1024),
-- `on_result(i, value, err)` and `on_progress(done, total)`, called as
-- each call ends, and `on_hold(seconds)`, called when the client holds
-- the next request back for the rate limiter; all between transfers
-- @return a list with, for each call in input order, its value or an
-- error object (`mm.is_error`), and the number of errors
-- @usage
-- local results, failed = c:batch({ { "regen_token", id1 }, { "cancel_job", id2 } })

--- `batch` of `regen_token` over a list of command ids.
-- @function Client:regen_tokens

--- `batch` of `create_job` over a list of job tables.
-- @function Client:create_jobs

--- Seconds this client is holding requests back for the server's rate
-- limiter now (0 when it is not), e.g. for a status line.
-- @function Client:holding

--- Closes the client (see `mm.client`).
-- @function Client:close

return mm
