-- bench/report.lua: turns bench/run's results into the printed table and
-- bench/RESULTS.md.
--
-- Usage: lua bench/report.lua RESULTS_TXT OUT_DIR RESULTS_MD
-- RESULTS_TXT holds key=value lines; OUT_DIR the callgrind_annotate
-- listings (callgrind.<name>.<n>.txt); bench/ANALYSIS.md, if present, is
-- appended to RESULTS_MD as the hand-written explanation of the misses.
local results_txt, out_dir, results_md = arg[1], arg[2], arg[3]
assert(results_txt and out_dir and results_md, "usage: report.lua RESULTS_TXT OUT_DIR RESULTS_MD")

local R = {}
for line in io.lines(results_txt) do
  local k, v = line:match("^([%w_]+)=(.*)$")
  if k then R[k] = v end
end

local function num(k)
  local v = tonumber(R[k])
  if not v then error("bench: no number for '" .. k .. "' in " .. results_txt) end
  return v
end

local function fmt_int(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return (neg and "-" or "") .. s
end

local function ratio(x) return ((x < 0.1) and "%.3fx" or "%.2fx"):format(x) end

---------------------------------------------------------------------------
-- Callgrind listings: self cost per object and per function.

local function object_group(obj)
  if obj == nil then return "other" end
  local base = obj:match("([^/]+)$")
  if base:find("^libcurl") then return "libcurl" end
  if base:find("^libc%.so") or base:find("^libm%.so") then return "libc (malloc, memcpy, ...)" end
  if base:find("cjson") then return "lua-cjson" end
  if base == "core.so" then return "mm.core (csrc/mm_core.c)" end
  if base:find("^lua5") or base:find("^liblua5") or base == "lua" then return "Lua VM (mm.lua runs here)" end
  if base:find("^ld%-linux") then return "dynamic loader" end
  return "other (" .. base .. ")"
end

-- { [group] = Ir }, { [function label] = Ir } from one listing.
local function parse_listing(path)
  local f = io.open(path)
  if not f then return nil end
  local rows, fn_obj = {}, {}
  for line in f:lines() do
    local n, rest = line:match("^%s*([%d,]+) %(%s*[%d.]+%%%)%s+(.+)$")
    if n and rest ~= "PROGRAM TOTALS" and not rest:find("^=>") then
      local name, obj = rest:match("^(.-) %[(.-)%]$")
      name = name or rest
      local fn = name:match(":([^:]+)$") or name
      fn = fn:gsub("'%d+$", "") -- callgrind's recursion suffix
      if obj then fn_obj[fn] = obj end
      rows[#rows + 1] = { fn = fn, obj = obj, n = tonumber((n:gsub(",", ""))) }
    end
  end
  f:close()
  local groups, fns = {}, {}
  for _, r in ipairs(rows) do
    local obj = r.obj or fn_obj[r.fn]
    local g = object_group(obj)
    groups[g] = (groups[g] or 0) + r.n
    local label = r.fn .. " (" .. (obj and obj:match("([^/]+)$") or "?") .. ")"
    fns[label] = (fns[label] or 0) + r.n
  end
  return groups, fns
end

-- Per call: (listing at 2n - listing at n) / n, per key.
local function per_call(name, n)
  local g1, f1 = parse_listing(("%s/callgrind.%s.%d.txt"):format(out_dir, name, n))
  local g2, f2 = parse_listing(("%s/callgrind.%s.%d.txt"):format(out_dir, name, 2 * n))
  if not g1 or not g2 then return nil end
  local function d(a, b)
    local t = {}
    for k, v in pairs(b) do t[k] = (v - (a[k] or 0)) / n end
    for k, v in pairs(a) do if b[k] == nil then t[k] = -v / n end end
    return t
  end
  return d(g1, g2), d(f1, f2)
end

---------------------------------------------------------------------------
-- Numbers

local seq_n = num("seq_n")
local seq = {
  { "C floor (libcurl easy handle, reused)", seq_n, num("seq_floor_s"), R.seq_floor_fail },
  { "mm `c:regen_token` (one client, retries=0)", seq_n, num("seq_mm_s"), R.seq_mm_fail },
  { "LuaSocket `socket.http` (connection per call)", num("seq_socket_n"), num("seq_socket_s"), R.seq_socket_fail },
  { "one `curl` process per call (bash loop)", num("seq_curl_n"), num("seq_curl_s"), R.seq_curl_fail },
}
local floor_rps = seq_n / num("seq_floor_s")
local mm_rps = seq_n / num("seq_mm_s")
-- The ratio is the median of the per-pair ratios: each mm run is followed
-- at once by a floor run, so a pair shares the machine's conditions (which
-- drift on a shared machine); medians taken apart can pair unlike runs.
local pair_ratios = {}
do
  local m, f = {}, {}
  for v in (R.seq_mm_runs or ""):gmatch("%S+") do m[#m + 1] = tonumber(v) end
  for v in (R.seq_floor_runs or ""):gmatch("%S+") do f[#f + 1] = tonumber(v) end
  for i = 1, math.min(#m, #f) do pair_ratios[i] = f[i] / m[i] end
end
local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  return s[(#s + 1) // 2]
end
local seq_ratio = #pair_ratios > 0 and median(pair_ratios) or mm_rps / floor_rps

local cg_n = num("cg_n")
local function ir(name) return (num("cg_" .. name .. "_" .. (2 * cg_n)) - num("cg_" .. name .. "_" .. cg_n)) / cg_n end
local ir_floor, ir_mm = ir("floor"), ir("mm")
-- The stub run follows a private interface of mm.core and may fail: n/a.
local ir_lua = tonumber(R["cg_lua_" .. cg_n]) and tonumber(R["cg_lua_" .. 2 * cg_n]) and ir("lua")
local ir_ratio = ir_mm / ir_floor

local batch_n = num("batch_n")
local slow_seq_est = num("slow_seq_s") * batch_n / num("slow_seq_n")
local concs = {}
for c in R.concs:gmatch("%d+") do concs[#concs + 1] = tonumber(c) end

local rss_growth = num("mem_rss_after_kib") - num("mem_rss_before_kib")

-- get_jobs of 200 jobs (section 2): per call, as ir() at its own N.
local jobs_n = tonumber(R.jobs_cg_n)
local function jobs_ir(name)
  if not jobs_n then return nil end
  local a, b = tonumber(R[("cg_%s_%d"):format(name, jobs_n)]), tonumber(R[("cg_%s_%d"):format(name, 2 * jobs_n)])
  return a and b and (b - a) / jobs_n
end
local ir_jobs_mm, ir_jobs_floor, ir_jobs_shape = jobs_ir("jobs_mm"), jobs_ir("jobs_floor"), jobs_ir("jobs_shape")

-- The download (section 4b): seconds per run, mm's VmHWM and VmRSS growth.
local dl_mm_s, dl_curl_s = tonumber(R.dl_mm_s), tonumber(R.dl_curl_s)
local dl_ratio, dl_hwm_growth, dl_rss_growth
if dl_mm_s and dl_curl_s then
  local m, c = {}, {}
  for v in R.dl_mm_runs:gmatch("%S+") do m[#m + 1] = tonumber(v) end
  for v in R.dl_curl_runs:gmatch("%S+") do c[#c + 1] = tonumber(v) end
  local pr = {}
  for i = 1, math.min(#m, #c) do pr[i] = c[i] / m[i] end
  dl_ratio = median(pr)
  for g in (R.dl_mm_growth or ""):gmatch("%S+") do
    local h, r = g:match("^(-?%d+):(-?%d+)$")
    dl_hwm_growth = math.max(dl_hwm_growth or -math.huge, tonumber(h))
    dl_rss_growth = math.max(dl_rss_growth or -math.huge, tonumber(r))
  end
end

-- Batches at be345a5, before the engine rewrite (issue 10: "without a
-- limiter, batch throughput as today"): seconds of mm and the C multi.
local BATCH_BEFORE = { commit = "be345a5", [8] = { 5.138, 5.132 }, [32] = { 1.299, 1.300 },
                       [128] = { 0.350, 0.348 } }

---------------------------------------------------------------------------
-- Targets

local targets = {}
local function target(what, measured, goal, pass, miss)
  targets[#targets + 1] = { what, measured, goal, pass and "PASS" or "FAIL", (not pass) and miss or "" }
end

-- Issue 8: the single-call path, regen_token against the fast target.
target("sequential throughput vs C floor (median of run pairs)", ratio(seq_ratio), ">= 0.95x", seq_ratio >= 0.95,
  ("short by %.2fx (%.1f%% of the floor's req/s missing)"):format(0.95 - seq_ratio, (0.95 - seq_ratio) * 100))
target("instructions per call vs C floor", ratio(ir_ratio), "<= 1.15x", ir_ratio <= 1.15,
  ("over by %.2fx: %s instructions/call too many (budget %s, spent %s)"):format(ir_ratio - 1.15,
    fmt_int(ir_mm - 1.15 * ir_floor), fmt_int(1.15 * ir_floor), fmt_int(ir_mm)))
local c32 = false
for _, c in ipairs(concs) do if c == 32 then c32 = true end end
if c32 then
  local mm_s, fl_s = num("batch_mm_32_s"), num("batch_floor_32_s")
  local speed, vs = slow_seq_est / mm_s, fl_s / mm_s
  target(("batch of %d @20 ms, c=32: speedup vs sequential"):format(batch_n), ("%.1fx"):format(speed),
    ">= 25x", speed >= 25, ("short by %.1fx"):format(25 - speed))
  target(("batch of %d @20 ms, c=32: vs C curl_multi"):format(batch_n), ratio(vs), ">= 0.85x", vs >= 0.85,
    ("short by %.2fx (mm %.3f s vs C %.3f s)"):format(0.85 - vs, mm_s, fl_s))
end
target(("RSS growth over %s calls"):format(fmt_int(num("mem_n"))), ("%s KiB"):format(fmt_int(rss_growth)),
  "< 1024 KiB", rss_growth < 1024, ("over by %s KiB"):format(fmt_int(rss_growth - 1024)))
local rss_target = #targets
-- Issue 10: batches without a limiter as fast as before the rewrite, taken
-- as within 5% of the C multi at every concurrency (be345a5: 0.99-1.00x).
do
  local worst, at = math.huge, nil
  for _, c in ipairs(concs) do
    local vs = num("batch_floor_" .. c .. "_s") / num("batch_mm_" .. c .. "_s")
    if vs < worst then worst, at = vs, c end
  end
  target("batches without a limiter vs C curl_multi, every concurrency (lowest)",
    ("%s (c=%s)"):format(ratio(worst), at), ">= 0.95x", worst >= 0.95, ("short by %.2fx"):format(0.95 - worst))
end
local batch_target = #targets
-- Issue 8: download_job of DL_MIB MiB, and get_jobs of 200 jobs.
local dl_first = #targets + 1
if dl_ratio then
  target(("download_job of %s MiB vs curl -o (median of run pairs)"):format(R.dl_mib), ratio(dl_ratio), ">= 0.95x",
    dl_ratio >= 0.95 and R.dl_fail == "0",
    ("short by %.2fx%s"):format(0.95 - dl_ratio, R.dl_fail ~= "0" and (", " .. R.dl_fail .. " failed runs") or ""))
  target(("download_job of %s MiB: resident memory growth (VmHWM, worst run)"):format(R.dl_mib),
    ("%s KiB"):format(fmt_int(dl_hwm_growth)), "< 2048 KiB", dl_hwm_growth < 2048,
    ("over by %s KiB"):format(fmt_int(dl_hwm_growth - 2048)))
else
  target("download_job vs curl -o", "n/a", ">= 0.95x", false, "not measured")
  target("download_job: resident memory growth", "n/a", "< 2048 KiB", false, "not measured")
end
if ir_jobs_mm and ir_jobs_floor then
  targets[#targets + 1] = { "get_jobs of 200 jobs: instructions per call vs the floor fetching the same bytes",
    ("%s (%s of it decoding)"):format(ratio(ir_jobs_mm / ir_jobs_floor),
      ir_jobs_shape and ("%.0f%%"):format(100 * ir_jobs_shape / ir_jobs_mm) or "?"),
    "reported (issue 8 sets no bound)", "-", "" }
end

-- Rate limiting (bench/ratelimit.lua): keys rl_<scenario>_<key>; missing
-- when the run failed or an older results file is read.
local function rl(name, k) return R["rl_" .. name .. "_" .. k] end
local function rl_num(name, k) return tonumber(rl(name, k)) end
local RL_TARGETS = {
  { "fast", "2,000 calls, 100/s burst 50" },
  { "default", "300 calls, 10/s burst 100 (default)" },
}
local rl_result = {}
for _, t in ipairs(RL_TARGETS) do
  local name = t[1]
  local secs, minimum, fail = rl_num(name, "seconds"), rl_num(name, "minimum_s"), rl_num(name, "fail")
  local what = ("rate limit: %s, `regen_tokens` c=%s"):format(t[2], rl(name, "conc") or "16")
  if secs and minimum and fail then
    local goal = 1.15 * minimum
    local miss = {}
    if fail > 0 then
      miss[#miss + 1] = ("%d of %d calls failed (%s); %s requests refused"):format(fail, rl_num(name, "n"),
        rl(name, "fail_kinds"), rl(name, "refused"))
    end
    if secs > goal then miss[#miss + 1] = ("%.2f s over"):format(secs - goal) end
    target(what, ("%.2f s, %d failed"):format(secs, fail), ("0 failed, <= %.2f s"):format(goal),
      fail == 0 and secs <= goal, table.concat(miss, "; "))
  else
    target(what, "n/a", "0 failed, <= 1.15x the limiter's minimum", false,
      rl(name, "error") or R.rl_error or "not measured")
  end
  rl_result[name] = targets[#targets][4]
end

-- Section 5 (bench/openresty): per concurrency and way, the runs'
-- "rps non2xx sockerr p50_ms p99_ms"; the ratio to the proxy is the median
-- of the per-run ratios (each mm run follows a proxy run at once).
local ngx_concs, ngx = {}, {}
for c in (R.ngx_concs or ""):gmatch("%d+") do ngx_concs[#ngx_concs + 1] = tonumber(c) end
for _, c in ipairs(ngx_concs) do
  ngx[c] = {}
  for _, way in ipairs{ "proxy", "mm", "direct" } do
    local t = { rps = {}, p50 = {}, p99 = {}, cpu = {} }
    local i = 1
    while R[("ngx_%s_%d_%d"):format(way, c, i)] do
      local v = {}
      for x in R[("ngx_%s_%d_%d"):format(way, c, i)]:gmatch("%S+") do v[#v + 1] = tonumber(x) end
      t.rps[i], t.p50[i], t.p99[i], t.cpu[i] = v[1], v[4], v[5], v[6]
      t.non2xx, t.sock = (t.non2xx or 0) + v[2], (t.sock or 0) + v[3]
      i = i + 1
    end
    ngx[c][way] = t
  end
  local pr = {}
  for i, v in ipairs(ngx[c].mm.rps) do pr[i] = v / ngx[c].proxy.rps[i] end
  ngx[c].ratio = median(pr)
  pr = {}
  for i, v in ipairs(ngx[c].direct.rps) do pr[i] = v / ngx[c].proxy.rps[i] end
  ngx[c].direct_ratio = median(pr)
end
local ngx_first = #targets + 1
for _, c in ipairs(ngx_concs) do
  local t = ngx[c]
  local clean = t.mm.non2xx == 0 and t.mm.sock == 0
  target(("mm.ngx in nginx, wrk c=%d: req/s vs nginx's proxy; no failures"):format(c),
    ("%s, %d non-2xx, %d socket errors"):format(ratio(t.ratio), t.mm.non2xx, t.mm.sock), ">= 0.80x, 0, 0",
    t.ratio >= 0.80 and clean, ("%s%s"):format(t.ratio < 0.80 and ("short by %.2fx"):format(0.80 - t.ratio) or "",
      clean and "" or " (failures)"))
end

---------------------------------------------------------------------------
-- Output

local md = {}
local function w(s) md[#md + 1] = s or "" end
local function row(cells) w("| " .. table.concat(cells, " | ") .. " |") end
local function head(cells)
  row(cells)
  local sep = {}
  for i = 1, #cells do sep[i] = "---" end
  row(sep)
end
local function fails(v) return (v == nil or v == "0") and "" or (" (" .. v .. " failed)") end

-- The one table printed to the terminal.
local summary = {}
local function srow(...) summary[#summary + 1] = { ... } end
srow("measurement", "mm", "reference", "ratio", "target", "result")
srow(("sequential req/s (N=%d)"):format(seq_n), fmt_int(mm_rps), "C floor " .. fmt_int(floor_rps),
  ratio(seq_ratio) .. " (pairs)", ">= 0.95x", targets[1][4])
srow("sequential req/s, peers", "", ("socket.http %s, curl/proc %s"):format(
  fmt_int(seq[3][2] / seq[3][3]), fmt_int(seq[4][2] / seq[4][3])), ("%.1fx, %.1fx"):format(
  mm_rps / (seq[3][2] / seq[3][3]), mm_rps / (seq[4][2] / seq[4][3])), "", "")
srow("instructions/call (callgrind)", fmt_int(ir_mm), "C floor " .. fmt_int(ir_floor), ratio(ir_ratio),
  "<= 1.15x", targets[2][4])
srow("  of which Lua layer alone", ir_lua and fmt_int(ir_lua) or "n/a", "", "", "", "")
srow(("batch %d @20ms sequential (est.)"):format(batch_n), ("%.2f s"):format(slow_seq_est), "", "", "", "")
for _, c in ipairs(concs) do
  local mm_s, fl_s = num("batch_mm_" .. c .. "_s"), num("batch_floor_" .. c .. "_s")
  srow(("batch %d @20ms c=%d"):format(batch_n, c), ("%.3f s (%.1fx seq)"):format(mm_s, slow_seq_est / mm_s),
    ("C multi %.3f s"):format(fl_s), ratio(fl_s / mm_s), c == 32 and ">= 25x, >= 0.85x" or "",
    c == 32 and ((targets[3][4] == "PASS" and targets[4][4] == "PASS") and "PASS" or "FAIL") or "")
end
srow(("RSS growth, %s calls"):format(fmt_int(num("mem_n"))), fmt_int(rss_growth) .. " KiB",
  ("%s -> %s KiB"):format(fmt_int(num("mem_rss_before_kib")), fmt_int(num("mem_rss_after_kib"))), "",
  "< 1024 KiB", targets[rss_target][4])
srow("batches vs C multi, lowest of all c", "", "", targets[batch_target][2], ">= 0.95x", targets[batch_target][4])
if dl_ratio then
  srow(("download_job %s MiB, MB/s"):format(R.dl_mib), ("%.0f"):format(R.dl_mib * 1.048576 / dl_mm_s),
    ("curl -o %.0f"):format(R.dl_mib * 1.048576 / dl_curl_s), ratio(dl_ratio) .. " (pairs)", ">= 0.95x",
    targets[dl_first][4])
  srow("download_job VmHWM growth", fmt_int(dl_hwm_growth) .. " KiB", "", "", "< 2048 KiB", targets[dl_first + 1][4])
end
if ir_jobs_mm and ir_jobs_floor then
  srow("get_jobs{per_page=200} instructions/call", fmt_int(ir_jobs_mm), "C floor " .. fmt_int(ir_jobs_floor),
    ratio(ir_jobs_mm / ir_jobs_floor), "reported", "")
  srow("  of which decoding, checks, plain()", ir_jobs_shape and fmt_int(ir_jobs_shape) or "n/a", "", "", "", "")
end
for _, t in ipairs(RL_TARGETS) do
  local name = t[1]
  local secs, minimum = rl_num(name, "seconds"), rl_num(name, "minimum_s")
  srow(("rate limit %s/s burst %s, %s calls"):format(rl(name, "per_sec") or "?", rl(name, "burst") or "?",
      rl(name, "n") or "?"),
    secs and ("%.2f s, %s failed"):format(secs, rl(name, "fail")) or "n/a",
    minimum and ("limiter min %.1f s"):format(minimum) or "", secs and minimum and ratio(secs / minimum) or "",
    "0 failed, <= 1.15x", rl_result[name])
end
for k, c in ipairs(ngx_concs) do
  local t = ngx[c]
  srow(("mm.ngx in nginx, wrk c=%d req/s"):format(c), fmt_int(median(t.mm.rps)),
    "nginx proxy " .. fmt_int(median(t.proxy.rps)), ratio(t.ratio) .. " (pairs)", ">= 0.80x, 0 failed",
    targets[ngx_first + k - 1][4])
end
local widths = {}
for _, r in ipairs(summary) do
  for i, cell in ipairs(r) do widths[i] = math.max(widths[i] or 0, #cell) end
end
for j, r in ipairs(summary) do
  local cells = {}
  for i, cell in ipairs(r) do cells[i] = cell .. (" "):rep(widths[i] - #cell) end
  print(table.concat(cells, "  "))
  if j == 1 then
    local rule = {}
    for i = 1, #widths do rule[i] = ("-"):rep(widths[i]) end
    print(table.concat(rule, "  "))
  end
end
if R.wire_same ~= "yes" then print("WARNING: mm and the C floor did not send the same request bytes") end

-- RESULTS.md
w("# Benchmark results")
w()
w("Written by `bench/run` (`make bench`); do not edit by hand: rerun it. What each number means: `bench/README.md`.")
w()
w(("Run %s, commit %s. Load average (1/5/15 min) at the start of the sequential runs: %s; at the end: %s "
  .. "(the machine may be shared: outliers of 2-3x hit mm and the floor alike; the callgrind counts are the "
  .. "repeatable metric)."):format(R.m_date, R.m_commit, R.load_start or "?", R.load_end or "?"))
w()
w("## Machine")
w()
head({ "what", "value" })
row({ "CPUs (`nproc`)", R.m_nproc })
row({ "CPU model", R.m_cpu })
row({ "kernel", R.m_kernel })
row({ "OS", R.m_os })
row({ "libcurl", R.m_curl })
row({ "Lua", R.m_lua })
row({ "target", "nginx " .. R.m_nginx .. ", 1 worker, 127.0.0.1, keep-alive" })
row({ "compiler / valgrind", R.m_cc .. " / " .. R.m_valgrind })
row({ "pinning", R.m_pinned })
w()
w("## Targets")
w()
head({ "target", "measured", "goal", "result", "miss" })
for _, t in ipairs(targets) do row(t) end
w()
w("## 1. Sequential `regen_token` against the fast target")
w()
w(("Timed calls after %s untimed warm-up calls; mm and the C floor: median of %s runs each, interleaved."):format(
  R.warmup, R.seq_mm_runs and select(2, R.seq_mm_runs:gsub("%S+", "")) or "?"))
w(("The `curl` row runs %s calls, not %s: a process per call is slow. "):format(fmt_int(seq[4][2]), fmt_int(seq_n))
  .. ("Request bytes on the wire (mm and the floor): %s, identical: %s."):format(R.request_bytes, R.wire_same))
w()
head({ "client", "calls", "seconds", "req/s", "µs/call", "vs C floor" })
for i, s in ipairs(seq) do
  local rps = s[2] / s[3]
  row({ s[1] .. fails(s[4]), fmt_int(s[2]), ("%.3f"):format(s[3]), fmt_int(rps), ("%.1f"):format(1e6 / rps),
    i == 2 and ("%s (median of run pairs; %s from the medians)"):format(ratio(seq_ratio), ratio(rps / floor_rps))
      or ratio(rps / floor_rps) })
end
w()
local pr = {}
for i, r in ipairs(pair_ratios) do pr[i] = ("%.3f"):format(r) end
w(("Runs (seconds): mm %s; floor %s. Per-run ratios (floor seconds / mm seconds, each mm run followed at once by "
  .. "a floor run): %s; the target uses their median, %.3f."):format(R.seq_mm_runs, R.seq_floor_runs,
  table.concat(pr, ", "), seq_ratio))
w()
w("## 2. Client instructions per call (callgrind)")
w()
w(("Total user-space instructions (`Ir`) of the client process at N=%s and N=%s calls; the difference / %s "
  .. "cancels start-up. Kernel time (syscalls, loopback TCP) is not counted. \"Lua layer alone\" is mm.lua "
  .. "with the client's C handle replaced by a stub that returns the canned answer (`bench/mm_bench.lua lua`). "
  .. "How many times a transfer waits in `poll()` moves a pair of runs by about 1%%: mm and the floor are run "
  .. "as %s interleaved pairs and the median pair is shown (Ir per call of each pair: mm %s; floor %s)."):format(
  fmt_int(cg_n), fmt_int(2 * cg_n), fmt_int(cg_n), R.cg_reps or "?", R.cg_mm_runs or "?", R.cg_floor_runs or "?"))
w()
head({ "program", ("Ir at N=%s"):format(fmt_int(cg_n)), ("Ir at N=%s"):format(fmt_int(2 * cg_n)), "Ir per call",
  "vs C floor" })
for _, p in ipairs{ { "C floor", "floor" }, { "mm", "mm" }, { "mm Lua layer alone (stub core)", "lua" } } do
  if p[2] == "lua" and not ir_lua then
    row({ p[1], "n/a", "n/a", "n/a (the stub no longer matches mm.core's interface)", "" })
    break
  end
  row({ p[1], fmt_int(num("cg_" .. p[2] .. "_" .. cg_n)), fmt_int(num("cg_" .. p[2] .. "_" .. 2 * cg_n)),
    fmt_int(ir(p[2])), ratio(ir(p[2]) / ir_floor) })
end
w()
local g_mm, f_mm = per_call("mm", cg_n)
local g_fl, f_fl = per_call("floor", cg_n)
if g_mm and g_fl then
  w("Per call, by where the instructions are executed (self cost, from `callgrind_annotate --inclusive=no`):")
  w()
  head({ "component", "mm", "C floor", "mm - floor" })
  local keys, seen = {}, {}
  for _, t in ipairs{ g_mm, g_fl } do
    for k in pairs(t) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  end
  table.sort(keys, function(a, b) return (g_mm[a] or 0) > (g_mm[b] or 0) end)
  for _, k in ipairs(keys) do
    local a, b = g_mm[k] or 0, g_fl[k] or 0
    if math.abs(a) >= 50 or math.abs(b) >= 50 then
      row({ k, fmt_int(a), fmt_int(b), fmt_int(a - b) })
    end
  end
  w()
  w("Functions where mm spends the most more than the floor, per call (libcurl and the Lua VM are stripped "
    .. "in Debian, so their functions show as addresses):")
  w()
  head({ "function (object)", "mm", "C floor", "mm - floor" })
  local fl = {}
  for k, v in pairs(f_mm) do fl[#fl + 1] = { k, v - (f_fl[k] or 0) } end
  table.sort(fl, function(a, b) return a[2] > b[2] end)
  for i = 1, math.min(12, #fl) do
    local k = fl[i][1]
    row({ "`" .. k .. "`", fmt_int(f_mm[k]), fmt_int(f_fl[k] or 0), fmt_int(fl[i][2]) })
  end
  w()
end
if R.part_1_ir then
  w("Lua-layer pieces: instructions per execution of copies of the library's per-call steps before this round "
    .. "(`was:`, up to 377c27a) and of what replaced them (`now:`), and unit costs, from `bench/lua_parts.lua` "
    .. "under callgrind, the empty-call baseline subtracted:")
  w()
  head({ "piece", "what", "Ir" })
  local base = tonumber(R.part_1_ir) or 0
  local i = 2
  while R["part_" .. i .. "_ir"] do
    row({ R["part_" .. i .. "_name"], (R["part_" .. i .. "_desc"]:gsub("|", "\\|")),
      fmt_int(tonumber(R["part_" .. i .. "_ir"]) - base) })
    i = i + 1
  end
  w()
end
if ir_jobs_mm and ir_jobs_floor then
  w("### get_jobs of 200 jobs")
  w()
  w(("`c:get_jobs{ per_page = 200 }` against a canned page of 200 jobs (%s bytes of JSON, like finished "
    .. "compliance exports) from the fast target, and the floor sending the same request (GET, same headers, "
    .. "%s bytes, checked as above) for the same bytes, which it collects and does not parse. N=%s and N=%s; "
    .. "Ir per call of each pair: mm %s; floor %s. \"Reading\" is what get_jobs does with the answer once the "
    .. "core has it (`mm_bench.lua shape`: JSON decoding by lua-cjson, the list checks, `plain()`), run alone "
    .. "over the same bytes; the floor has no part of it."):format(fmt_int(tonumber(R.jobs_body_bytes) or 0),
    R.jobs_request_bytes or "?", fmt_int(jobs_n), fmt_int(2 * jobs_n), R.cg_jobs_mm_runs or "?",
    R.cg_jobs_floor_runs or "?"))
  w()
  head({ "program", "Ir per call", "vs C floor" })
  row({ "C floor", fmt_int(ir_jobs_floor), "1.00x" })
  row({ "mm `get_jobs`", fmt_int(ir_jobs_mm), ratio(ir_jobs_mm / ir_jobs_floor) })
  if ir_jobs_shape then
    row({ "of which reading the answer (decode, checks, plain)", fmt_int(ir_jobs_shape),
      ratio(ir_jobs_shape / ir_jobs_floor) })
    row({ "mm less reading", fmt_int(ir_jobs_mm - ir_jobs_shape), ratio((ir_jobs_mm - ir_jobs_shape) / ir_jobs_floor) })
  end
  w()
end
w(("## 3. Batches of %s `regen_token` against the 20 ms target"):format(fmt_int(batch_n)))
w()
w(("Sequential: %s calls with one client, extrapolated to %s (%.2f s measured). "):format(
  R.slow_seq_n, fmt_int(batch_n), num("slow_seq_s"))
  .. "Each batch uses a new client (or multi handle), so connection set-up is inside the time; "
  .. "median of the runs.")
w()
head({ "run", "seconds", "speedup vs sequential", "vs C curl_multi", "at " .. BATCH_BEFORE.commit })
row({ ("mm sequential (%s calls, extrapolated)"):format(R.slow_seq_n), ("%.2f"):format(slow_seq_est), "1.0x", "", "" })
for _, c in ipairs(concs) do
  local mm_s, fl_s = num("batch_mm_" .. c .. "_s"), num("batch_floor_" .. c .. "_s")
  local before = BATCH_BEFORE[c]
  row({ ("mm `regen_tokens`, concurrency %d%s"):format(c, fails(R["batch_mm_" .. c .. "_fail"])),
    ("%.3f"):format(mm_s), ("%.1fx"):format(slow_seq_est / mm_s), ratio(fl_s / mm_s),
    before and ("%.3f s, %s"):format(before[1], ratio(before[2] / before[1])) or "" })
  row({ ("C curl_multi, concurrency %d%s"):format(c, fails(R["batch_floor_" .. c .. "_fail"])),
    ("%.3f"):format(fl_s), ("%.1fx"):format(slow_seq_est / fl_s), "1.00x",
    before and ("%.3f s"):format(before[2]) or "" })
  local op_s = tonumber(R["batch_opts_" .. c .. "_s"])
  if op_s then
    row({ ("(diagnostic) C curl_multi with mm.core's curl options, concurrency %d%s"):format(c,
      fails(R["batch_opts_" .. c .. "_fail"])), ("%.3f"):format(op_s), ("%.1fx"):format(slow_seq_est / op_s),
      ratio(fl_s / op_s), "" })
  end
end
w()
w(("Ideal at 20 ms per request: %.2f s at concurrency 8, %.2f s at 32, %.2f s at 128."):format(
  batch_n * 0.02 / 8, batch_n * 0.02 / 32, batch_n * 0.02 / 128))
w()
w("## 4. Memory")
w()
w(("VmRSS of the mm process after 1,000 warm-up calls and after %s more on the same client (fast target)."):format(
  fmt_int(num("mem_n"))))
w()
head({ "what", "value" })
row({ "RSS before", fmt_int(num("mem_rss_before_kib")) .. " KiB" })
row({ "RSS after", fmt_int(num("mem_rss_after_kib")) .. " KiB" })
row({ "growth", fmt_int(rss_growth) .. " KiB" })
row({ "peak RSS (VmHWM)", fmt_int(num("mem_hwm_kib")) .. " KiB" })
row({ "Lua heap before / after", ("%s / %s KiB"):format(fmt_int(num("mem_lua_heap_before_kib")),
  fmt_int(num("mem_lua_heap_after_kib"))) })
row({ "calls failed", R.mem_fail or "?" })
w()

if dl_ratio then
  w(("## 4b. download_job of %s MiB"):format(R.dl_mib))
  w()
  w(("`c:download_job(id, file)` from the fast target (nginx serving a sparse file of %s MiB, `sendfile on`) "
    .. "to `%s`, against `curl -s -o` of the same URL to the same file, %s runs of each interleaved; the file "
    .. "is checked for its size and removed after each run, so the writes land in the page cache. mm: seconds "
    .. "around the call, on a client already connected; curl: its `time_total`. The ratio is the median of the "
    .. "per-pair ratios. Memory: mm's VmHWM and VmRSS just before and after the call."):format(R.dl_mib,
    R.dl_dir or "?", select(2, R.dl_mm_runs:gsub("%S+", ""))))
  w()
  head({ "client", "seconds (median)", "MB/s", "runs (s)", "vs curl -o" })
  row({ "curl -o", ("%.3f"):format(dl_curl_s), ("%.0f"):format(R.dl_mib * 1.048576 / dl_curl_s), R.dl_curl_runs,
    "1.00x" })
  row({ "mm `download_job`" .. fails(R.dl_fail), ("%.3f"):format(dl_mm_s),
    ("%.0f"):format(R.dl_mib * 1.048576 / dl_mm_s), R.dl_mm_runs, ratio(dl_ratio) .. " (pairs)" })
  w()
  w(("mm's growth per run, KiB (VmHWM:VmRSS): %s."):format(R.dl_mm_growth or "?"))
  w()
end
w("## 5. Rate limiting")
w()
w("Against the stub (`bin/mm-stub`, its emulation of Mattermost's limiter), from `bench/ratelimit.lua`. Each run "
  .. "starts on a reset stub (a full bucket) with a new client and the library's defaults; the ids are the stub's "
  .. (R.rl_commands or "?") .. " fixture commands, repeated. \"Requests\" reached the stub (its request log), "
  .. "\"refused\" is requests less calls that succeeded. The limiter's minimum is (calls - burst) / rate; "
  .. "the target is 0 failed within 1.15x of it.")
w()
if R.rl_error then w("**bench/ratelimit.lua failed: " .. R.rl_error .. ".**") w() end
head({ "run", "calls", "concurrency", "limiter", "seconds", "vs limiter's minimum", "failed", "requests", "refused" })
for _, name in ipairs{ "nolimit", "fast", "default" } do
  local secs, minimum = rl_num(name, "seconds"), rl_num(name, "minimum_s")
  local label = "mm `regen_tokens`"
  if rl(name, "error") then
    row({ label, "", "", "", "n/a", "", "", "", (rl(name, "error"):gsub("|", "\\|")) })
  elseif secs then
    local per_sec = rl_num(name, "per_sec") or 0
    row({ label, fmt_int(rl_num(name, "n")), rl(name, "conc"),
      per_sec > 0 and ("%s/s burst %s"):format(rl(name, "per_sec"), rl(name, "burst")) or "none",
      ("%.3f"):format(secs), minimum and ("%.3fx of %.1f s"):format(secs / minimum, minimum) or "",
      rl(name, "fail") .. (rl(name, "fail") ~= "0" and " (" .. rl(name, "fail_kinds") .. ")" or ""),
      fmt_int(rl_num(name, "attempts")) .. ((rl_num(name, "log_dropped") or 0) > 0 and " (log full: at least)" or ""),
      fmt_int(rl_num(name, "refused")) })
  end
end
w()

if #ngx_concs > 0 then
  w("## 6. mm.ngx in nginx under load")
  w()
  w(("`bench/openresty`: one nginx worker (not pinned), `thread_pool mm threads=%s`, "
    .. "`lua_worker_thread_vm_pool_size %s`, mm.ngx's `threads` %s; `GET /<way>/<id>` answers "
    .. "`{\"token\":...}` after a `PUT .../regen_token` to the fast target. wrk (%s) `-t2 -d%ss` at each "
    .. "concurrency, %s runs of each way interleaved (proxy, mm, direct); medians of the runs, the ratio the "
    .. "median of the per-run ratios. Ways: **proxy**: `ngx.location.capture` of an internal `proxy_pass` "
    .. "location, upstream `keepalive 1024`; **mm**: `require(\"mm.ngx\").regen_token(id)`; **direct**: "
    .. "a semaphore slot and one `ngx.run_worker_thread` per request running one mm call. nginx CPU: user + "
    .. "system time of the nginx worker (event loop and pool threads) per request."):format(
    R.ngx_threads, R.ngx_vms, R.ngx_threads, R.ngx_wrk or "wrk", R.ngx_seconds, R.ngx_reps))
  w()
  head({ "concurrency", "way", "req/s (median)", "runs", "vs proxy", "non-2xx", "socket errors",
    "p50 ms", "p99 ms", "nginx CPU µs/req" })
  for _, c in ipairs(ngx_concs) do
    for _, way in ipairs{ "proxy", "mm", "direct" } do
      local t = ngx[c][way]
      local runs = {}
      for i, v in ipairs(t.rps) do runs[i] = fmt_int(v) end
      row({ tostring(c), way, fmt_int(median(t.rps)), table.concat(runs, ", "),
        way == "proxy" and "1.00x" or ratio(way == "mm" and ngx[c].ratio or ngx[c].direct_ratio),
        tostring(t.non2xx), tostring(t.sock), ("%.2f"):format(median(t.p50)), ("%.2f"):format(median(t.p99)),
        #t.cpu > 0 and ("%.1f"):format(median(t.cpu)) or "?" })
    end
  end
  w()
  local calls, dispatches = tonumber(R.ngx_calls) or 0, tonumber(R.ngx_dispatches) or 0
  w(("mm.ngx over all its runs: %s calls in %s thread calls (%.1f per thread call), %s timed out in the queue; "
    .. "%s error-level lines in nginx's log."):format(fmt_int(calls), fmt_int(dispatches),
    dispatches > 0 and calls / dispatches or 0, R.ngx_busy or "?", R.ngx_error_lines or "?"))
  w()
end

local af = io.open("bench/ANALYSIS.md")
if af then
  w(af:read("a"))
  af:close()
end

local out = assert(io.open(results_md, "w"))
out:write((table.concat(md, "\n"):gsub("\n+$", "")), "\n")
out:close()
print("bench: wrote " .. results_md)
