-- Soak: resident memory over 100,000 calls on one client, and over
-- clients made and dropped in a loop, against the stub server.
-- Run: make soak (bin/mm-stub run -- LUA spec/soak.lua [BUILD]), from the
-- checkout. BUILD: the core built for LUA (default: make's build/lua5.x or
-- build/luajit for the Lua running it). Bounded: it stops after the counts
-- below (SOAK_CALLS, SOAK_CLIENTS override them).
local build = arg[1] or "build/" .. (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath
local mm = require "mm"
local stub = require "support.stubctl"

local CALLS = tonumber(os.getenv("SOAK_CALLS")) or 100000
local CLIENTS = tonumber(os.getenv("SOAK_CLIENTS")) or 10000

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s*(%d+) kB")
    if kib then return tonumber(kib) end
  end
end

local function settle()
  collectgarbage()
  collectgarbage()
end

stub.reset()
local fx = stub.fixtures()
local token, id = fx.users.sysadmin.token, fx.commands.C_admin.id

-- 1. one client, many calls
local c = mm.new{ url = stub.url, token = token, retries = 0 }
for _ = 1, 1000 do assert(c:regen_token(id)) end -- warm up buffers and caches
settle()
local before = rss_kib()
local t0 = os.clock()
for i = 1, CALLS do
  local t, err = c:regen_token(id)
  if not t then error(("call %d failed: %s"):format(i, tostring(err))) end
end
local cpu = os.clock() - t0
settle()
local after = rss_kib()
c:close()
print(("%d calls on one client:   RSS %d KiB -> %d KiB (%+d KiB), %.1f s CPU"):format(
  CALLS, before, after, after - before, cpu))

-- 2. clients made, used once and dropped
for _ = 1, 200 do mm.new{ url = stub.url, token = token }:close() end
settle()
before = rss_kib()
for i = 1, CLIENTS do
  local k = mm.new{ url = stub.url, token = token, retries = 0 }
  assert(k:regen_token(id))
  if i % 2 == 0 then k:close() end -- the others are left to the garbage collector
end
settle()
after = rss_kib()
print(("%d clients made and dropped: RSS %d KiB -> %d KiB (%+d KiB)"):format(CLIENTS, before, after, after - before))
