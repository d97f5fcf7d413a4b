# lua-mattermost: build, test, demo, install.
# Every knob can be set on the command line: make LUA_VERSION=5.3 test
LUA_VERSION ?= 5.4
LUA         ?= lua$(LUA_VERSION)
LUA_INCDIR  ?= /usr/include/lua$(LUA_VERSION)
LUA_NAME    ?= lua$(LUA_VERSION)
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
LUA_CMOD    ?= $(PREFIX)/lib/$(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)/lua/$(LUA_VERSION)
BUILD        = build/$(LUA_NAME)
CORE         = $(BUILD)/mm/core.so

# Debian packages the build, tests, demo and lint need (make deps).
DEB_PACKAGES = gcc make pkg-config libcurl4-openssl-dev lua$(LUA_VERSION) liblua$(LUA_VERSION)-dev \
               lua-cjson lua-busted lua-socket lua-check luarocks nginx libnginx-mod-http-lua \
               openssl cppcheck ca-certificates

SHELL := /bin/bash
.PHONY: all deps test test-stub test-client test-rock demo lint install uninstall clean

all: $(CORE)

$(CORE): csrc/mm_core.c csrc/compat.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LIBFLAG) -o $@ csrc/mm_core.c $(LDFLAGS) $(CURL_LIBS)

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
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

# The whole suite against a fresh stub server, then the rockspec install.
test: deps all
	bin/mm-stub run -- spec/run $(LUA) $(BUSTED)
	$(MAKE) --no-print-directory test-rock

test-rock: deps
	spec/rock-check $(LUA_VERSION)

demo: deps all
	bin/mm-stub run -- examples/demo.sh $(LUA)

lint: deps
	$(MAKE) --no-print-directory -B all OPT=-O2
	luacheck -q lua spec examples bin/mm stub 2>/dev/null || luacheck lua spec examples stub
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --std=c99 --inline-suppr -I$(LUA_INCDIR) --suppress=missingIncludeSystem csrc

install: $(CORE)
	install -d $(DESTDIR)$(LUA_LMOD) $(DESTDIR)$(LUA_CMOD)/mm
	install -m 644 lua/mm.lua $(DESTDIR)$(LUA_LMOD)/mm.lua
	install -m 755 $(CORE) $(DESTDIR)$(LUA_CMOD)/mm/core.so

uninstall:
	rm -f $(DESTDIR)$(LUA_LMOD)/mm.lua $(DESTDIR)$(LUA_CMOD)/mm/core.so

clean:
	rm -rf build
