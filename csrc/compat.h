/*
 * Lua 5.1 / LuaJIT shims for the few 5.2+ API calls mm.core uses.
 * One header, so the rest of the C code is written against Lua 5.4.
 */
#ifndef MM_COMPAT_H
#define MM_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501

#define lua_rawlen(L, i) lua_objlen((L), (i))

/* PUC 5.1 lacks these; LuaJIT 2.1's lauxlib.h has them, and luaL_newlib
 * tells the two apart without needing luajit.h. */
#ifndef luaL_newlib
static void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs((L), (l), 0))
#endif /* !luaL_newlib */

#endif /* LUA_VERSION_NUM == 501 */

#endif /* MM_COMPAT_H */
