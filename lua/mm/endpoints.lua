--- The endpoint table: one row per operation of the API.
--
-- A row says what the operation sends and what it returns:
--
-- * `name`: the Lua name (the snake_case of the OpenAPI operationId);
--   `aliases`: other names for the same function;
-- * `method`, `path`: the HTTP method and the path under `/api/v4`, with
--   `{name}` for each path parameter;
-- * `args`: the positional arguments, each `{name, kind, at = ...}`:
--   `at = "path"` fills `{name}` in the path; `at = "query"` is a table
--   checked against a schema of `mm.args` whose fields become the query
--   string; `at = "body"` is either a table checked against a schema (the
--   JSON body, or merged into it) or, with `field = "x"`, one value sent
--   as body field `x`; `at = "output"` is the file a download is written
--   to; `at = "local"` is a table of options of the call itself (never
--   sent). `optional = true` where it may be nil;
-- * `result`: the shape of the answer (see `SHAPES`);
-- * `idempotent`: whether a retry after a lost answer is safe; by default
--   true for GET, HEAD, PUT and DELETE, false for POST and PATCH;
-- * `cli`: the words of the `mm` command that runs it.
--
-- The client's methods, the module-level functions, the names `batch`
-- accepts and the CLI's verbs are all made from these rows: adding an
-- endpoint is adding a row (and its stub route and specs).
-- @module mm.endpoints
local core = require "mm.core"
local args = require "mm.args"
local codec = require "mm.codec"
local errors = require "mm.errors"

local M = {}

local ROWS = {
  -- Jobs (api-contract.md 2; api-contract-families.md 2)
  { name = "get_jobs", method = "GET", path = "/jobs", result = "jobs", cli = "jobs list",
    args = { { "query", "jobs_query", at = "query", optional = true } } },
  { name = "get_jobs_by_type", method = "GET", path = "/jobs/type/{job_type}", result = "jobs",
    cli = "jobs list-type",
    args = { { "job_type", "job_type", at = "path" }, { "query", "page_query", at = "query", optional = true } } },
  { name = "get_job", method = "GET", path = "/jobs/{job_id}", result = "job", cli = "jobs get",
    args = { { "job_id", "id", at = "path" } } },
  { name = "create_job", method = "POST", path = "/jobs", result = "job", cli = "jobs create",
    args = { { "job", "job", at = "body" } } },
  { name = "cancel_job", method = "POST", path = "/jobs/{job_id}/cancel", result = "status_ok",
    cli = "jobs cancel", args = { { "job_id", "id", at = "path" } } },
  { name = "update_job_status", method = "PATCH", path = "/jobs/{job_id}/status", result = "status_ok",
    cli = "jobs status",
    args = { { "job_id", "id", at = "path" }, { "status", "job_status", at = "body", field = "status" },
             { "options", "status_options", at = "body", optional = true } } },
  { name = "download_job", method = "GET", path = "/jobs/{job_id}/download", result = "download",
    cli = "jobs download",
    args = { { "job_id", "id", at = "path" }, { "file", "file", at = "output", optional = true },
             { "options", "download_options", at = "local", optional = true } } },

  -- Commands (api-contract.md 3; api-contract-families.md 3)
  { name = "create_command", method = "POST", path = "/commands", result = "command", cli = "commands create",
    args = { { "command", "new_command", at = "body" } } },
  { name = "list_commands", method = "GET", path = "/commands", result = "commands", cli = "commands list",
    args = { { "query", "commands_query", at = "query" } } },
  { name = "list_autocomplete_commands", method = "GET", path = "/teams/{team_id}/commands/autocomplete",
    result = "commands", cli = "commands autocomplete", args = { { "team_id", "id", at = "path" } } },
  { name = "list_command_autocomplete_suggestions", method = "GET",
    path = "/teams/{team_id}/commands/autocomplete_suggestions", result = "suggestions",
    cli = "commands suggest",
    args = { { "team_id", "id", at = "path" }, { "query", "suggestions_query", at = "query" } } },
  { name = "get_command_by_id", method = "GET", path = "/commands/{command_id}", result = "command",
    cli = "commands get", args = { { "command_id", "id", at = "path" } } },
  -- PUT replaces the whole command; the path's id is the body's
  { name = "update_command", method = "PUT", path = "/commands/{id}", result = "command",
    cli = "commands update", args = { { "command", "command", at = "body" } } },
  { name = "delete_command", method = "DELETE", path = "/commands/{command_id}", result = "status_ok",
    cli = "commands delete", args = { { "command_id", "id", at = "path" } } },
  { name = "move_command", method = "PUT", path = "/commands/{command_id}/move", result = "status_ok",
    cli = "commands move",
    args = { { "command_id", "id", at = "path" }, { "team_id", "id", at = "body", field = "team_id" } } },
  -- A retry after a lost answer regenerates again: the token returned is
  -- the one in force, so PUT's idempotence holds for the caller.
  { name = "regen_token", aliases = { "regen_command_token" }, method = "PUT",
    path = "/commands/{command_id}/regen_token", result = "token", cli = "commands regen-token",
    args = { { "command_id", "id", at = "path" } } },
  { name = "execute_command", method = "POST", path = "/commands/execute", result = "command_response",
    cli = "commands execute", args = { { "args", "command_args", at = "body" } } },
}

-- ------------------------------------------------------------------------
-- Result shapes: how a 2xx answer becomes the value a call returns.
-- Each reader takes the core's response table and returns value, nil,
-- extra (a second value for the caller) or nil, err.

local plain, decode, is_json = codec.plain, codec.decode, codec.is_json

local function json_body(resp)
  local ctype = resp.content_type
  -- the usual type compared here: is_json's own first test, without its call
  if ctype ~= "application/json" and not is_json(ctype) then
    return nil, errors.decode(resp, "expected application/json, got " .. tostring(ctype))
  end
  local v, why = decode(resp.body)
  if v == nil then return nil, errors.decode(resp, "invalid JSON: " .. tostring(why)) end
  return v
end

local function object(resp, key, what)
  local v, err = json_body(resp)
  if err then return nil, err end
  if type(v) ~= "table" or v[1] ~= nil or (key and type(v[key]) ~= "string") then
    return nil, errors.decode(resp, "response is not " .. what)
  end
  return v
end

-- A list; the server answers an empty page of GET /jobs with `null`
-- (contract families 2.2 step 6): that is an empty list too.
local function list(resp, what)
  local v, err = json_body(resp)
  if err then return nil, err end
  if v == codec.null then return {} end
  if type(v) ~= "table" or (next(v) ~= nil and v[1] == nil) then
    return nil, errors.decode(resp, "response is not " .. what)
  end
  for i = 1, #v do
    if type(v[i]) ~= "table" then return nil, errors.decode(resp, "response is not " .. what) end
  end
  return plain(v)
end

M.SHAPES = {
  job = function(resp)
    local v, err = object(resp, "id", "a job")
    return plain(v), err
  end,
  jobs = function(resp) return list(resp, "a list of jobs") end,
  command = function(resp)
    local v, err = object(resp, "id", "a command")
    return plain(v), err
  end,
  commands = function(resp) return list(resp, "a list of commands") end,
  suggestions = function(resp) return list(resp, "a list of suggestions") end,
  command_response = function(resp)
    local v, err = object(resp, nil, "a command response")
    return plain(v), err
  end,
  -- {"status":"OK"} (the OpenAPI document says "ok")
  status_ok = function(resp)
    local v, err = object(resp, "status", "a status")
    if err then return nil, err end
    if v.status:upper() ~= "OK" then return nil, errors.decode(resp, "status is not OK: " .. v.status) end
    return true
  end,
  -- object(resp, "token", ...) without its call: a decoded JSON array
  -- has no "token" key, so the string check is the whole check
  token = function(resp)
    local v, err = json_body(resp)
    if err then return nil, err end
    if type(v) ~= "table" or type(v.token) ~= "string" then
      return nil, errors.decode(resp, "response is not a token")
    end
    return v.token
  end,
  -- A download: the byte count when written to a file, else the body;
  -- and the content type.
  download = function(resp)
    if resp.file then return resp.bytes, nil, resp.content_type end
    return resp.body, nil, resp.content_type
  end,
  -- client:request: JSON decoded when it is JSON (a top-level null as
  -- mm.null), the body as it is otherwise.
  any = function(resp)
    if resp.file then return resp.bytes, nil, resp.content_type end
    if not is_json(resp.content_type) or resp.body == "" then return resp.body, nil, resp.content_type end
    local v, err = json_body(resp)
    if err then return nil, err end
    if v == codec.null then return v, nil, resp.content_type end
    return plain(v), nil, resp.content_type
  end,
}

-- ------------------------------------------------------------------------
-- Compiling rows: each row gets `build(root, ...)`, which checks the
-- arguments and returns the URL, the body (or nil) and the core's request
-- options (or nil); on a bad argument it returns nil, its position and
-- what is wrong.

local check, schemas, fields, object_json = args.types, args.schemas, args.fields, args.object

local function build_general(row)
  local pieces = {}  -- the path: literal strings and {name} placeholders
  local at = 1
  for lit, name, e in row.path:gmatch("()%{([%w_]+)%}()") do
    pieces[#pieces + 1] = row.path:sub(at, lit - 1)
    pieces[#pieces + 1] = { name }
    at = e
  end
  pieces[#pieces + 1] = row.path:sub(at)
  local spec = row.args
  return function(root, ...)
    local path_values, query, body_fields, body, ropts = {}, nil, nil, nil, nil
    for i, a in ipairs(spec) do
      local v = select(i, ...)
      if v == nil and a.optional then -- luacheck: ignore 542 (nothing to send)
      elseif a.at == "path" or a.at == "output" then
        local value, why = check[a[2]](v)
        if value == nil then return nil, i, why end
        if a.at == "path" then path_values[a[1]] = value else ropts = { output = value } end
      elseif a.at == "query" then
        local checked, why = fields(schemas[a[2]], v, "query table")
        if not checked then return nil, i, why end
        query = checked
      elseif a.at == "local" then
        local checked, why = fields(schemas[a[2]], v, "options table")
        if not checked then return nil, i, why end
        ropts = ropts or {}
        for _, f in ipairs(checked) do ropts[f[1]] = f[2] end
      elseif a.field then
        local value, why = check[a[2]](v)
        if value == nil then return nil, i, why end
        body_fields = body_fields or {}
        body_fields[#body_fields + 1] = { a.field, value, a[2] }
      elseif a[2] == "job" then
        local why
        body, why = args.job(v)
        if not body then return nil, i, why end
      else
        local checked, why = fields(schemas[a[2]], v, "table")
        if not checked then return nil, i, why end
        body_fields = body_fields or {}
        for _, f in ipairs(checked) do
          body_fields[#body_fields + 1] = f
          if path_values[f[1]] == nil then path_values[f[1]] = f[2] end
        end
      end
    end
    local url = { root }
    for _, p in ipairs(pieces) do
      if type(p) == "string" then url[#url + 1] = p else url[#url + 1] = path_values[p[1]] end
    end
    if query and #query > 0 then
      local pairs_list = {}
      for i, f in ipairs(query) do pairs_list[i] = { f[1], f[2] } end
      url[#url + 1] = "?" .. codec.query(pairs_list)
    end
    if body_fields then body = object_json(body_fields) end
    return table.concat(url), body, ropts
  end
end

-- The usual shape, one id in the path and nothing else, in one
-- concatenation: the single-call path is measured against a C floor.
local function build_one_id(row)
  local before, after = row.path:match("^(.-)%{[%w_]+%}(.*)$")
  -- args.types.id's own test without its call; it says what is wrong
  local is_lower_alnum, length = core.is_lower_alnum, args.ID_LENGTH
  return function(root, id)
    if not is_lower_alnum(id, length) then
      local _, why = check.id(id)
      return nil, 1, why
    end
    return root .. before .. id .. after
  end
end

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true }

local function compile(row)
  if row.idempotent == nil then row.idempotent = IDEMPOTENT[row.method] or false end
  row.read = M.SHAPES[row.result]
  local a = row.args
  if #a == 1 and a[1].at == "path" and a[1][2] == "id" then
    row.build = build_one_id(row)
  else
    row.build = build_general(row)
  end
  return row
end

--- The rows, in order, each compiled.
M.rows = {}
--- Rows by name (aliases included).
M.by_name = {}
for i, row in ipairs(ROWS) do
  M.rows[i] = compile(row)
  M.by_name[row.name] = row
  for _, alias in ipairs(row.aliases or {}) do M.by_name[alias] = row end
end

return M
