-- bench/openresty_handlers.lua: the request handlers bench/openresty
-- measures, in one nginx worker. Each answers GET /<way>/<command id> with
-- {"token":"..."} after a PUT .../regen_token to the canned target:
--
--   mm      require("mm.ngx").regen_token(id): the module under test
--   proxy   nginx's own proxy: ngx.location.capture of an internal
--           proxy_pass location whose upstream keeps connections alive
--   direct  the straightforward way: per request, an ngx.semaphore slot and
--           one ngx.run_worker_thread running one mm call (direct_call)
--
-- The module is loaded in the thread pool's Lua VMs too (for direct_call),
-- where there is no ngx: nothing at load time uses it.
local cjson = require "cjson.safe"
local mmngx = require "mm.ngx"

-- luacheck: read globals ngx.run_worker_thread (lua-nginx-module 0.10.21+, newer than luacheck's ngx_lua std)

local M = {}

local function answer(token)
  ngx.print('{"token":"', token, '"}')
end

local function fail(status, text)
  ngx.status = status
  ngx.say(text)
end

function M.mm(id)
  local token, err = mmngx.regen_token(id)
  if not token then return fail(err.kind == "busy" and 503 or 502, tostring(err)) end
  answer(token)
end

function M.proxy(id)
  local res = ngx.location.capture("/upstream/" .. id, { method = ngx.HTTP_PUT })
  local t = res.status == 200 and cjson.decode(res.body)
  if type(t) ~= "table" or type(t.token) ~= "string" then return fail(502, "upstream status " .. res.status) end
  answer(t.token)
end

-- In the thread pool: one call on this VM's client.
local client
function M.direct_call(url, token, id)
  client = client or require("mm").new{ url = url, token = token, retries = 0 }
  local value, err = client:regen_token(id)
  if not value then return nil, tostring(err) end
  return value
end

local slots -- as many as the pool has threads
function M.direct(id)
  slots = slots or require("ngx.semaphore").new(tonumber(os.getenv("BENCH_NGX_THREADS")))
  local ok, werr = slots:wait(10)
  if not ok then return fail(503, "no slot: " .. werr) end
  local done, token, err = ngx.run_worker_thread("mm", "openresty_handlers", "direct_call",
    os.getenv("BENCH_TARGET"), os.getenv("BENCH_TOKEN"), id)
  slots:post(1)
  if not done then return fail(503, token) end
  if not token then return fail(502, err) end
  answer(token)
end

--- init_worker: the default client of mm.ngx.
function M.init_worker()
  local threads = tonumber(os.getenv("BENCH_NGX_MM_THREADS") or "")
  if threads then mmngx.set_pool("mm", { threads = threads }) end
  mmngx.configure{ url = os.getenv("BENCH_TARGET"), token = os.getenv("BENCH_TOKEN"), retries = 0 }
end

return M
