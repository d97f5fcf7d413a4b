--- Bad arguments that every client check must refuse, each with (a Lua
-- pattern of) the reason its error gives.
-- @usage
-- local bad = require "support.bad_values"
-- for _, case in ipairs(bad.IDS) do
--   raises("bad argument #1 to 'get_job' %(.-" .. case[2], c.get_job, c, case[1])
-- end
local M = {}

--- Values that are not a Mattermost id (26 lower-case letters and digits):
-- none, the wrong type, the wrong length, characters outside the
-- alphabet, and ones that would change a URL's path or query.
M.IDS = {
  { nil, "id expected, got no value" }, { 42, "id expected, got number" }, { {}, "id expected, got table" },
  { "", "id must be 26 characters, got 0" }, { "1234", "id must be 26 characters, got 4" },
  { ("a"):rep(27), "id must be 26 characters, got 27" },
  { "4XP9FDT7PBGIUM38K8K9KDZDWE", "only lower%-case letters and digits" },
  { "4xp9fdt7pbgium38k8k9kdzd/e", "only lower%-case letters and digits" },
  { "../../../../../jobs0000000", "only lower%-case letters and digits" },
  { "4xp9fdt7pbgium38k8k9kdzd e", "only lower%-case letters and digits" },
  { "4xp9fdt7pbgium38k8k9kdz%2e", "only lower%-case letters and digits" },
  { "4xp9fdt7pbgium38k8k9kdzd\0e", "only lower%-case letters and digits" },
  -- the bytes either side of a-z and 0-9, and a high byte
  { "4xp9fdt7pbgium38k8k9kdzd`e", "only lower%-case" }, { "4xp9fdt7pbgium38k8k9kdzd{e", "only lower%-case" },
  { "4xp9fdt7pbgium38k8k9kdzd:e", "only lower%-case" }, { "4xp9fdt7pbgium38k8k9kdzd\255e", "only lower%-case" },
  { "4xp9fdt7pbgium38k8k9kdzdwe0", "id must be 26 characters, got 27" },
}

return M
