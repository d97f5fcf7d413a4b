# lua-mattermost: build, test, demo, install.
# Every knob can be set on the command line: make LUA_VERSION=5.3 test
LUA_VERSION ?= 5.4
LUA_INCDIR  ?= /usr/include/lua$(LUA_VERSION)
LUA_NAME    ?= lua$(LUA_VERSION)
# The interpreter: the tests run on it and the installed mm command too.
LUA         ?= $(if $(filter luajit,$(LUA_NAME)),luajit,lua$(LUA_VERSION))
BUSTED      ?= /usr/bin/busted
CC          ?= cc
CURL_CFLAGS ?= $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   ?= $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
OPT         ?= -O2 -g
WARN        ?= -std=c99 -Wall -Wextra -Werror -pedantic -Wshadow -Wmissing-prototypes \
               -Wstrict-prototypes -Wcast-qual -Wpointer-arith -Wformat=2
CFLAGS      ?= $(OPT)
ALL_CFLAGS   = $(WARN) -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden \
               -I$(LUA_INCDIR) $(CURL_CFLAGS) $(CFLAGS)
LDFLAGS     ?=
LIBFLAG     ?= -shared
PREFIX      ?= /usr/local
DESTDIR     ?=
LUA_LMOD    ?= $(PREFIX)/share/lua/$(LUA_VERSION)
# Where Lua looks by default under /usr/local (Debian's package.cpath).
LUA_CMOD    ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
BUILD        = build/$(LUA_NAME)
CORE         = $(BUILD)/mm/core.so

# Debian packages the build, tests, demo and lint need (make deps).
# libnginx-mod-http-lua runs OpenResty's LuaJIT: its -dev package is
# libluajit2-5.1-dev, which conflicts with Debian's plain libluajit-5.1-dev.
DEB_PACKAGES = gcc make pkg-config libcurl4-openssl-dev lua$(LUA_VERSION) $(LUA_DEV) lua5.1 \
               lua-cjson lua-busted lua-socket lua-sec lua-check luarocks curl nginx libnginx-mod-http-lua \
               libnginx-mod-http-echo libluajit2-5.1-dev openssl cppcheck valgrind ca-certificates
LUA_DEV     ?= $(if $(filter 5.1,$(LUA_VERSION)),liblua5.1-0-dev,liblua$(LUA_VERSION)-dev)
# Every Lua the suite runs on (make test-all): name, version, include dir.
ALL_LUAS     = lua5.1:5.1:/usr/include/lua5.1 lua5.2:5.2:/usr/include/lua5.2 \
               lua5.3:5.3:/usr/include/lua5.3 lua5.4:5.4:/usr/include/lua5.4 \
               luajit:5.1:/usr/include/luajit-2.1
ALL_LUA_PACKAGES = lua5.1 lua5.2 lua5.3 lua5.4 liblua5.1-0-dev liblua5.2-dev liblua5.3-dev \
               liblua5.4-dev luajit2 libluajit2-5.1-dev
SPEC_ARGS   ?=
VALGRIND    ?= valgrind --quiet --error-exitcode=99 --leak-check=full \
               --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
               --suppressions=spec/valgrind.supp

SHELL := /bin/bash
.PHONY: all deps deps-all luajit-core install-packages test test-all test-rock test-valgrind test-asan soak bench doc demo lint \
        install uninstall clean

all: $(CORE)

$(CORE): csrc/mm_core.c csrc/compat.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LIBFLAG) -o $@ csrc/mm_core.c $(LDFLAGS) $(CURL_LIBS)

deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES)"

deps-all:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES) $(ALL_LUA_PACKAGES) lua-ldoc"

# Installs the missing ones of PACKAGES with apt-get when root; otherwise
# prints the command to run.
install-packages:
	@missing=$$(for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "missing Debian packages; run as root:"; \
	  echo "  apt-get install -y $$missing"; exit 1; \
	fi

# The core for OpenResty's LuaJIT, which the OpenResty spec loads in nginx.
luajit-core: deps
	$(MAKE) --no-print-directory all LUA_VERSION=5.1 LUA_NAME=luajit LUA_INCDIR=/usr/include/luajit-2.1

# The whole suite against a fresh stub server, then the rockspec install.
test: deps all luajit-core
	bin/mm-stub run -- spec/run $(LUA) $(BUSTED) --cpath='$(BUILD)/?.so' $(SPEC_ARGS)
	$(MAKE) --no-print-directory test-rock

# The suite on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT (OpenResty's luajit2).
test-all: deps-all
	@set -e; for l in $(ALL_LUAS); do \
	  name=$${l%%:*}; rest=$${l#*:}; ver=$${rest%%:*}; inc=$${rest#*:}; \
	  echo "=== $$name"; \
	  $(MAKE) --no-print-directory all LUA_NAME=$$name LUA_VERSION=$$ver LUA_INCDIR=$$inc; \
	  bin/mm-stub run -- spec/run $$name $(BUSTED) --cpath="build/$$name/?.so" $(SPEC_ARGS); \
	done
	$(MAKE) --no-print-directory test-rock

# The client side of the whole suite under valgrind memcheck: no errors,
# nothing definitely or indirectly lost.
test-valgrind: deps all
	bin/mm-stub run -- spec/run "$(VALGRIND) $(LUA)" $(BUSTED) --cpath='$(BUILD)/?.so' $(SPEC_ARGS)

# The C core built with AddressSanitizer and UBSan, whole suite. The Lua
# interpreter is not instrumented, so the runtime is preloaded; leaks are
# left to test-valgrind (busted exits without closing its Lua state).
ASAN_LIB = $(shell $(CC) -print-file-name=libasan.so)
test-asan: deps
	$(MAKE) --no-print-directory -B all LUA_NAME=asan \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined"
	bin/mm-stub run -- spec/run "env LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(LUA)" $(BUSTED) --cpath='build/asan/?.so' $(SPEC_ARGS)

# Resident memory over 100,000 calls on one client and 10,000 clients
# made and dropped (figures for the README's reliability section).
soak: deps all
	bin/mm-stub run -- $(LUA) spec/soak.lua $(BUILD)

bench: deps all
	@$(MAKE) --no-print-directory install-packages PACKAGES="curl valgrind lua-socket wrk"
	bench/run

doc: deps-all
	ldoc -d doc -p lua-mattermost -t "lua-mattermost reference" lua/mm/init.lua

test-rock: deps
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(ALL_LUA_PACKAGES)"
	spec/rock-check

demo: deps all
	bin/mm-stub run -- examples/demo.sh $(LUA) $(BUILD)

# The -Werror build goes to build/lint, at -O2 (some warnings need the
# optimiser): not over the debug build of this Lua that the tests use.
lint: deps
	$(MAKE) --no-print-directory -B all OPT=-O2 LUA_NAME=lint
	luacheck -q lua spec examples stub bench bin/mm
	luac5.1 -p lua/mm/*.lua bin/mm   # the library and the CLI parse as Lua 5.1 (LuaJIT)
	$(LUA) spec/rockspec_modules.lua rockspec/lua-mattermost-scm-1.rockspec
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --std=c99 --inline-suppr -I$(LUA_INCDIR) --suppress=missingIncludeSystem \
	  --suppress=toomanyconfigs csrc

# bin/mm-stub needs the stub's files beside it, so it is installed with
# them under $(STUB_DIR) and linked into bin (a relative link, right under a
# DESTDIR too; mm-stub resolves it to find $(STUB_DIR)/stub).
STUB_DIR    ?= $(PREFIX)/share/lua-mattermost
# bin/mm runs on $(LUA), the Lua this install is for: its first line is set
# to that. Its second line, added, puts the directories where this install
# put the module first on Lua's paths, so mm finds it wherever PREFIX is
# (and uses the module it came with): the final paths, never DESTDIR's.
# $(call MM_FOR_LUA,LMOD,CMOD) filters mm (the source or an installed
# copy, whose second line it replaces) for the interpreter $$lua. The
# values go through ENVIRON: awk -v would read a \ in them as an escape.
MM_PATHS     = package.path, package.cpath = [[$(1)/?.lua;$(1)/?/init.lua;]] .. package.path, \
               [[$(2)/?.so;]] .. package.cpath -- make install: this install's module first
MM_FOR_LUA   = lua=$$lua paths="$(MM_PATHS)" awk 'NR == 1 { print "\#!" ENVIRON["lua"]; print ENVIRON["paths"]; next } \
               NR == 2 && /-- make install: / { next } { print }'
install: $(CORE)
	@lua=$$(command -v $(LUA)) || { echo "make install: no $(LUA) for the mm command to run on;" \
	  "install it, or name another Lua $(LUA_VERSION) interpreter with LUA=" >&2; exit 1; }; \
	set -ex; \
	install -d $(DESTDIR)$(LUA_LMOD)/mm $(DESTDIR)$(LUA_CMOD)/mm $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(STUB_DIR)/bin $(DESTDIR)$(STUB_DIR)/stub/lua/mmstub; \
	install -m 644 lua/mm/*.lua $(DESTDIR)$(LUA_LMOD)/mm/; \
	install -m 755 $(CORE) $(DESTDIR)$(LUA_CMOD)/mm/core.so; \
	$(call MM_FOR_LUA,$(LUA_LMOD),$(LUA_CMOD)) bin/mm >$(DESTDIR)$(PREFIX)/bin/mm; \
	chmod 755 $(DESTDIR)$(PREFIX)/bin/mm; \
	install -m 755 bin/mm-stub $(DESTDIR)$(STUB_DIR)/bin/mm-stub; \
	install -m 644 stub/*.json stub/*.in stub/*.conf stub/README.md $(DESTDIR)$(STUB_DIR)/stub/; \
	install -m 644 stub/lua/mmstub/*.lua $(DESTDIR)$(STUB_DIR)/stub/lua/mmstub/; \
	ln -sfr $(DESTDIR)$(STUB_DIR)/bin/mm-stub $(DESTDIR)$(PREFIX)/bin/mm-stub

# Removes this Lua's module, and the directories install made once empty.
# The commands go with the last module: while one for another Lua remains,
# mm stays, moved to a Lua that has its module if it ran on this one.
LMODS = $(DESTDIR)$(dir $(LUA_LMOD))
uninstall:
	rm -rf $(DESTDIR)$(LUA_LMOD)/mm $(DESTDIR)$(LUA_CMOD)/mm/core.so
	@set -e; mm=$(DESTDIR)$(PREFIX)/bin/mm; \
	has() { [ -f "$(LMODS)$$1/mm/init.lua" ]; }; \
	if [ -f "$$mm" ]; then \
	  ver=$$($$(sed -n '1s/^#!//p' "$$mm") -e 'io.write((_VERSION:gsub("^Lua ", "")))' 2>/dev/null) || ver=; \
	  if [ -z "$$ver" ] || ! has "$$ver"; then \
	    lua=; for v in 5.4 5.3 5.2 5.1; do \
	      if has $$v; then lua=$$(command -v lua$$v || { [ $$v = 5.1 ] && command -v luajit; }) && break; fi; \
	    done; \
	    if [ -n "$$lua" ]; then echo "mm now runs on $$lua"; \
	      $(call MM_FOR_LUA,$(dir $(LUA_LMOD))$$v,$(dir $(LUA_CMOD))$$v) "$$mm" >"$$mm.new"; \
	      chmod 755 "$$mm.new"; mv -f "$$mm.new" "$$mm"; \
	    else echo "rm -f $$mm"; rm -f "$$mm"; fi; \
	  fi; \
	fi; \
	if ! ls $(LMODS)*/mm/init.lua >/dev/null 2>&1; then \
	  echo "rm -rf $(DESTDIR)$(PREFIX)/bin/mm-stub $(DESTDIR)$(STUB_DIR)"; \
	  rm -rf $(DESTDIR)$(PREFIX)/bin/mm-stub $(DESTDIR)$(STUB_DIR); \
	fi; \
	for d in $(DESTDIR)$(LUA_CMOD)/mm $(DESTDIR)$(LUA_CMOD) $(DESTDIR)$(LUA_LMOD); do \
	  [ ! -d "$$d" ] || rmdir --ignore-fail-on-non-empty "$$d"; \
	done; \
	for d in $(LMODS) $(DESTDIR)$(dir $(LUA_CMOD)); do \
	  case "$$d" in */lua/) [ ! -d "$$d" ] || rmdir --ignore-fail-on-non-empty "$$d";; esac; \
	done

# build/, and what `luarocks make` leaves in the tree: the object file and
# the module it builds in ./mm (the directory removed once empty).
clean:
	rm -rf build
	rm -f csrc/mm_core.o mm/core.so
	[ ! -d mm ] || rmdir --ignore-fail-on-non-empty mm
