--- The content of the export files the stub generates (POST /__stub/jobs
-- with "file": {"content":"pattern"}), so a client can check a download
-- of any size piece by piece without holding it: 4096-byte records; the
-- record at byte offset o is the 16 lower-case hex digits of o, 4079 '.'
-- and '\n'; the file is cut at its size. Lua 5.1-5.4 and LuaJIT.
-- An independent copy of the stub's generator (stub/lua/mmstub/files.lua)
-- on purpose: a check built on the stub's own code could not catch its bugs.
--
-- @usage
-- local pattern = require "support.export_pattern"
-- assert(pattern.check(chunk, offset_of_chunk))
local M = {}

M.RECORD = 4096
local FILL = ("."):rep(M.RECORD - 17) .. "\n"

--- The pattern's bytes [offset, offset + len).
function M.bytes(offset, len)
  local first = offset - offset % M.RECORD
  local parts = {}
  for o = first, offset + len - 1, M.RECORD do
    parts[#parts + 1] = string.format("%016x", o) .. FILL
  end
  return table.concat(parts):sub(offset - first + 1, offset - first + len)
end

--- Does `s` equal the pattern at `offset`? Returns true, or false and the
-- offset of the first record that differs.
function M.check(s, offset)
  offset = offset or 0
  local step = 1024 * 1024
  for pos = 0, #s - 1, step do
    local got = s:sub(pos + 1, pos + step)
    if got ~= M.bytes(offset + pos, #got) then
      for r = 0, #got - 1, M.RECORD do
        local part = got:sub(r + 1, r + M.RECORD)
        if part ~= M.bytes(offset + pos + r, #part) then return false, offset + pos + r end
      end
    end
  end
  return true
end

return M
