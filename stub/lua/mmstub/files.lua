-- The stub's file store: `files/` in the nginx prefix, holding the legacy
-- export results `files/export/<job_id>.zip` of message_export jobs
-- (api-contract-families.md §2.4). The download route answers with an
-- internal redirect to location /__files/export/ (locations.conf), so nginx
-- streams the file itself (sendfile, Range, If-Modified-Since), whatever
-- its size.
--
-- Two kinds of content:
--  * fixture files: a small zip archive (one stored entry) built from the
--    fixture's {name, content}, rewritten on every reset;
--  * generated files (POST /__stub/jobs with "file"): `size` bytes written
--    in 1 MiB chunks, never held in memory, either the offset pattern
--    (M.pattern) or zeros (a sparse file: nothing is written).
local ffi = require "ffi"
local bit = require "bit"

local M = {}

ffi.cdef [[
struct mmstub_timeval { long tv_sec; long tv_usec; };
int utimes(const char *filename, const struct mmstub_timeval times[2]);
int chmod(const char *pathname, unsigned int mode);
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
const EVP_MD *EVP_sha256(void);
int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, void *impl);
int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt);
int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);
]]

local CHUNK = 1024 * 1024
-- a generating worker lets other requests run every 64 MiB (ngx.sleep(0)
-- warns without OpenResty's delayed-events patch)
local YIELD_EVERY = 64 * CHUNK
M.RECORD = 4096

--- Directory of the file store, with a trailing slash.
function M.root() return ngx.config.prefix() .. "files/" end

--- Path (relative to the file store) and absolute path of a job's legacy
-- export file.
function M.export_path(id)
  local rel = "export/" .. id .. ".zip"
  return rel, M.root() .. rel
end

--- Size of a readable file, or nil.
function M.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

--- Set a file's modification time (seconds): the Last-Modified nginx
-- sends, which must be the job's last_activity_at, as Go's ServeContent
-- is given it.
function M.set_mtime(path, sec)
  local tv = ffi.new("struct mmstub_timeval[2]")
  tv[0].tv_sec, tv[1].tv_sec = sec, sec
  return ffi.C.utimes(path, tv) == 0
end

--- Go's answer to a Range that does not overlap the file (http.ServeContent,
-- errNoOverlap): 416, "Content-Range: bytes */<size>" and http.Error's
-- plain-text body, instead of nginx's HTML page (locations.conf error_page).
function M.range_not_satisfiable()
  local rel = ngx.var.uri:match("^/__files/(.*)$")
  local size = rel and M.size(M.root() .. rel) or 0
  local body = "invalid range: failed to overlap\n"
  ngx.status = 416
  ngx.header["Content-Type"] = "text/plain; charset=utf-8"
  ngx.header["X-Content-Type-Options"] = "nosniff"
  ngx.header["Content-Range"] = "bytes */" .. size
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- ---------------------------------------------------------------- sha256

-- OpenSSL's libcrypto: nginx is linked to it (TLS), so its symbols are
-- found in the process; otherwise load the library.
local crypto
local function libcrypto()
  if not crypto then
    crypto = pcall(function() return ffi.C.EVP_sha256 end) and ffi.C or ffi.load("libcrypto.so.3")
  end
  return crypto
end

--- An incremental SHA-256: returns update(s) and final() -> hex string.
local function sha256()
  local C = libcrypto()
  local ctx = ffi.gc(C.EVP_MD_CTX_new(), C.EVP_MD_CTX_free)
  assert(C.EVP_DigestInit_ex(ctx, C.EVP_sha256(), nil) == 1)
  local function update(s) assert(C.EVP_DigestUpdate(ctx, s, #s) == 1) end
  local function final()
    local md, n = ffi.new("unsigned char[32]"), ffi.new("unsigned int[1]")
    assert(C.EVP_DigestFinal_ex(ctx, md, n) == 1)
    return (ffi.string(md, n[0]):gsub(".", function(c) return string.format("%02x", c:byte()) end))
  end
  return update, final
end

function M.sha256_hex(s)
  local update, final = sha256()
  update(s)
  return final()
end

-- ---------------------------------------------------------------- zip (fixture files)

local crc_table
local function crc32(s)
  if not crc_table then
    crc_table = {}
    for i = 0, 255 do
      local c = i
      for _ = 1, 8 do
        c = bit.band(c, 1) == 1 and bit.bxor(bit.rshift(c, 1), 0xEDB88320) or bit.rshift(c, 1)
      end
      crc_table[i] = c
    end
  end
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  return bit.bxor(c, 0xFFFFFFFF)
end

local function le(n, bytes)
  local out = {}
  for i = 1, bytes do
    out[i] = string.char(bit.band(n, 0xFF))
    n = bit.rshift(n, 8)
  end
  return table.concat(out)
end

--- A zip archive holding one stored (uncompressed) entry, deterministic:
-- fixed DOS time (1980-01-01 00:00), no extra fields.
function M.zip(name, content)
  local crc, size = crc32(content), #content
  -- version needed 2.0, no flags, method 0 (stored), time 0, date 1980-01-01
  local common = le(20, 2) .. le(0, 2) .. le(0, 2) .. le(0, 2) .. le(0x21, 2)
                 .. le(crc, 4) .. le(size, 4) .. le(size, 4) .. le(#name, 2) .. le(0, 2)
  local lfh = "PK\3\4" .. common .. name
  local cdh = "PK\1\2" .. le(20, 2) .. common .. le(0, 2) .. le(0, 2) .. le(0, 2) .. le(0, 4)
              .. le(0, 4) .. name
  local eocd = "PK\5\6" .. le(0, 2) .. le(0, 2) .. le(1, 2) .. le(1, 2) .. le(#cdh, 4)
               .. le(#lfh + size, 4) .. le(0, 2)
  return lfh .. content .. cdh .. eocd
end

--- Write a whole file (small ones: fixture zips). Returns true or nil, err.
function M.write(path, bytes)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(bytes)
  f:close()
  if not ok then return nil, werr end
  ffi.C.chmod(path, 420) -- 0644: the worker's umask may be 0
  return true
end

-- ---------------------------------------------------------------- generated files

local FILL = ("."):rep(M.RECORD - 17) .. "\n"

--- The offset pattern, bytes [offset, offset + len): the file is a
-- sequence of 4096-byte records; the record at byte offset o (a multiple
-- of 4096) is the 16 lower-case hex digits of o, 4079 '.' and '\n'. Any
-- lost, repeated or misplaced range shows.
function M.pattern(offset, len)
  local first = offset - offset % M.RECORD
  local parts = {}
  for o = first, offset + len - 1, M.RECORD do
    parts[#parts + 1] = string.format("%016x", o) .. FILL
  end
  local s = table.concat(parts)
  return s:sub(offset - first + 1, offset - first + len)
end

--- Create `path` with `size` bytes of `content` ("pattern" or "zeros"),
-- written to a temporary name and renamed, so a download never sees a
-- half-written file. The worker yields between chunks (other requests go
-- on meanwhile). Returns sha256 hex (if `want_sha`) or true; nil, err on
-- failure (nothing left behind).
function M.generate(path, size, content, want_sha)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local update, final
  if want_sha then update, final = sha256() end
  local ok, werr = true, nil
  if content == "zeros" then
    -- sparse: seek to the end and write nothing but the last byte
    if size > 0 then
      ok, werr = f:seek("set", size - 1)
      if ok then ok, werr = f:write("\0") end
    end
    if ok and update then
      local zeros = ("\0"):rep(CHUNK)
      for pos = 0, size - 1, CHUNK do
        update(size - pos >= CHUNK and zeros or zeros:sub(1, size - pos))
        if pos % YIELD_EVERY == 0 then ngx.sleep(0.001) end
      end
    end
  else
    for pos = 0, size - 1, CHUNK do
      local chunk = M.pattern(pos, math.min(CHUNK, size - pos))
      ok, werr = f:write(chunk)
      if not ok then break end
      if update then update(chunk) end
      if pos % YIELD_EVERY == 0 then ngx.sleep(0.001) end
    end
  end
  local closed, cerr = f:close()
  if ok and not closed then ok, werr = nil, cerr end
  if ok then ok, werr = os.rename(tmp, path) end
  if ok then ffi.C.chmod(path, 420) end -- 0644: the worker's umask may be 0
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  return final and final() or true
end

--- Stream bytes [0, limit) of a file to the client in chunks (the fault
-- modes, which must cut or delay a download nginx would otherwise send
-- whole). Returns true, or nil and an error.
function M.stream(path, limit)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local left = limit
  while left > 0 do
    local data = f:read(math.min(CHUNK, left))
    if not data then break end
    left = left - #data
    local ok, perr = ngx.print(data)
    if ok then ok, perr = ngx.flush(true) end
    if not ok then f:close(); return nil, perr end
  end
  f:close()
  return true
end

return M
