-- luacheck configuration: `make lint` runs luacheck over every Lua file.
std = "max"
max_line_length = 120
files["spec"] = { std = "+busted" }
-- the CLI runs on every Lua: only what all of them have (LuaJIT's jit guarded)
files["bin/mm"] = { std = "min", read_globals = { "jit" } }
files["stub"] = { std = "ngx_lua" }
files["examples/openresty"] = { std = "ngx_lua" }
files["lua/mm/ngx.lua"] = { std = "ngx_lua" }
files["spec/support/ngx_probe.lua"] = { std = "ngx_lua" }
files["bench/openresty_handlers.lua"] = { std = "ngx_lua" }
exclude_files = { "build/**", "doc/**" }
