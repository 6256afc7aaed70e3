# idemgate — one GNU Makefile for the library, the nginx module, the gateway,
# the demo API, the tests, the fuzz targets and the benchmarks.
#
#   make                 build everything into build/
#   make test            install what is missing, build, run every test
#   make test-unit       C unit tests and the store contract suite
#   make fuzz            run each libFuzzer target for FUZZ_SECONDS
#   make bench           store benchmark (LMDB, PostgreSQL and Redis, durable),
#                        then plain nginx and idemgate side by side (wrk)
#   make bench-scale     the LMDB store at 10 million keys (bench/scale.sh)
#   make install         the gateway, the module (Debian's layout), the man
#                        page, the systemd unit (PREFIX, DESTDIR)
#   make deb             Debian packages of the gateway and the module
#   make SANITIZER=address|undefined ...   the same under a sanitizer
#                                          (into build-address/, ...)

CC       ?= cc
CLANG    ?= clang
SANITIZER ?=
# FAILPOINTS=1 compiles the module's crash failpoints in (test builds only:
# build-test/ and every sanitizer build).
FAILPOINTS ?= $(if $(SANITIZER),1)
BUILD    := build$(if $(SANITIZER),-$(SANITIZER),$(if $(FAILPOINTS),-test))

PKGS     := lmdb jansson libcrypto libpq hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -fPIC -pthread $(WARN) -Ilib $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -pthread

ifeq ($(SANITIZER),address)
CFLAGS   += -fsanitize=address -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address
else ifeq ($(SANITIZER),undefined)
CFLAGS   += -fsanitize=undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=undefined
else ifneq ($(SANITIZER),)
$(error SANITIZER must be address or undefined)
endif

LIB_SRC  := $(wildcard lib/core/*.c lib/store/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIBIDEM  := $(BUILD)/libidem.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

STORE_BACKENDS := mem lmdb
STORE_BACKENDS += postgres
STORE_BACKENDS += redis
STORE_BIN := $(STORE_BACKENDS:%=$(BUILD)/tests/store_contract_%)
PG_FAILURES_BIN := $(BUILD)/tests/store_postgres_failures
REDIS_FAILURES_BIN := $(BUILD)/tests/store_redis_failures
LMDB_WAL_BIN := $(BUILD)/tests/store_lmdb_wal

FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_REPLAY_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%_replay)
FUZZ_SECONDS ?= 60

BENCH_BIN := $(BUILD)/bench/store_bench
SYNC_PROBE_BIN := $(BUILD)/bench/sync_probe

# The nginx module, built against Debian's nginx-dev tree with the packaged
# nginx's own configure flags, so that load_module accepts it.
NGINX_DEV  ?= /usr/share/nginx/src
NGX_TREE   := $(BUILD)/nginx-tree
MODULE     := $(BUILD)/ngx_http_idempotency_module.so
MODULE_SRC := $(wildcard nginx/*.c nginx/*.h) nginx/config
NGX_CC_OPT := $(if $(SANITIZER),-fsanitize=$(SANITIZER) -fno-omit-frame-pointer) \
              $(if $(FAILPOINTS),-DIDEM_FAILPOINTS=1)
NGX_LD_OPT := $(if $(SANITIZER),-fsanitize=$(SANITIZER))

include examples/inquiries/inquiries.mk

PYTEST := /usr/bin/python3 -m pytest
E2E_ENV := IDEM_BUILD=$(BUILD) IDEM_SANITIZER=$(SANITIZER)

.PHONY: install deb all lib module deps run test-e2e test-valgrind FORCE test test-unit test-fuzz-replay fuzz bench bench-scale format layout-check \
        format-check clean
.DEFAULT_GOAL := all

all: lib module $(INQUIRIES_BIN) $(UNIT_BIN) $(STORE_BIN) $(PG_FAILURES_BIN) \
     $(REDIS_FAILURES_BIN) $(LMDB_WAL_BIN) \
     $(BENCH_BIN) $(SYNC_PROBE_BIN) \
     $(BUILD)/idemgate

module: $(MODULE)

# the tree is configured anew whenever the flags it is built with change
NGX_FLAGS := $(BUILD)/nginx-flags
$(NGX_FLAGS): FORCE
	@mkdir -p $(dir $@)
	@echo '$(NGX_CC_OPT) $(NGX_LD_OPT)' | cmp -s - $@ 2>/dev/null || \
	    echo '$(NGX_CC_OPT) $(NGX_LD_OPT)' >$@

$(NGX_TREE)/objs/Makefile: nginx/config $(NGX_FLAGS)
	rm -rf $(NGX_TREE)
	mkdir -p $(dir $(NGX_TREE))
	cp -r $(NGINX_DEV) $(NGX_TREE)
	cd $(NGX_TREE) && IDEM_LIBIDEM=$(abspath $(LIBIDEM)) bash -c \
	    '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT) -I$(abspath lib)" \
	    --with-ld-opt="$(NGX_LD_OPT)" \
	    --add-dynamic-module=$(abspath nginx)' >$(abspath $(BUILD))/nginx-configure.log

$(MODULE): $(NGX_TREE)/objs/Makefile $(MODULE_SRC) $(LIBIDEM)
	rm -f $(NGX_TREE)/objs/ngx_http_idempotency_module.so
	$(MAKE) --no-print-directory -C $(NGX_TREE) -f objs/Makefile modules
	cp $(NGX_TREE)/objs/ngx_http_idempotency_module.so $@.tmp
	mv -f $@.tmp $@

# The ready gateway: flags -> nginx configuration -> nginx in the foreground.
GATEWAY_SRC := $(wildcard gateway/*.c)
# It links libidem for what both share: store URL checks, error bodies.
$(BUILD)/idemgate: $(GATEWAY_SRC) $(wildcard gateway/*.h) $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(GATEWAY_SRC) $(LIBIDEM) $(LDLIBS)

lib: $(LIBIDEM)

deps:
	@sh scripts/deps.sh

$(BUILD)/%.o: %.c lib/idem.h $(wildcard lib/core/*.h lib/store/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBIDEM): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ilib/core -Ilib/store $(LDFLAGS) -o $@ $< $(LIBIDEM) \
	    $(LDLIBS) -lcmocka

# The gateway's nginx.conf writer, with the one gateway file it calls.
$(BUILD)/tests/test_confw: tests/unit/test_confw.c gateway/confw.c \
    gateway/util.c gateway/confw.h gateway/idemgate.h $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Igateway $(LDFLAGS) -o $@ tests/unit/test_confw.c \
	    gateway/confw.c gateway/util.c $(LIBIDEM) $(LDLIBS) -lcmocka

# The one store contract suite, compiled once per backend.
$(BUILD)/tests/store_contract_%: tests/store/contract.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DIDEM_TEST_BACKEND='"$*"' $(LDFLAGS) -o $@ $< \
	    $(LIBIDEM) $(LDLIBS) -lcmocka

# The PostgreSQL store's failure paths, beside a throwaway cluster.
$(PG_FAILURES_BIN): tests/store/postgres_failures.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBIDEM) $(LDLIBS) -lcmocka

# The Redis store against a server set up against it, beside a throwaway one.
$(REDIS_FAILURES_BIN): tests/store/redis_failures.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBIDEM) $(LDLIBS) -lcmocka

# The LMDB store's log across crashes and power losses.
$(LMDB_WAL_BIN): tests/store/lmdb_wal.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBIDEM) $(LDLIBS) -lcmocka

$(BENCH_BIN): bench/store_bench.c $(LIBIDEM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBIDEM) $(LDLIBS)

# one durable append (pwrite + fdatasync) alone: run.sh's bounds
$(SYNC_PROBE_BIN): bench/sync_probe.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -pthread

# Fuzz targets: built with clang's libFuzzer and ASan/UBSan; the _replay
# variants link a plain main() that runs every file of the seed corpus once.
FUZZ_LIB_SRC := $(LIB_SRC)
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Ilib $(PKG_CFLAGS) \
              -fsanitize=address,undefined -fno-sanitize-recover=all
# a target over the demo API's parser links that parser too
FUZZ_EXTRA_fuzz_demo_http := examples/inquiries/http.c
$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_LIB_SRC) lib/idem.h $(wildcard examples/inquiries/http.*)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_SRC) \
	    $(FUZZ_EXTRA_$*) $(PKG_LIBS) -pthread

$(BUILD)/fuzz/%_replay: fuzz/%.c fuzz/replay_main.c $(FUZZ_LIB_SRC) lib/idem.h $(wildcard examples/inquiries/http.*)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -o $@ $< fuzz/replay_main.c $(FUZZ_LIB_SRC) \
	    $(FUZZ_EXTRA_$*) $(PKG_LIBS) -pthread

run: deps
	@$(MAKE) --no-print-directory lib module $(INQUIRIES_BIN) $(BUILD)/idemgate
	@BUILD=$(BUILD) sh scripts/run-demo.sh

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory format-check layout-check test-unit \
	    test-fuzz-replay test-valgrind
	@$(MAKE) --no-print-directory SANITIZER=undefined test-unit
	@$(MAKE) --no-print-directory SANITIZER=address test-unit
	@$(MAKE) --no-print-directory FAILPOINTS=1 test-e2e
	@$(MAKE) --no-print-directory SANITIZER=address test-e2e

# the unit tests and the store contract suite under valgrind's memcheck
test-valgrind: $(UNIT_BIN) $(STORE_BIN) $(PG_FAILURES_BIN) $(REDIS_FAILURES_BIN) \
    $(LMDB_WAL_BIN)
	@set -e; for t in $(UNIT_BIN) $(STORE_BIN) $(LMDB_WAL_BIN); do \
	    echo "== valgrind $$t"; \
	    b=$${t##*/store_contract_}; \
	    $$(test "$$b" != "$$t" && test -x tests/servers/$$b.sh && \
	       echo tests/servers/$$b.sh) \
	    valgrind -q --error-exitcode=1 --leak-check=full \
	        --errors-for-leak-kinds=definite,indirect $$t >/dev/null; \
	done
	@echo "== valgrind $(PG_FAILURES_BIN)"; tests/servers/postgres.sh \
	    valgrind -q --error-exitcode=1 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect $(PG_FAILURES_BIN) >/dev/null
	@echo "== valgrind $(REDIS_FAILURES_BIN)"; tests/servers/redis.sh \
	    valgrind -q --error-exitcode=1 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect $(REDIS_FAILURES_BIN) \
	    >/dev/null
	@echo "valgrind: no errors, no leaks"


test-e2e: module $(INQUIRIES_BIN) $(BUILD)/idemgate
	$(E2E_ENV) $(PYTEST) -q -p no:cacheprovider tests/e2e

# A backend with a server script (tests/servers/BACKEND.sh) runs its
# contract suite beside a throwaway server that the script starts and stops.
STORE_SERVER = $$(test -x tests/servers/$$b.sh && echo tests/servers/$$b.sh)

test-unit: $(UNIT_BIN) $(STORE_BIN) $(PG_FAILURES_BIN) $(REDIS_FAILURES_BIN) \
    $(LMDB_WAL_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done
	@echo "== lmdb store log"; $(LMDB_WAL_BIN)
	@set -e; for b in $(STORE_BACKENDS); do \
	    echo "== store contract suite: backend $$b"; \
	    $(STORE_SERVER) $(BUILD)/tests/store_contract_$$b; done
	@echo "== postgres store failures"; \
	    tests/servers/postgres.sh $(PG_FAILURES_BIN)
	@echo "== redis store failures"; \
	    tests/servers/redis.sh $(REDIS_FAILURES_BIN)

test-fuzz-replay: $(FUZZ_REPLAY_BIN)
	@set -e; for t in $(FUZZ_REPLAY_BIN); do \
	    n=$$(basename $$t _replay); \
	    echo "== replay corpus fuzz/corpus/$${n#fuzz_}"; \
	    $$t fuzz/corpus/$${n#fuzz_}; done

fuzz: $(FUZZ_BIN)
	@set -e; for t in $(FUZZ_BIN); do n=$$(basename $$t); \
	    mkdir -p $(BUILD)/fuzz/corpus-$${n#fuzz_}; \
	    $$t -max_total_time=$(FUZZ_SECONDS) \
	        $(BUILD)/fuzz/corpus-$${n#fuzz_} fuzz/corpus/$${n#fuzz_}; done

# the store alone (pairs/s), then wrk against plain nginx and idemgate side
# by side (bench/run.sh: the table in bench/results/latest.md, the plot in
# bench/results/latest.png). BENCH_STORE=0 skips the store runs; run.sh's
# knobs: BENCH_SECONDS, BENCH_CONNS, BENCH_SCENARIOS, BENCH_MODES.
BENCH_STORE ?= 1
bench: $(BENCH_BIN) $(SYNC_PROBE_BIN) module
	@for t in wrk gnuplot taskset; do command -v $$t >/dev/null || \
	    { echo "bench: no $$t (make deps)" >&2; exit 1; }; done
ifneq ($(BENCH_STORE),0)
	$(BENCH_BIN)
	tests/servers/postgres.sh sh -c \
	    '$(BENCH_BIN) -u "$$IDEM_TEST_PG_URL?table=bench&pool=16"'
	tests/servers/redis.sh sh -c \
	    '$(BENCH_BIN) -u "$$IDEM_TEST_REDIS_URL?prefix=bench:"'
endif
	BUILD=$(BUILD) BENCH_COMMAND="make bench" bench/run.sh

# the store at scale: 10 million keys, pruning a million, a million
# requests (bench/scale.sh; SCALE_KEYS, SCALE_EXPIRED, SCALE_REQUESTS)
bench-scale: $(BENCH_BIN) module
	BUILD=$(BUILD) bench/scale.sh

# Installation the way Debian's nginx modules are installed: the module in
# nginx's module directory, its load snippet in modules-available, enabled
# by a link in modules-enabled. PREFIX covers the gateway, its man page and
# docs; the nginx and systemd paths are the distribution's.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/idemgate
SYSCONFDIR ?= /etc
NGINX_MODULES_DIR ?= /usr/lib/nginx/modules
NGINX_MODULES_AVAILABLE ?= /usr/share/nginx/modules-available
NGINX_MODULES_ENABLED ?= $(SYSCONFDIR)/nginx/modules-enabled
SYSTEMD_UNIT_DIR ?= /lib/systemd/system
VERSION   ?= 0.1.0
DEB_DIR   ?= $(BUILD)/deb

install: module $(BUILD)/idemgate
	install -D -m 755 $(BUILD)/idemgate $(DESTDIR)$(BINDIR)/idemgate
	install -D -m 644 $(MODULE) \
	    $(DESTDIR)$(NGINX_MODULES_DIR)/ngx_http_idempotency_module.so
	install -D -m 644 packaging/mod-http-idempotency.conf \
	    $(DESTDIR)$(NGINX_MODULES_AVAILABLE)/mod-http-idempotency.conf
	mkdir -p $(DESTDIR)$(NGINX_MODULES_ENABLED)
	ln -sf $(NGINX_MODULES_AVAILABLE)/mod-http-idempotency.conf \
	    $(DESTDIR)$(NGINX_MODULES_ENABLED)/50-mod-http-idempotency.conf
	install -D -m 644 docs/idemgate.1 $(DESTDIR)$(MANDIR)/man1/idemgate.1
	install -D -m 644 docs/ngx_http_idempotency_module.md \
	    $(DESTDIR)$(DOCDIR)/ngx_http_idempotency_module.md
	install -D -m 644 packaging/nginx-idempotency.conf \
	    $(DESTDIR)$(DOCDIR)/examples/nginx-idempotency.conf
	install -D -m 644 examples/grafana/idemgate-dashboard.json \
	    $(DESTDIR)$(DOCDIR)/examples/grafana-dashboard.json
	mkdir -p $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	sed 's|/usr/bin/idemgate|$(BINDIR)/idemgate|' packaging/idemgate.service \
	    >$(DESTDIR)$(SYSTEMD_UNIT_DIR)/idemgate.service
	chmod 644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/idemgate.service
	@# an existing /etc/idemgate.conf is the operator's: never replaced
	test -e $(DESTDIR)$(SYSCONFDIR)/idemgate.conf || \
	    install -D -m 644 packaging/idemgate.conf \
	        $(DESTDIR)$(SYSCONFDIR)/idemgate.conf

deb: module $(BUILD)/idemgate
	rm -rf $(BUILD)/deb-stage
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD))/deb-stage \
	    PREFIX=/usr SYSCONFDIR=/etc
	sh scripts/make-deb.sh $(abspath $(BUILD))/deb-stage $(abspath $(DEB_DIR)) \
	    $(VERSION)
	rm -rf $(BUILD)/deb-stage

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# the house rules: no include circle, one header per nginx/ file with its
# exports, no long function without a reason (scripts/check-layout.py)
layout-check:
	/usr/bin/python3 scripts/check-layout.py

format-check:
	clang-format --dry-run -Werror $$(git ls-files 'lib/*.c' 'lib/*.h' \
	    'tests/*.c' 'fuzz/*.c' 'bench/*.c' 'gateway/*.[ch]' \
	    'examples/*.[ch]')

clean:
	rm -rf build build-test build-address build-undefined
