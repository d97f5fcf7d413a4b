-- luacheck configuration: `make lint` runs luacheck over every Lua file.
std = "max"
max_line_length = 120
files["spec"] = { std = "+busted" }
files["stub"] = { std = "ngx_lua" }
files["examples/openresty"] = { std = "ngx_lua" }
files["lua/mm/ngx.lua"] = { std = "ngx_lua" }
files["spec/support/ngx_probe.lua"] = { std = "ngx_lua" }
files["bench/openresty_handlers.lua"] = { std = "ngx_lua" }
exclude_files = { "build/**", "doc/**" }
