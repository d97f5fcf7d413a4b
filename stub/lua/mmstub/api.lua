-- The emulated Mattermost API: the behaviour every route shares (contract
-- §1: rate limiting, routing, headers, authentication, AppError bodies).
-- The routes themselves live in one module per API family (ROUTE_MODULES),
-- each returning { routes = { {method, pattern, handler}, ... } }; a
-- handler gets (ctx, session, captures...) (the whole path when the
-- pattern has no captures) and returns a response.
--
-- M.process(path) computes a response {status, headers, body} without
-- sending it, so fault modes (faults.lua) can delay, cut or rewrite it;
-- M.send(resp) writes it. A download's body is a file instead:
-- resp.file = {uri, path, size, mtime} (jobs.lua).
local state = require "mmstub.state"
local json = require "mmstub.json"
local files = require "mmstub.files"
local gcra = require "mmstub.gcra"

local M = {}

-- Go's http.MaxBytesReader(MaximumPayloadSizeBytes + bytes.MinRead) (§1.3).
local BODY_LIMIT = 300000 + 512
M.BODY_LIMIT = BODY_LIMIT
local MAX_URL_LENGTH = 2048
-- Request bodies are kept in the request log (GET /__stub/requests) up to
-- this size, so the 64 MiB mm_log holds about a thousand of the largest.
local RECORD_LIMIT = 64 * 1024

-- English messages (§1.4 table); route modules add theirs with
-- M.add_messages.
local MESSAGES = {
  ["api.context.invalid_body_param.app_error"] = "Invalid or missing {{.Name}} in request body.",
  ["api.context.invalid_url_param.app_error"] = "Invalid or missing {{.Name}} parameter in request URL.",
  ["api.context.permissions.app_error"] = "You do not have the appropriate permissions.",
  ["api.context.session_expired.app_error"] = "Invalid or expired session, please login again.",
  ["api.context.token_provided.app_error"] = "Session is not OAuth but token was provided in the query string.",
  ["api.context.request_body_too_large.app_error"] = "Unable to process request. Request body too large.",
  ["api.context.404.app_error"] = "Sorry, we could not find the page.",
  -- message text not in the contract *(unverified)*
  ["basic_security_check.url.too_long_error"] = "URL is too long",
}

-- ---------------------------------------------------------------- responses

function M.add_messages(t)
  for id, text in pairs(t) do MESSAGES[id] = text end
end

local function response(status, body, headers)
  return { status = status, body = body or "", headers = headers or {} }
end
M.response = response

local function set_header(resp, name, value)
  for _, h in ipairs(resp.headers) do
    if h[1]:lower() == name:lower() then h[2] = value; return end
  end
  resp.headers[#resp.headers + 1] = { name, value }
end
M.set_header = set_header

--- Write a response. Headers go out sorted by name, as Go's Header.Write
-- does; nginx adds its own Server/Date/Connection first.
function M.send(resp)
  table.sort(resp.headers, function(a, b) return a[1] < b[1] end)
  ngx.status = resp.status
  for _, h in ipairs(resp.headers) do
    local v = h[2]
    -- nginx drops empty header values; Go sends "Permissions-Policy: " (§1.3).
    -- A single space is what a parser trims to the same empty value.
    if v == "" then v = " " end
    local cur = ngx.header[h[1]]
    if cur then -- a repeated header (Set-Cookie): keep all values
      ngx.header[h[1]] = type(cur) == "table" and { unpack(cur), v } or { cur, v }
    else
      ngx.header[h[1]] = v
    end
  end
  if resp.file then
    -- a file (a job download): nginx serves it from an internal location
    -- (locations.conf), keeping the headers set here
    return ngx.exec(resp.file.uri)
  end
  ngx.header["Content-Length"] = #resp.body
  ngx.print(resp.body)
end

--- Length of a response's body: the file's size for a download.
function M.body_length(resp) return resp.file and resp.file.size or #resp.body end

--- Write the first `limit` bytes of the body (default: all), streaming a
-- file body; the request is not finished (the fault modes).
function M.print_body(resp, limit)
  limit = limit or M.body_length(resp)
  if resp.file then return files.stream(resp.file.path, limit) end
  if limit > 0 then ngx.print(resp.body:sub(1, limit)) end
  return true
end

-- Context of one API request: the request id, config and the response
-- headers Handler.ServeHTTP sets before the handler runs (§1.3).
local function new_context(method, cfg, rl_headers)
  local ctx = { request_id = state.new_id(), cfg = cfg, method = method, headers = {} }
  local h = ctx.headers
  h[#h + 1] = { "X-Request-Id", ctx.request_id }
  h[#h + 1] = { "X-Version-Id", state.version_id(cfg) }
  h[#h + 1] = { "Content-Type", "application/json" }
  if method == "GET" then h[#h + 1] = { "Expires", "0" } end
  h[#h + 1] = { "Permissions-Policy", "" }
  h[#h + 1] = { "Referrer-Policy", "no-referrer" }
  h[#h + 1] = { "X-Content-Type-Options", "nosniff" }
  for _, rh in ipairs(rl_headers) do h[#h + 1] = rh end
  return ctx
end

local function copy_headers(list)
  local out = {}
  for n, h in ipairs(list) do out[n] = { h[1], h[2] } end
  return out
end

--- A success answer of a handler: `body` as given, with the context's headers.
function M.reply(ctx, status, body)
  return response(status, body, copy_headers(ctx.headers))
end

--- ReturnStatusOK: {"status":"OK"}, upper-case, no trailing newline
-- (api-contract-families.md §1.3).
function M.status_ok(ctx) return M.reply(ctx, 200, '{"status":"OK"}') end

--- handleContextError: AppError JSON, no trailing newline; detailed_error
-- wiped unless EnableDeveloper (§1.4). `params` fills the message's
-- {{.Key}} placeholders: a string is {{.Name}}, a table maps keys.
local function app_error(ctx, status, id, detail, params)
  if type(params) ~= "table" then params = { Name = params or "" } end
  local msg = assert(MESSAGES[id], id):gsub("{{%.([%w_]+)}}", function(k) return params[k] end)
  if not ctx.cfg.developer then detail = "" end
  return response(status, json.app_error(id, msg, detail, ctx.request_id, status), copy_headers(ctx.headers))
end

M.app_error = app_error

local function permission_error(ctx, session, perm)
  return app_error(ctx, 403, "api.context.permissions.app_error",
                   "userId=" .. session.user_id .. ", permission=" .. perm)
end
M.permission_error = permission_error

-- ---------------------------------------------------------------- rate limiting

-- RateLimitHandler (§1.3, case 44): throttled's GCRA (gcra.lua) keyed by
-- remote address (VaryByRemoteAddr), the bucket's theoretical arrival time
-- in the shared dict, in nanoseconds since the last reset (which empties
-- every bucket). Returns the X-Ratelimit-* headers and whether the request
-- is limited.
local function rate_limit(rl)
  local dict = state.dict()
  local key = "rl:" .. ngx.var.remote_addr
  ngx.update_time()
  local now = math.floor((ngx.now() - dict:get("reset_at")) * 1e9 + 0.5)
  local limited, tat, limit, remaining, reset, retry_after = gcra.check(rl.per_sec, rl.burst, dict:get(key), now)
  -- kept a little past its use, as memstore's TTL would: an expired bucket is a full one
  if tat then dict:set(key, tat, math.ceil((tat - now) / 1e9) + 1) end
  local h = {
    { "X-Ratelimit-Limit", tostring(limit) },
    { "X-Ratelimit-Remaining", tostring(remaining) },
    { "X-Ratelimit-Reset", tostring(reset) },
  }
  if limited then h[#h + 1] = { "Retry-After", tostring(retry_after) } end
  return h, limited
end

--- http.Error: a plain-text answer, not an AppError; its two headers are
-- added to `headers` (default none).
function M.plain_error(status, body, headers)
  headers = headers or {}
  headers[#headers + 1] = { "Content-Type", "text/plain; charset=utf-8" }
  headers[#headers + 1] = { "X-Content-Type-Options", "nosniff" }
  return response(status, body, headers)
end

--- The real server's plain-text 429 (http.Error), not an AppError (§1.3).
function M.too_many(headers) return M.plain_error(429, "limit exceeded\n", headers) end

-- ---------------------------------------------------------------- authentication

local function first(v) if type(v) == "table" then return v[1] end return v end

-- r.Cookie(name): first cookie of that name, Go strips one pair of quotes.
local function cookie(name)
  local raw = ngx.req.get_headers()["cookie"]
  if type(raw) ~= "table" then raw = { raw } end
  for _, line in ipairs(raw) do
    for part in line:gmatch("[^;]+") do
      local k, v = part:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
      if k == name then return (v:match('^"(.*)"$') or v) end
    end
  end
end

--- ParseAuthTokenFromRequest (§1.2): token and where it came from.
local function parse_token()
  local c = cookie("MMAUTHTOKEN")
  if c then return c, "cookie" end
  local h = first(ngx.req.get_headers()["authorization"]) or ""
  if #h > 6 and h:sub(1, 6):upper() == "BEARER" then return h:sub(8), "header" end
  if #h > 5 and h:sub(1, 5):lower() == "token" then return h:sub(7), "header" end
  local q = first(ngx.req.get_uri_args(100)["access_token"])
  if type(q) == "string" and q ~= "" then return q, "query" end
  return "", nil
end

--- Handler.ServeHTTP session checks + SessionRequired (§1.2). Returns the
-- session, or nil and the 401 response.
local function authenticate(ctx)
  local token, where = parse_token()
  local session
  if token ~= "" then
    session = state.session(token)
    if not session then
      local resp = app_error(ctx, 401, "api.context.session_expired.app_error", "token=" .. token)
      set_header(resp, "Set-Cookie", "MMAUTHTOKEN=; Path=/; Max-Age=0; HttpOnly")
      return nil, resp
    end
    if where == "query" and not session.is_oauth then
      return nil, app_error(ctx, 401, "api.context.token_provided.app_error", "")
    end
    if where == "cookie" and ctx.method ~= "GET" then
      local hdrs = ngx.req.get_headers()
      local ok = first(hdrs["x-csrf-token"]) == session.csrf
      if not ok and first(hdrs["x-requested-with"]) == "XMLHttpRequest" then
        ok = not ctx.cfg.strict_csrf
      end
      if not ok then
        return nil, app_error(ctx, 401, "api.context.session_expired.app_error",
                              "token=" .. token .. " Appears to be a CSRF attempt")
      end
    end
  end
  if not session then
    return nil, app_error(ctx, 401, "api.context.session_expired.app_error", "UserRequired")
  end
  if session.is_pat and not ctx.cfg.enable_user_access_tokens then
    return nil, app_error(ctx, 401, "api.context.session_expired.app_error", "UserAccessToken")
  end
  return session
end

-- ---------------------------------------------------------------- request body

--- The raw request body ("" if none), from memory or nginx's temp file.
function M.body()
  if ngx.ctx.body_refused then return "" end -- nginx refused it unread (serve_too_large)
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if data then return data end
  local file = ngx.req.get_body_file()
  if not file then return "" end
  local f = assert(io.open(file, "rb"))
  data = f:read("*a")
  f:close()
  return data
end

--- The request body decoded as json.NewDecoder(r.Body).Decode does behind
-- http.MaxBytesReader (§1.3): the first JSON value as a tagged tree, or nil
-- and the error response: 413 when the value needs more than BODY_LIMIT
-- bytes, else 400 invalid_body_param naming `name`.
function M.decode_body(ctx, name)
  local too_large = "api.context.request_body_too_large.app_error"
  if ngx.ctx.body_refused then return nil, app_error(ctx, 413, too_large, "http: request body too large") end
  local body = M.body()
  local node, err = json.decode_first(body:sub(1, BODY_LIMIT))
  if node then return node end
  if err == "eof" and #body > BODY_LIMIT then
    return nil, app_error(ctx, 413, too_large, "http: request body too large")
  end
  return nil, app_error(ctx, 400, "api.context.invalid_body_param.app_error", "", name)
end

--- strconv.Atoi: an optional sign and decimal digits, within int64; the
-- number, or nil.
function M.atoi(s)
  local sign, digits = s:match("^([+-]?)(%d+)$")
  if not digits then return nil end
  digits = digits:gsub("^0+(%d)", "%1")
  local limit = sign == "-" and "9223372036854775808" or "9223372036854775807"
  if #digits > 19 or (#digits == 19 and digits > limit) then return nil end
  local n = tonumber(digits)
  return sign == "-" and -n or n
end

local TRUE = { ["1"] = true, t = true, T = true, TRUE = true, ["true"] = true, True = true }

--- strconv.ParseBool as the handlers use it: true for its true values,
-- false for anything else (its error counts as false).
function M.parse_bool(s) return TRUE[s] == true end

--- r.URL.Query().Get(name): the first value, "" when absent (also for a
-- bare `?name`, which ngx gives as `true`). `args` is a table of
-- ngx.req.get_uri_args (default: of its first 100 arguments).
function M.query(name, args)
  local v = (args or ngx.req.get_uri_args(100))[name]
  if type(v) == "table" then v = v[1] end
  return type(v) == "string" and v or ""
end

-- ---------------------------------------------------------------- routing

--- The catch-all Handle404 (§1.1): written directly, not through
-- handleContextError, so detailed_error is kept even outside developer mode
-- and there is no request id (body or header) *(fork only / inferred)*.
local function not_found(path, rl_headers)
  local detail = "There doesn't appear to be an api call for the url='" .. path
                 .. "'.  Typo? are you missing a team_id or user_id as part of the url?"
  local headers = copy_headers(rl_headers)
  headers[#headers + 1] = { "Content-Type", "application/json" }
  return response(404, json.app_error("api.context.404.app_error", MESSAGES["api.context.404.app_error"],
                                      detail, nil, 404), headers)
end

local ROUTE_MODULES = { "mmstub.jobs", "mmstub.commands" }
local routes -- loaded on first use: the route modules require this one

local function route_table()
  if not routes then
    routes = {}
    for _, name in ipairs(ROUTE_MODULES) do
      for _, r in ipairs(require(name).routes) do routes[#routes + 1] = r end
    end
  end
  return routes
end

--- Emulate one API request for `path` (decoded, without the query string);
-- `shown` is the path as the server saw it, for the 404 text (defaults to path).
function M.process(path, shown)
  local cfg = state.config()
  local method = ngx.req.get_method()
  -- RateLimitHandler wraps the whole router: before routing and auth (§1.3).
  local rl_headers = {}
  if cfg.rate_limit then
    local limited
    rl_headers, limited = rate_limit(cfg.rate_limit)
    if limited then return M.too_many(rl_headers) end
  end
  local handler, caps
  for _, r in ipairs(route_table()) do
    -- gorilla/mux: a method mismatch falls through to the catch-all (§1.1)
    if r[1] == method then
      caps = { path:match(r[2]) }
      if caps[1] then handler = r[3]; break end
    end
  end
  if not handler then return not_found(shown or path, rl_headers) end
  local ctx = new_context(method, cfg, rl_headers)
  if #ngx.var.request_uri > MAX_URL_LENGTH then
    return app_error(ctx, 414, "basic_security_check.url.too_long_error", "")
  end
  local session, err = authenticate(ctx)
  if not session then return err end
  return handler(ctx, session, unpack(caps))
end

--- Record the request for GET /__stub/requests: method, URI as sent,
-- headers (M.request_headers) and the raw body.
function M.record()
  local body = M.body()
  state.log_push("requests", {
    method = ngx.req.get_method(), uri = ngx.var.request_uri, headers = M.request_headers(),
    -- 2.0 for HTTP/2 (TLS listeners, ALPN h2), 1.1 / 1.0 otherwise; the
    -- connection number as in GET /__stub/connections (streams share it)
    http_version = ngx.req.http_version(), connection = tonumber(ngx.var.connection),
    -- keep the log small: bodies over RECORD_LIMIT (64 KiB) are cut;
    -- body_length is the length received
    body = body:sub(1, RECORD_LIMIT),
    body_length = ngx.ctx.body_refused and tonumber(ngx.var.http_content_length) or #body,
  })
end

--- The request's headers as {{name, value}, ...} in wire order.
-- HTTP/2 has no raw header block (ngx.req.raw_header refuses it): there the
-- headers come from ngx.req.get_headers, names lowercase as h2 sends them,
-- sorted by name (HPACK order is not observable), no pseudo-headers.
function M.request_headers()
  local headers = {}
  if ngx.req.http_version() == 2 then
    local all, names = ngx.req.get_headers(0, true), {}
    for name in pairs(all) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local value = all[name]
      if type(value) ~= "table" then value = { value } end
      for _, v in ipairs(value) do headers[#headers + 1] = { name, v } end
    end
  else
    for line in (ngx.req.raw_header(true) or ""):gmatch("[^\r\n]+") do
      local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
      if name then headers[#headers + 1] = { name, value } end
    end
  end
  return headers
end

--- content_by_lua entry for location /api/v4/.
function M.serve()
  M.record()
  if ngx.var.server_addr == "127.0.0.2" then
    -- the redirect target of the `redirect` fault: did credentials follow?
    local auth = first(ngx.req.get_headers()["authorization"])
    state.log_push("redirects", { method = ngx.req.get_method(), uri = ngx.var.request_uri,
                                  authorization = auth or false, has_authorization = auth ~= nil })
  end
  -- A server whose SiteURL has a sub-path serves the API under it; the stub
  -- offers /mattermost/api/v4/ as such a sub-path.
  local uri = ngx.var.uri
  M.send(M.process((uri:gsub("^/mattermost/api/v4/", "/api/v4/")), uri))
end

--- The named location nginx sends a request to when its body is over
-- client_max_body_size: the request is emulated as usual, with a body
-- that the handler finds too large (only POST /jobs reads one).
function M.serve_too_large()
  ngx.ctx.body_refused = true
  ngx.status = 200 -- error_page set 413; the emulated answer sets its own
  M.serve()
end

return M
