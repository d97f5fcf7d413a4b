rockspec_format = "3.0"
package = "lua-mattermost"
version = "scm-1"
source = {
  url = "git+https://example.invalid/lua-mattermost.git",
}
description = {
  summary = "Mattermost REST API v4 client: a C core over libcurl, a Lua API",
  detailed = [[
    mm creates and watches server jobs and rotates slash-command tokens, with
    keep-alive connections, concurrent batches over curl_multi, retries,
    TLS verification by default, and errors you can print.
  ]],
  license = "MIT",
  labels = { "mattermost", "http", "curl" },
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
-- Only the library is looked for: luarocks searches <prefix>/include for
-- headers, but Debian keeps curl.h under /usr/include/<multiarch>, which
-- the compiler searches by itself. CURL_DIR= or CURL_INCDIR= point at
-- another libcurl.
external_dependencies = {
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  -- every lua/mm/*.lua (make lint checks that none is missing)
  modules = {
    mm = "lua/mm/init.lua",
    ["mm.args"] = "lua/mm/args.lua",
    ["mm.client"] = "lua/mm/client.lua",
    ["mm.codec"] = "lua/mm/codec.lua",
    ["mm.endpoints"] = "lua/mm/endpoints.lua",
    ["mm.errors"] = "lua/mm/errors.lua",
    ["mm.jobs"] = "lua/mm/jobs.lua",
    ["mm.ngx"] = "lua/mm/ngx.lua",
    ["mm.pacer"] = "lua/mm/pacer.lua",
    ["mm.core"] = {
      sources = { "csrc/mm_core.c" },
      incdirs = { "csrc", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
      defines = { "_POSIX_C_SOURCE=200809L" },
    },
  },
  -- the stub server's files, into the rock's directory
  -- (<tree>/lib/luarocks/rocks-<ver>/lua-mattermost/scm-1/stub), where the
  -- installed <tree>/bin/mm-stub looks for them
  copy_directories = { "stub" },
  install = {
    bin = {
      mm = "bin/mm",
      ["mm-stub"] = "bin/mm-stub",
    },
  },
}
