--- Files and directories for the download specs: temporary directories,
-- reading and listing, checksums, and file systems that fail on purpose
-- (full, read-only). Shell commands run without LD_PRELOAD (make
-- test-asan preloads the sanitizer runtime for Lua only).
local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.quote = q

-- Runs a shell command; true when it exits 0 (Lua 5.1 and 5.2+ alike).
local function run(cmd)
  local ok, _, code = os.execute("env -u LD_PRELOAD " .. cmd)
  return ok == true or ok == 0 or code == 0
end
M.run = run

local function output(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD " .. cmd))
  local out = p:read("*a")
  p:close()
  return out
end

--- A new empty directory (removed by `M.remove`).
function M.tmpdir()
  local dir = output("mktemp -d"):match("^(%S+)")
  assert(dir, "mktemp -d failed")
  return dir
end

--- Removes a directory and everything under it.
function M.remove(path) run("rm -rf " .. q(path)) end

--- The whole content of a file, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, content)
  local f = assert(io.open(path, "wb"))
  assert(f:write(content))
  assert(f:close())
end

--- The size of a file (without reading it), or nil.
function M.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- The names in a directory, dot files included, sorted.
function M.list(dir)
  local names = {}
  for name in output("ls -A " .. q(dir)):gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

--- The kind of what is at path: "file", "directory", "fifo", other
-- words of stat(1), or nil when there is nothing.
function M.kind(path)
  local out = output("stat -c %F " .. q(path) .. " 2>/dev/null")
  if out == "" then return nil end
  out = out:gsub("%s+$", "")
  if out == "regular file" or out == "regular empty file" then return "file" end
  if out == "fifo" then return "fifo" end
  return out
end

--- The SHA-256 of a file, in hex.
function M.sha256(path)
  return output("sha256sum " .. q(path)):match("^(%x+)")
end

function M.is_root() return output("id -u"):match("^0%s") ~= nil end

--- Mounts a tmpfs of `kib` KiB on a new directory (options `ro` for a
-- read-only one). Returns the directory, or nil when mounting is not
-- allowed (not root, or no mount namespace rights). `M.unmount` undoes it.
function M.tmpfs(kib, ro)
  local dir = M.tmpdir()
  if not run(("mount -t tmpfs -o size=%dk%s tmpfs %s 2>/dev/null"):format(kib, ro and ",ro" or "", q(dir))) then
    M.remove(dir)
    return nil
  end
  return dir
end

function M.unmount(dir)
  run("umount " .. q(dir))
  M.remove(dir)
end

return M
