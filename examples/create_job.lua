-- Start a server job and watch it finish.
--
-- From the top of a checkout, after `make` (for Lua 5.4; for another Lua,
-- its interpreter and its build: make LUA_VERSION=5.3 builds build/lua5.3):
--   export LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/lua5.4/?.so;;'
--   MM_URL=https://chat.example.com MM_TOKEN=... lua5.4 examples/create_job.lua [TYPE]
-- With mm installed (make install, luarocks), the second line alone.
local function main()
  local mm = require "mm"
  local job_type = arg[1] or "active_users"
  local job, err = mm.create_job{ type = job_type, data = { requested_by = "examples/create_job.lua" } }
  if not job then
    io.stderr:write("could not create the job: ", tostring(err), "\n")
    os.exit(1)
  end
  print(("created job %s (%s), status %s"):format(job.id, job.type, job.status))

  local done
  done, err = mm.wait_job(job.id, { timeout = 30, interval = 0.2 })
  if not done then
    io.stderr:write("job did not succeed: ", tostring(err), "\n")
    os.exit(1)
  end
  print(("job %s finished: %s, progress %d%%"):format(done.id, done.status, done.progress))
end

-- mm raises on mistakes (no MM_URL, a malformed argument), as require does
-- without the module: said in one line, without Lua's position or traceback.
local ok, err = pcall(main)
if not ok then
  err = tostring(err):gsub("^[^%s:]+:%d+: ", ""):gsub("\n%s*", " ")
  io.stderr:write("create_job.lua: ", err, "\n")
  os.exit(1)
end
