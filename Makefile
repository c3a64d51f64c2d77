# dotproxyd: GNU make, on Linux (Debian) or OpenBSD (gmake)

PREFIX?=	/usr/local
SBINDIR?=	$(PREFIX)/sbin
# dotproxyd finds dotproxyd-upstream in ../libexec from its own directory
LIBEXECDIR?=	$(PREFIX)/libexec
MANDIR?=	$(PREFIX)/share/man
EXAMPLEDIR?=	$(PREFIX)/share/examples/dotproxyd
DESTDIR?=
ifeq ($(SANITIZE),1)
BUILD?=		build/asan
endif
BUILD?=		build

CC?=		cc
ifeq ($(origin YACC),default)
YACC=		bison -y -Wno-yacc
endif
PKG_CONFIG?=	pkg-config
UNAME_S:=	$(shell uname -s)
ifeq ($(UNAME_S),OpenBSD)
# libtls, libcrypto and libevent are in base; pledge(2) and unveil(2)
PKG_CFLAGS?=
PKG_LIBS?=	-levent
TLS_LIBS?=	-ltls -lssl -lcrypto
OS_LIBS=
SANDBOX_SRCS=	sandbox.c sandbox-openbsd.c
NETWATCH_SRCS=	netwatch.c netwatch-openbsd.c
else
PKGS=		libseccomp libcap-ng libevent libbsd-overlay libmd
TLS_PKGS=	libtls libcrypto
PKG_CFLAGS?=	$(shell $(PKG_CONFIG) --cflags $(PKGS) $(TLS_PKGS))
PKG_LIBS?=	$(shell $(PKG_CONFIG) --libs $(PKGS))
TLS_LIBS?=	$(shell $(PKG_CONFIG) --libs $(TLS_PKGS))
OS_LIBS=	-lresolv
SANDBOX_SRCS=	sandbox.c sandbox-linux.c sandbox-seccomp.c portholder-linux.c
NETWATCH_SRCS=	netwatch.c netwatch-linux.c
endif

WARN=		-Wall -Wextra -Werror -Wshadow -Wpointer-arith \
		-Wmissing-prototypes -Wstrict-prototypes -Wformat=2
CFLAGS?=	-O2 -g
CPPFLAGS+=	-D_GNU_SOURCE -Iinclude -I$(BUILD)
ALL_CFLAGS=	$(CFLAGS) $(WARN) $(PKG_CFLAGS) -fstack-protector-strong \
		-D_FORTIFY_SOURCE=2 -fPIE
LDFLAGS+=	-pie -Wl,-z,relro,-z,now
LIBS=		$(PKG_LIBS) $(OS_LIBS)

# dnstap output (src/dnstap.c): protobuf-c for the records, libfstrm for
# Frame Streams control frames, the C code generated from src/dnstap.proto
# by protoc-c.  Linked into the daemon (its children write dnstap) and
# the unit tests.  Expanded only where used.
PROTOC_C?=	protoc-c
DNSTAP_PKGS=	libprotobuf-c libfstrm
DNSTAP_CFLAGS=	$(shell $(PKG_CONFIG) --cflags $(DNSTAP_PKGS))
DNSTAP_LIBS=	$(shell $(PKG_CONFIG) --libs $(DNSTAP_PKGS))
DNSTAP_OBJS=	$(BUILD)/dnstap.o $(BUILD)/dnstap.pb-c.o

ifeq ($(SANITIZE),1)
ALL_CFLAGS+=	-fsanitize=address,undefined -fno-omit-frame-pointer -O1
LDFLAGS+=	-fsanitize=address,undefined
CPPFLAGS+=	-DSANITIZE
SANITIZER_POLICY=	policy/sanitizer.policy
# the daemon's own sanitizer options; the tests link without them
SANITIZER_SRCS=	sanitizer.c
endif
ifeq ($(SANDBOX_DEBUG),1)
CPPFLAGS+=	-DSANDBOX_DEBUG
endif

COMMON=		imsg.c dns.c log.c config.c printconf.c acl.c cache.c \
		ratelimit.c audit.c chan.c rtt.c sip.c http.c sdnotify.c qid.c
# Two programs: dotproxyd (the parent and the listener) and
# dotproxyd-upstream (the upstream process), the only one that links
# libtls and libcrypto.
DAEMON_SRCS=	dotproxyd.c listener.c querylog.c tcpclient.c proc.c \
		control.c tap.c $(SANDBOX_SRCS) $(NETWATCH_SRCS) \
		$(SANITIZER_SRCS) $(COMMON)
DAEMON_OBJS=	$(DAEMON_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/parse.o \
		$(DNSTAP_OBJS)
UPSTREAM_SRCS=	upmain.c upstream.c upconn.c anchors.c proc.c tap.c \
		$(SANDBOX_SRCS) $(SANITIZER_SRCS) $(COMMON)
UPSTREAM_OBJS=	$(UPSTREAM_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/parse.o \
		$(DNSTAP_OBJS)
CTL_SRCS=	dotproxyctl.c
CTL_OBJS=	$(CTL_SRCS:%.c=$(BUILD)/%.o)
HDRS=		$(wildcard include/*.h)

UNIT_TESTS=	$(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
UNIT_OBJS=	$(COMMON:%.c=$(BUILD)/%.o) $(BUILD)/parse.o $(BUILD)/proc.o \
		$(BUILD)/tap.o $(BUILD)/anchors.o \
		$(SANDBOX_SRCS:%.c=$(BUILD)/%.o) $(NETWATCH_SRCS:%.c=$(BUILD)/%.o) \
		$(DNSTAP_OBJS)

.PHONY: all clean check unit integration deps run install uninstall bench fuzz \
		valgrind

all: $(BUILD)/dotproxyd $(BUILD)/dotproxyd-upstream $(BUILD)/dotproxyctl \
		$(DNSTAP_OBJS)

$(BUILD) $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/%.o: src/%.c $(HDRS) | $(BUILD)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

POLICIES=	policy/listener.policy policy/upstream.policy policy/parent.policy

$(BUILD)/policy.h: $(POLICIES) $(SANITIZER_POLICY) policy/policy2c.awk | $(BUILD)
	rm -f $@.tmp
	for p in listener upstream parent; do \
	    awk -v name=$$p -v out=$@.tmp -f policy/policy2c.awk \
	    policy/$$p.policy $(SANITIZER_POLICY) || exit 1; done
	mv $@.tmp $@

$(BUILD)/sandbox-seccomp.o: $(BUILD)/policy.h

$(BUILD)/dnstap.pb-c.c $(BUILD)/dnstap.pb-c.h &: src/dnstap.proto | $(BUILD)
	$(PROTOC_C) --proto_path=src --c_out=$(BUILD) src/dnstap.proto

$(BUILD)/dnstap.pb-c.o: $(BUILD)/dnstap.pb-c.c $(BUILD)/dnstap.pb-c.h
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(DNSTAP_CFLAGS) -c $< -o $@

$(BUILD)/dnstap.o: src/dnstap.c $(BUILD)/dnstap.pb-c.h $(HDRS) | $(BUILD)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(DNSTAP_CFLAGS) -c $< -o $@

$(BUILD)/parse.c: src/parse.y | $(BUILD)
	$(YACC) -o $@ src/parse.y

$(BUILD)/parse.o: $(BUILD)/parse.c $(HDRS)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -c $< -o $@

# the benchmark's floor for UDP cache hits (Linux: epoll, recvmmsg)
$(BUILD)/tests/udpecho: tests/bench/udpecho.c | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -o $@ tests/bench/udpecho.c

$(BUILD)/dotproxyd: $(DAEMON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $(DAEMON_OBJS) $(LIBS) $(DNSTAP_LIBS)

$(BUILD)/dotproxyd-upstream: $(UPSTREAM_OBJS)
	$(CC) $(LDFLAGS) -o $@ $(UPSTREAM_OBJS) $(LIBS) $(TLS_LIBS) \
	    $(DNSTAP_LIBS)

$(BUILD)/dotproxyctl: $(CTL_OBJS)
	$(CC) $(LDFLAGS) -o $@ $(CTL_OBJS) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_OBJS) tests/unit/tap.h $(HDRS) | $(BUILD)/tests
	$(CC) $(CPPFLAGS) -Itests/unit $(ALL_CFLAGS) $(DNSTAP_CFLAGS) \
	    -Wno-missing-prototypes \
	    -o $@ $< $(UNIT_OBJS) $(LDFLAGS) $(LIBS) $(TLS_LIBS) \
	    $(DNSTAP_LIBS)

deps:
	sh contrib/deps.sh $(DEPS)

unit: all $(UNIT_TESTS)
	prove -e '' $(UNIT_TESTS)

integration: all
	$(TEST_ENV) prove -e '' tests/integration/*.t

# The whole suite, in one prove run so it ends in one summary.  With
# SANITIZE=1 everything is built with ASan and UBSan into build/asan and
# the integration tests run that daemon.
TEST_ENV=	DOTPROXYD=$(CURDIR)/$(BUILD)/dotproxyd \
		DOTPROXYCTL=$(CURDIR)/$(BUILD)/dotproxyctl
check:
	sh contrib/deps.sh test
	$(MAKE) all $(UNIT_TESTS)
	$(TEST_ENV) prove -e '' $(UNIT_TESTS) tests/integration/*.t

# The unit tests under valgrind's memcheck: no invalid access, no leak.
# (test_sandbox loads seccomp filters, which valgrind cannot run under;
# the daemon's children, confined, cannot run under valgrind either.)
VALGRIND_TESTS=	$(filter-out %/test_sandbox,$(UNIT_TESTS))
valgrind: all $(VALGRIND_TESTS)
	for t in $(VALGRIND_TESTS); do \
	    valgrind -q --error-exitcode=9 --leak-check=full \
	    --errors-for-leak-kinds=definite $$t >/dev/null || exit 1; \
	    echo "$$t: no memcheck errors"; done

# dnsperf against dotproxyd and its peers on one local upstream
bench: all $(BUILD)/tests/udpecho
	sh contrib/deps.sh test
	bash tests/bench/bench.sh

# libFuzzer targets, each for FUZZTIME seconds
FUZZTIME?=	120
fuzz:
	sh contrib/deps.sh test
	$(MAKE) -C tests/fuzz FUZZTIME=$(FUZZTIME)

run:
	sh contrib/deps.sh run
	$(MAKE) all
	./$(BUILD)/dotproxyd -d

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBEXECDIR) \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(EXAMPLEDIR)
	install -m 0555 $(BUILD)/dotproxyd $(BUILD)/dotproxyctl $(DESTDIR)$(SBINDIR)
	install -m 0555 $(BUILD)/dotproxyd-upstream $(DESTDIR)$(LIBEXECDIR)
	install -m 0444 src/dotproxyd.8 src/dotproxyctl.8 \
	    src/dotproxyd-upstream.8 $(DESTDIR)$(MANDIR)/man8
	install -m 0444 src/dotproxyd.conf.5 $(DESTDIR)$(MANDIR)/man5
	install -m 0444 contrib/dotproxyd.conf.example $(DESTDIR)$(EXAMPLEDIR)/dotproxyd.conf

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/dotproxyd $(DESTDIR)$(SBINDIR)/dotproxyctl
	rm -f $(DESTDIR)$(LIBEXECDIR)/dotproxyd-upstream
	rm -f $(DESTDIR)$(MANDIR)/man8/dotproxyd.8 $(DESTDIR)$(MANDIR)/man8/dotproxyctl.8
	rm -f $(DESTDIR)$(MANDIR)/man8/dotproxyd-upstream.8
	rm -f $(DESTDIR)$(MANDIR)/man5/dotproxyd.conf.5
	rm -rf $(DESTDIR)$(EXAMPLEDIR)

clean:
	rm -rf $(BUILD)
