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
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    mm = "lua/mm/init.lua",
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
