-- download_job against the stub: to a file (streamed from C to a
-- temporary file beside it, renamed when whole) or into memory (within
-- max_body). Every failure leaves the target as it was and no temporary
-- file behind. Export files of any size come from POST /__stub/jobs with
-- `file`; their content is checked with support.export_pattern.
local stub = require "support.stubctl"
local clients = require "support.client"
local check = require "support.check"
local files = require "support.files"
local pattern = require "support.export_pattern"

local raises, http_error = check.raises, check.http_error
local fx, dir

local SIZE = 3 * 1024 * 1024 + 5 -- several of the stub's 1 MiB chunks, the last one short
local OLD = "the previous export, which must survive\n"

-- A downloadable export job of `size` bytes (the stub's pattern unless
-- `content` says "zeros"); its id.
local function export(size, content)
  return stub.store_job({ file = { size = size or SIZE, content = content } }).job.id
end

local timed = clients.timed

-- The target keeps its old content and nothing else is in its directory.
local function assert_untouched(target)
  assert.equal(OLD, files.read(target))
  assert.same({ (target:match("[^/]+$")) }, files.list(dir))
end

before_each(function()
  stub.reset()
  fx = clients.fixtures()
  stub.config{ download_export_results = true }
  dir = files.tmpdir()
end)

after_each(function() files.remove(dir) end)

describe("download_job to a file", function()
  it("writes the whole file: its byte count and content type; nothing else in the directory", function()
    local id = export()
    local target = dir .. "/export.zip"
    local n, ctype = clients.new():download_job(id, target)
    assert.equal(SIZE, n)
    assert.equal("application/zip", ctype)
    assert.equal(SIZE, files.size(target))
    assert.is_true(pattern.check(files.read(target), 0))
    assert.same({ "export.zip" }, files.list(dir))
  end)

  it("replaces an existing file whole; the SHA-256 is the stub's", function()
    local out = stub.store_job({ file = { size = SIZE, sha256 = true } })
    local target = dir .. "/export.zip"
    files.write(target, OLD)
    assert.equal(SIZE, clients.new():download_job(out.job.id, target))
    assert.equal(out.file.sha256, files.sha256(target))
    assert.same({ "export.zip" }, files.list(dir))
  end)

  it("an empty export is an empty file", function()
    local target = dir .. "/empty.zip"
    files.write(target, OLD)
    assert.equal(0, clients.new():download_job(export(0), target))
    assert.equal("", files.read(target))
    assert.same({ "empty.zip" }, files.list(dir))
  end)

  it("a relative path is relative to the working directory", function()
    local name = "mm-download-spec-" .. tostring(os.time()) .. ".zip"
    finally(function() os.remove(name) end)
    assert.equal(SIZE, clients.new():download_job(export(), name))
    assert.equal(SIZE, files.size(name))
  end)

  it("a file name as long as the file system allows", function()
    local target = dir .. "/" .. ("x"):rep(251) .. ".zip"
    assert.equal(SIZE, clients.new():download_job(export(), target))
    assert.equal(SIZE, files.size(target))
    assert.same({ ("x"):rep(251) .. ".zip" }, files.list(dir))
  end)

  it("retries a download whose connection dropped, with nothing left from the first attempt", function()
    local target = dir .. "/export.zip"
    local n = clients.fault("flaky_close:1", "sysadmin", { retries = 1 }):download_job(export(), target)
    assert.equal(SIZE, n)
    assert.is_true(pattern.check(files.read(target), 0))
    assert.same({ "export.zip" }, files.list(dir))
  end)
end)

describe("download_job failures leave the target untouched and nothing behind", function()
  local target
  before_each(function()
    target = dir .. "/export.zip"
    files.write(target, OLD)
  end)

  it("a connection closed mid-body (retried, each attempt cleaned up)", function()
    local c = clients.fault("close_mid_body", "sysadmin", { retries = 2, max_retry_wait = 0 })
    local n, err = c:download_job(export(), target)
    assert.is_nil(n)
    assert.equal("network", err.kind)
    assert.equal(3, err.attempts)
    assert_untouched(target)
  end)

  it("a body shorter than its Content-Length", function()
    local n, err = clients.fault("truncated"):download_job(export(), target)
    assert.is_nil(n)
    assert.equal("network", err.kind)
    assert.equal(18, err.curl_code) -- CURLE_PARTIAL_FILE
    assert_untouched(target)
  end)

  it("a body slower than the timeout", function()
    local took, n, err = timed(function()
      return clients.fault("slow_body:5", "sysadmin", { timeout = 0.5 }):download_job(export(), target)
    end)
    assert.is_nil(n)
    assert.equal("timeout", err.kind)
    assert.is_true(took < 4, "took " .. took)
    assert_untouched(target)
  end)

  it("the server's error answers: 501 downloads off, 403, 404, 400; errors, not files", function()
    local id = export()
    local _, err = clients.new("basic"):download_job(id, target)
    http_error(err, 403, "api.context.permissions.app_error")
    _, err = clients.new():download_job(fx.jobs.J8.id, target)
    http_error(err, 404, "api.job.unable_to_download_job")
    _, err = clients.new():download_job(fx.jobs.J10.id, target)
    http_error(err, 400, "api.job.unable_to_download_job.incorrect_job_type")
    stub.config{ download_export_results = false }
    _, err = clients.new():download_job(id, target)
    http_error(err, 501, "app.job.download_export_results_not_enabled")
    assert_untouched(target)
  end)

  it("a target that is a directory", function()
    local sub = dir .. "/sub"
    assert(files.run("mkdir " .. files.quote(sub)))
    local n, err = clients.new():download_job(export(), sub)
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.matches("cannot write .*/sub: Is a directory", err.message)
    assert.equal("directory", files.kind(sub))
    assert.same({ "export.zip", "sub" }, files.list(dir))
    assert.same({}, files.list(sub))
    -- a name ending in "/" names a directory too
    n, err = clients.new():download_job(export(), sub .. "/")
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.same({}, files.list(sub))
  end)

  it("a target that is a FIFO, a device or another special file is never replaced", function()
    local fifo = dir .. "/fifo"
    assert(files.run("mkfifo " .. files.quote(fifo)))
    local n, err = clients.new():download_job(export(), fifo)
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.matches("cannot write .*/fifo: not a regular file", err.message)
    assert.equal("fifo", files.kind(fifo))
    assert.same({ "export.zip", "fifo" }, files.list(dir))
  end)

  it("a symbolic link is replaced by the file; what it pointed to is never written", function()
    local link = dir .. "/link.zip"
    assert(files.run("ln -s export.zip " .. files.quote(link)))
    assert.equal(SIZE, clients.new():download_job(export(), link))
    assert.equal("file", files.kind(link))
    assert.equal(SIZE, files.size(link))
    assert.equal(OLD, files.read(target))
    assert.same({ "export.zip", "link.zip" }, files.list(dir))
  end)

  it("a directory that does not exist", function()
    local n, err = clients.new():download_job(export(), dir .. "/no/such/export.zip")
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.matches("No such file or directory", err.message)
    assert_untouched(target)
  end)

  it("a directory that is not writable (a read-only file system as root)", function()
    local ro
    if files.is_root() then
      ro = files.tmpfs(64, true)
      if not ro then return pending("cannot mount a read-only tmpfs") end
      finally(function() files.unmount(ro) end)
    else
      ro = dir .. "/ro"
      assert(files.run("mkdir " .. files.quote(ro) .. " && chmod 555 " .. files.quote(ro)))
    end
    local n, err = clients.new():download_job(export(), ro .. "/export.zip")
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.matches("cannot write .*/export%.zip: ", err.message)
    assert.same({}, files.list(ro))
  end)

  it("a full disk (ENOSPC on a 64 KiB tmpfs)", function()
    local small = files.tmpfs(64)
    if not small then return pending("mounting a tmpfs needs root") end
    finally(function() files.unmount(small) end)
    local full = small .. "/export.zip"
    files.write(full, OLD)
    local n, err = clients.new():download_job(export(1024 * 1024), full)
    assert.is_nil(n)
    assert.equal("file", err.kind)
    assert.matches("No space left on device", err.message)
    assert.equal(OLD, files.read(full))
    assert.same({ "export.zip" }, files.list(small))
  end)

  it("an error in on_progress stops the download and propagates", function()
    local c = clients.fault("slow_body:1")
    local ok, msg = pcall(c.download_job, c, export(), target, {
      on_progress = function() error("stop here") end,
    })
    assert.is_false(ok)
    assert.matches("stop here", msg)
    assert_untouched(target)
    -- the client stays usable
    assert.equal(SIZE, clients.new():download_job(export(), dir .. "/second.zip"))
  end)
end)

describe("download_job closed from its own on_progress", function()
  it("ends as kind 'aborted', the target untouched, nothing behind", function()
    local target = dir .. "/export.zip"
    files.write(target, OLD)
    local c = clients.fault("slow_body:1")
    local n, err = c:download_job(export(), target, { on_progress = function() c:close() end })
    assert.is_nil(n)
    assert.equal("aborted", err.kind)
    assert.equal("the client was closed before the answer came", err.message)
    assert.equal("GET", err.method)
    assert.equal(OLD, files.read(target))
    assert.same({ "export.zip" }, files.list(dir))
    assert.equal("mm.client (closed)", tostring(c))
  end)
end)

describe("download_job into memory", function()
  it("returns the body and the content type within max_body", function()
    local body, ctype = clients.new("sysadmin", { max_body = SIZE }):download_job(export())
    assert.equal(SIZE, #body)
    assert.equal("application/zip", ctype)
    assert.is_true(pattern.check(body, 0))
  end)

  it("over max_body: too_large at once, refused by its Content-Length before any byte of the body", function()
    -- slow_body: the headers now, the body after 5 s; a refusal that waited
    -- for the body would take that long
    local took, body, err = timed(function()
      return clients.fault("slow_body:5", "sysadmin", { max_body = SIZE - 1 }):download_job(export())
    end)
    assert.is_nil(body)
    assert.equal("too_large", err.kind)
    assert.equal(63, err.curl_code) -- CURLE_FILESIZE_EXCEEDED: the announced length, not the bytes
    assert.equal("response larger than the limit (max_body " .. (SIZE - 1) .. " bytes)", err.message)
    assert.is_true(took < 2, "took " .. took)
    -- a file has no such limit
    local n = clients.new("sysadmin", { max_body = 1024 }):download_job(export(), dir .. "/export.zip")
    assert.equal(SIZE, n)
  end)
end)

describe("download_job progress", function()
  it("on_progress gets (bytes, total) while the body comes and once at the end", function()
    local calls = {}
    local target = dir .. "/export.zip"
    local n = clients.fault("slow_body:1"):download_job(export(), target, {
      on_progress = function(bytes, total) calls[#calls + 1] = { bytes, total } end,
    })
    assert.equal(SIZE, n)
    assert.is_true(#calls >= 2, #calls .. " calls")
    for i, c in ipairs(calls) do
      assert.is_true(c[1] >= 0 and c[1] <= SIZE)
      assert.equal(SIZE, c[2])
      if i > 1 then assert.is_true(c[1] >= calls[i - 1][1]) end
    end
    assert.same({ SIZE, SIZE }, calls[#calls])
    assert.equal(SIZE, files.size(target))
  end)

  it("into memory too; not called for an error answer", function()
    local calls = 0
    local body = clients.new():download_job(export(), nil, { on_progress = function() calls = calls + 1 end })
    assert.equal(SIZE, #body)
    assert.is_true(calls >= 1)
    calls = 0
    local _, err = clients.new():download_job(fx.jobs.J8.id, nil, { on_progress = function() calls = calls + 1 end })
    http_error(err, 404, "api.job.unable_to_download_job")
    assert.equal(0, calls)
  end)
end)

describe("downloads in a batch", function()
  it("several files at once, with failures in place; each whole or untouched", function()
    local a, b = export(), export(SIZE + 4096)
    local untouched = dir .. "/j8.zip"
    files.write(untouched, OLD)
    local results, failed = clients.new():batch({
      { "download_job", a, dir .. "/a.zip" },
      { "download_job", b, dir .. "/b.zip" },
      { "download_job", fx.jobs.J8.id, untouched },
      { "download_job", a },
      { "download_job", b, dir },
      { "download_job", a, dir .. "/a.zip" },
    }, { concurrency = 4 })
    assert.equal(2, failed)
    assert.equal(SIZE, results[1])
    assert.equal(SIZE + 4096, results[2])
    http_error(results[3], 404, "api.job.unable_to_download_job")
    assert.equal(SIZE, #results[4])
    assert.equal("file", results[5].kind)
    assert.equal(SIZE, results[6])
    assert.is_true(pattern.check(files.read(dir .. "/a.zip"), 0))
    assert.is_true(pattern.check(files.read(dir .. "/b.zip"), 0))
    assert.equal(SIZE + 4096, files.size(dir .. "/b.zip"))
    assert.equal(OLD, files.read(untouched))
    assert.same({ "a.zip", "b.zip", "j8.zip" }, files.list(dir))
  end)

  it("a client closed from a batch callback removes the partial files", function()
    local c = clients.fault("slow_body:1")
    local big = export(1024 ^ 3, "zeros")
    local results = c:batch({
      { "get_jobs", { per_page = 1 } },
      { "download_job", big, dir .. "/big.zip" },
    }, { concurrency = 2, on_result = function(i) if i == 1 then c:close() end end })
    assert.is_table(results[1])
    assert.equal("aborted", results[2].kind)
    assert.same({}, files.list(dir))
  end)
end)

describe("download_job memory", function()
  local function status(field)
    for line in io.lines("/proc/self/status") do
      local v = line:match("^" .. field .. ":%s*(%d+)")
      if v then return tonumber(v) end
    end
  end

  it("streams a 64 MiB export in constant memory", function()
    local f = io.open("/proc/self/clear_refs", "w")
    if not f or not f:write("5") then return pending("cannot reset the peak RSS (/proc/self/clear_refs)") end
    f:close()
    local id = export(64 * 1024 * 1024, "zeros")
    local base = status("VmRSS")
    local n = clients.new():download_job(id, dir .. "/big.zip")
    assert.equal(64 * 1024 * 1024, n)
    local grew = status("VmHWM") - base
    assert.is_true(grew < 16 * 1024, "peak RSS grew by " .. grew .. " KiB")
  end)
end)

describe("download_job arguments", function()
  it("are checked before anything is sent or written", function()
    local c = clients.new()
    raises("bad argument #2 to 'download_job' %(file name expected, got number%)", c.download_job, c,
           fx.jobs.J6.id, 5)
    raises("bad argument #1 to 'download_job' %(id must be 26 characters, got 7%)", c.download_job, c,
           "../J6id", dir .. "/x.zip")
    assert.same({}, stub.requests())
    assert.same({}, files.list(dir))
  end)
end)
