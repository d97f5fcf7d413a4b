-- The stub's file store: `files/` in the nginx prefix, holding the legacy
-- export results `files/export/<job_id>.zip` of message_export jobs
-- (api-contract-families.md §2.4). Fixture files are small zip archives
-- (one stored entry) built from the fixture's {name, content}, rewritten
-- on every reset.
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

return M
