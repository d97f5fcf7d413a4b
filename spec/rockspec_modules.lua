-- The rockspec's modules are exactly lua/mm/*.lua plus the C core, so a new
-- module cannot be left out of the rock (make install takes the glob).
-- Usage: lua spec/rockspec_modules.lua ROCKSPEC   (from the checkout; make lint)
local rockspec = assert(arg[1], "usage: spec/rockspec_modules.lua ROCKSPEC")
local env = {}
local chunk = assert(loadfile(rockspec, "t", env)) -- 5.2+; setfenv below for 5.1
if setfenv then setfenv(chunk, env) end -- luacheck: compat
chunk()

local want = { ["mm.core"] = "csrc/mm_core.c" }
local p = assert(io.popen("ls lua/mm/*.lua"))
for file in p:lines() do
  local name = file:match("^lua/mm/(.+)%.lua$")
  want[name == "init" and "mm" or "mm." .. name] = file
end
p:close()

local problems = {}
for name, file in pairs(want) do
  local got = env.build.modules[name]
  local src = type(got) == "table" and got.sources[1] or got
  if src ~= file then
    problems[#problems + 1] = ("%s: module %s should be %q, is %s"):format(rockspec, name, file, tostring(src))
  end
end
for name in pairs(env.build.modules) do
  if not want[name] then problems[#problems + 1] = ("%s: module %s has no file in lua/mm"):format(rockspec, name) end
end
table.sort(problems)
if #problems > 0 then
  io.stderr:write(table.concat(problems, "\n"), "\n")
  os.exit(1)
end
