-- Start a server job and watch it finish.
-- Usage: MM_URL=... MM_TOKEN=... lua5.4 examples/create_job.lua [TYPE]
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
