/*
 * Lua 5.1 / LuaJIT shims for the few 5.2+ API calls mm.core uses.
 * One header, so the rest of the C code is written against Lua 5.4.
 *
 * On 5.1 the core uses the plain 5.1 API only, even where LuaJIT 2.1 has
 * the 5.2 call: PUC Lua 5.1 and LuaJIT search the same directories
 * (/usr/local/lib/lua/5.1), so one core.so must load in both, whichever
 * headers built it.
 */
#ifndef MM_COMPAT_H
#define MM_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501

#define lua_rawlen(L, i) lua_objlen((L), (i))

static void mm_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

/* replaces LuaJIT's declarations, if any, for the rest of the file */
#undef luaL_setfuncs
#define luaL_setfuncs mm_compat_setfuncs
#undef luaL_newlib
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs((L), (l), 0))

#endif /* LUA_VERSION_NUM == 501 */

#endif /* MM_COMPAT_H */
