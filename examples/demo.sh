#!/bin/sh
# `make demo`: run the examples against the stub server (started by
# bin/mm-stub run), as the stub's sysadmin, on the Lua LUA with the core
# built for it in BUILD (relative to the checkout; make's build/lua5.x or
# build/luajit).
# Usage: examples/demo.sh [LUA [BUILD]]   (default: lua5.4 build/lua5.4)
set -eu
LUA=${1:-lua5.4}
BUILD=${2:-build/$(basename "$LUA")}
cd "$(dirname "$0")/.."
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
[ -f "$BUILD/mm/core.so" ] || { echo "demo.sh: no $BUILD/mm/core.so: build it with make first" >&2; exit 1; }
LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;"
LUA_CPATH="$BUILD/?.so;;"
export LUA_PATH LUA_CPATH
# MM_URL, MM_TOKEN and two command ids from the stub's fixtures
eval "$("$LUA" examples/stub_env.lua)"
export MM_URL MM_TOKEN

echo "== create a job and wait for it (examples/create_job.lua)"
"$LUA" examples/create_job.lua active_users
echo
echo "== rotate a slash command's token (examples/rotate_token.lua)"
"$LUA" examples/rotate_token.lua "$MM_COMMAND_ID"
echo
echo "== rotate several at once; the deleted command fails with the server's 404"
"$LUA" examples/rotate_token.lua "$MM_COMMAND_ID" "$MM_COMMAND_ID2" "$MM_DELETED_ID" || true
echo
echo "== rotate every custom command of a team (examples/rotate_team.lua)"
"$LUA" examples/rotate_team.lua "$MM_TEAM_ID"
