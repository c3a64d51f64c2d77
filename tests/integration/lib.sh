# shellcheck shell=bash
# Integration test library for dotproxyd, sourced by every *.t script.
#
# It provides a small TAP producer, a per-test temporary directory, free
# loopback ports, throwaway certificates, an unbound DNS-over-TLS upstream
# on loopback and helpers to start, query and stop dotproxyd.  Everything a
# test starts is stopped when the test exits, however it exits.
#
# Environment:
#   DOTPROXYD   the binary under test (default: $TOP/build/dotproxyd)
#   UNBOUND     the unbound binary (default: unbound from PATH)
#   KDIG        the kdig binary (default: kdig from PATH)
#   T_TIMEOUT   seconds after which a test script is aborted (default 300)
#   T_KEEP      if set to 1, keep the temporary directory for inspection
#
# The scripts are meant to run one at a time (plain `prove`): a test may
# create the _dotproxyd user and /var/empty and removes them again when it
# is the one that created them.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/common.sh
. "$TOP/tests/common.sh"
DOTPROXYD=${DOTPROXYD:-$TOP/build/dotproxyd}
UNBOUND=${UNBOUND:-unbound}
KDIG=${KDIG:-kdig}
T_TIMEOUT=${T_TIMEOUT:-300}
T_KEEP=${T_KEEP:-0}
export LC_ALL=C

# Name of the system user and the chroot directory the daemon is
# configured with in the tests.
D_USER=_dotproxyd
D_CHROOT=/var/empty

# ---------------------------------------------------------------------
# TAP

_t_planned=0		# number of tests announced by plan, 0 if none
_t_count=0		# tests run so far
_t_failed=0		# tests failed so far (TODO tests excluded)
_t_skipped_all=0
_t_todo=""		# when set, the next results are TODO with this reason

# plan N: announce the number of tests.
plan()
{
	_t_planned=$1
	echo "1..$1"
}

# skip_all REASON: skip the whole script.
skip_all()
{
	_t_skipped_all=1
	echo "1..0 # SKIP $*"
	exit 0
}

# bail_out REASON: stop the whole test run.
bail_out()
{
	echo "Bail out! $*"
	exit 255
}

# diag TEXT...: a diagnostic line (or several) on stderr; on stdout
# inside a TODO block, as a TODO failure is expected.
diag()
{
	local line fd=2
	[ -n "$_t_todo" ] && fd=1
	printf '%s\n' "$*" | while IFS= read -r line; do
		printf '# %s\n' "$line" >&"$fd"
	done
}

# note TEXT...: a comment line (or several) on stdout.
note()
{
	local line
	printf '%s\n' "$*" | while IFS= read -r line; do
		printf '# %s\n' "$line"
	done
}

# diag_file FILE [MAXLINES]: show the end of a file as diagnostics.
diag_file()
{
	local f=$1 max=${2:-60}
	if [ -s "$f" ]; then
		diag "--- last lines of ${f##*/} ---"
		diag "$(tail -n "$max" "$f")"
		diag "--- end of ${f##*/} ---"
	else
		diag "(${f##*/} is empty or missing)"
	fi
}

# _t_result PASSED(0|1) DESC: print one result line.
_t_result()
{
	local passed=$1 desc=$2 directive=""

	_t_count=$((_t_count + 1))
	# '#' would start a directive; keep descriptions plain.
	desc=${desc//#/\\#}
	if [ -n "$_t_todo" ]; then
		directive=" # TODO $_t_todo"
	fi
	if [ "$passed" -eq 1 ]; then
		echo "ok $_t_count - $desc$directive"
		return 0
	fi
	echo "not ok $_t_count - $desc$directive"
	if [ -z "$_t_todo" ]; then
		_t_failed=$((_t_failed + 1))
	fi
	diag "  Failed${_t_todo:+ (TODO)} test '$desc'"
	return 1
}

# pass DESC / fail DESC
pass() { _t_result 1 "$1"; }
fail() { _t_result 0 "$1"; }

# ok DESC CMD [ARGS...]: run the command; the test passes if it exits 0.
# On failure its output is shown as diagnostics.
ok()
{
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ]; then
		_t_result 1 "$desc"
		return 0
	fi
	_t_result 0 "$desc"
	diag "  command: $*"
	diag "  exit status: $rc"
	[ -n "$out" ] && diag "$out"
	return 1
}

# not_ok DESC CMD [ARGS...]: the test passes if the command fails.
not_ok()
{
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -ne 0 ]; then
		_t_result 1 "$desc"
		return 0
	fi
	_t_result 0 "$desc"
	diag "  command unexpectedly succeeded: $*"
	[ -n "$out" ] && diag "$out"
	return 1
}

# is GOT EXPECTED DESC: string equality.
is()
{
	if [ "$1" = "$2" ]; then
		_t_result 1 "$3"
		return 0
	fi
	_t_result 0 "$3"
	diag "         got: '$1'"
	diag "    expected: '$2'"
	return 1
}

# isnt GOT UNEXPECTED DESC
isnt()
{
	if [ "$1" != "$2" ]; then
		_t_result 1 "$3"
		return 0
	fi
	_t_result 0 "$3"
	diag "         got: '$1'"
	diag "    expected: anything else"
	return 1
}

# like GOT ERE DESC: GOT matches the extended regular expression.
like()
{
	if printf '%s\n' "$1" | grep -Eq -- "$2"; then
		_t_result 1 "$3"
		return 0
	fi
	_t_result 0 "$3"
	diag "    '$1'"
	diag "      doesn't match '$2'"
	return 1
}

# unlike GOT ERE DESC
unlike()
{
	if ! printf '%s\n' "$1" | grep -Eq -- "$2"; then
		_t_result 1 "$3"
		return 0
	fi
	_t_result 0 "$3"
	diag "    '$1'"
	diag "          matches '$2'"
	return 1
}

# skip N REASON: record N skipped tests.
skip()
{
	local i
	for ((i = 0; i < $1; i++)); do
		_t_count=$((_t_count + 1))
		echo "ok $_t_count # skip $2"
	done
}

# todo REASON / end_todo: results in between are TODO tests.
todo() { _t_todo=$*; }
end_todo() { _t_todo=""; }

# done_testing: print the plan if none was given; called at exit anyway.
done_testing()
{
	if [ "$_t_planned" -eq 0 ]; then
		_t_planned=$_t_count
		echo "1..$_t_count"
	fi
}

# Exit status, as Test::More does it: number of failures (at most 254),
# 255 when the plan was not followed.
_t_summary()
{
	local status=0

	[ "$_t_skipped_all" -eq 1 ] && return 0
	if [ "$_t_planned" -eq 0 ]; then
		if [ "$_t_count" -eq 0 ]; then
			diag "No tests run!"
			return 255
		fi
		echo "1..$_t_count"
		_t_planned=$_t_count
	fi
	if [ "$_t_failed" -gt 0 ]; then
		diag "Looks like you failed $_t_failed test(s) of $_t_count."
		status=$((_t_failed > 254 ? 254 : _t_failed))
	fi
	if [ "$_t_count" -ne "$_t_planned" ]; then
		diag "Looks like you planned $_t_planned test(s) but ran $_t_count."
		status=255
	fi
	# A sanitizer build reports memory and undefined-behaviour errors on
	# the daemon's stderr: any such report fails the script.
	if [ -n "${D_LOG:-}" ] && [ -f "$D_LOG" ] && grep -qE \
	    'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
	    "$D_LOG"; then
		diag "sanitizer reports in $D_LOG:"
		grep -E -A12 'ERROR: AddressSanitizer|runtime error:' "$D_LOG" |
		    head -40 | sed 's/^/# /'
		[ "$status" -eq 0 ] && status=254
	fi
	return "$status"
}

# ---------------------------------------------------------------------
# Temporary directory, processes and cleanup

T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dotproxyd-test.XXXXXX") ||
	{ echo "Bail out! mktemp failed"; exit 255; }
chmod 0755 "$T_DIR"	# readable by the unprivileged users of a test

_t_pids=()		# process group leaders started by this test
_t_watchdog=""

# spawn LOGFILE CMD [ARGS...]: start CMD in the background in a process
# group of its own, output to LOGFILE; the pid is left in SPAWNED_PID.
spawn()
{
	local log=$1
	shift
	# Without job control a background child is not a group leader, so
	# setsid(1) does not fork: the pid is that of the command itself.
	setsid "$@" </dev/null >"$log" 2>&1 &
	SPAWNED_PID=$!
	_t_track "$SPAWNED_PID"
}

# _t_track PID: remember a process to stop at exit.  The list is kept in
# a file too, so that processes started in a subshell are not forgotten.
# Still, start_unbound and start_dotproxyd set variables (U_PID, D_PID,
# ...) and so belong in the main shell, not in $(...) or `ok`.
_t_track()
{
	_t_pids+=("$1")
	echo "$1" >>"$T_DIR/.pids"
}





_t_cleanup()
{
	local status=$? p

	trap - EXIT INT TERM HUP
	# Only the test script itself cleans up, not a child of it that
	# ran into an error (an unset variable under set -u, say).
	[ "${BASHPID:-$$}" = "$$" ] || exit "$status"
	[ -r "$T_DIR/.pids" ] && mapfile -t -O "${#_t_pids[@]}" _t_pids <"$T_DIR/.pids"
	for p in "${_t_pids[@]}"; do
		alive "$p" && kill_tree "$p"
	done
	if [ -n "$_t_watchdog" ]; then
		kill -KILL "$_t_watchdog" 2>/dev/null
		wait "$_t_watchdog" 2>/dev/null
	fi
	if [ "$created_user" -eq 1 ]; then
		userdel "$D_USER" >/dev/null 2>&1 ||
		    diag "could not remove user $D_USER"
		getent group "$D_USER" >/dev/null 2>&1 &&
		    groupdel "$D_USER" >/dev/null 2>&1
	fi
	if [ "$created_chroot" -eq 1 ]; then
		rmdir "$D_CHROOT" 2>/dev/null ||
		    diag "could not remove $D_CHROOT"
	fi
	_t_summary
	local rc=$?
	if [ "$T_KEEP" = 1 ]; then
		diag "keeping $T_DIR"
	else
		rm -rf "$T_DIR"
	fi
	# An early exit with an error (for example a bail out) keeps its status.
	[ "$rc" -eq 0 ] && rc=$status
	exit "$rc"
}
trap _t_cleanup EXIT
trap 'diag "interrupted"; exit 255' INT HUP
trap 'diag "terminated (timeout of ${T_TIMEOUT}s?)"; exit 255' TERM

# Abort the script after T_TIMEOUT seconds, whatever it is doing.
# One process, no grandchildren, so it is reaped when killed.
perl -e 'sleep $ARGV[0]; kill "TERM", $ARGV[1]' "$T_TIMEOUT" $$ \
    </dev/null >/dev/null 2>&1 &
_t_watchdog=$!

# ---------------------------------------------------------------------
# Preconditions

# need_root: skip the script unless running as root.
need_root()
{
	[ "$(id -u)" -eq 0 ] || skip_all "needs root"
}

# need_cmd CMD...: skip the script unless every command exists.
need_cmd()
{
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip_all "$c not found"
	done
}

# need_dotproxyd: skip the script unless the daemon has been built.
need_dotproxyd()
{
	[ -x "$DOTPROXYD" ] || skip_all "$DOTPROXYD not built"
}


# ---------------------------------------------------------------------
# Certificates (make_ca and free_port are in tests/common.sh)

# spki_pin CERT: the base64 SHA-256 of the certificate's public key
# (SubjectPublicKeyInfo, DER), as used by `pin sha256 "..."`.
spki_pin()
{
	openssl x509 -in "$1" -noout -pubkey |
	    openssl pkey -pubin -outform der |
	    openssl dgst -sha256 -binary |
	    openssl base64 -A
	echo
}

# ---------------------------------------------------------------------
# unbound, the DNS-over-TLS upstream

U_PID=""
U_PORT=""
U_DIR=""

# Number of TXT records of big.example.test and their length: together
# more than 1232 bytes on the wire (about 2.6 kB).
BIG_TXT_COUNT=12
BIG_TXT_LEN=200

# With UNBOUND_HUGE_TXT=N, huge.example.test has N TXT records of 250
# bytes (230 make an answer of about 60 kB, near the largest over TCP).
UNBOUND_HUGE_TXT=${UNBOUND_HUGE_TXT:-0}

# start_unbound DIR PORT [NAME]: serve DNS over TLS on 127.0.0.1@PORT
# with the certificate make_ca left in DIR (NAME defaults to DIR/name).
# Sets U_PID, U_PORT and U_DIR.  Waits until unbound answers.
# UNBOUND_EXTRA, if set, is one more line for its server clause, and
# UNBOUND_OPENSSL_CONF an OpenSSL config file for it (OPENSSL_CONF).
start_unbound()
{
	local dir=$1 port=$2 name=${3:-} conf i txt rr env
	[ -n "$name" ] || name=$(cat "$dir/name")
	conf=$dir/unbound.conf
	txt=$(printf '%*s' "$BIG_TXT_LEN" '' | tr ' ' x)

	{
		unbound_server "$dir" "$port"
		cat <<EOF
	log-time-ascii: yes
	tls-port: $port
	tls-service-key: "$dir/server.key"
	tls-service-pem: "$dir/server.pem"
	incoming-num-tcp: 64
	num-threads: 1
	minimal-responses: no
	rrset-roundrobin: no
	local-zone: "example.test." static
	local-data: "example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300"
	local-data: "example.test. 300 IN NS ns.example.test."
	local-data: "ns.example.test. 300 IN A 192.0.2.53"
	local-data: "a.example.test. 300 IN A 192.0.2.1"
	local-data: "a.example.test. 300 IN AAAA 2001:db8::1"
	local-data: "b.example.test. 300 IN A 192.0.2.2"
	local-data: "b.example.test. 300 IN AAAA 2001:db8::2"
	local-data: "c.example.test. 300 IN A 192.0.2.3"
	local-data: "multi.example.test. 300 IN A 192.0.2.11"
	local-data: "multi.example.test. 300 IN A 192.0.2.12"
	local-data: "multi.example.test. 300 IN A 192.0.2.13"
	local-data: 'text.example.test. 300 IN TXT "hello dotproxyd"'
EOF
		for ((i = 1; i <= BIG_TXT_COUNT; i++)); do
			rr=$(printf 'big.example.test. 300 IN TXT "%02d%s"' \
			    "$i" "${txt:2}")
			printf '\tlocal-data: '\''%s'\''\n' "$rr"
		done
		txt=$(printf '%*s' 247 '' | tr ' ' y)
		for ((i = 1; i <= UNBOUND_HUGE_TXT; i++)); do
			printf '\tlocal-data: '\''huge.example.test. 300 IN TXT "%03d%s"'\''\n' \
			    "$i" "$txt"
		done
		[ -z "${UNBOUND_EXTRA:-}" ] || printf '\t%s\n' "$UNBOUND_EXTRA"
		cat <<EOF

remote-control:
	control-enable: no
EOF
	} >"$conf"

	env=()
	[ -z "${UNBOUND_OPENSSL_CONF:-}" ] ||
	    env=(OPENSSL_CONF="$UNBOUND_OPENSSL_CONF")
	spawn "$dir/unbound.log" env "${env[@]}" "$UNBOUND" -d -c "$conf"
	U_PID=$SPAWNED_PID
	# shellcheck disable=SC2034 # for the tests
	U_PORT=$port
	# shellcheck disable=SC2034 # for the tests
	U_DIR=$dir

	wait_dot "$U_PID" "$port" "$dir/ca.pem" "$name" a.example.test &&
	    return 0
	if alive "$U_PID"; then
		diag "unbound did not answer over TLS on 127.0.0.1@$port"
	else
		diag "unbound exited during start-up"
	fi
	diag_file "$dir/unbound.log"
	return 1
}

# stop_unbound: stop the unbound started last.
stop_unbound()
{
	[ -n "$U_PID" ] || return 0
	alive "$U_PID" && kill_tree "$U_PID"
	U_PID=""
}

# ---------------------------------------------------------------------
# dotproxyd

D_PID=""
D_PORT=""
D_LOG=""

# conf_listen_port CONF: the port of the first `listen on` statement.
conf_listen_port()
{
	sed -n -E 's/^[[:space:]]*listen[[:space:]]+on[[:space:]]+[^[:space:]]+[[:space:]]+port[[:space:]]+([0-9]+).*/\1/p' \
	    "$1" | head -n 1
}

# conf_listen_addr CONF: the address of the first `listen on` statement.
conf_listen_addr()
{
	sed -n -E 's/^[[:space:]]*listen[[:space:]]+on[[:space:]]+([^[:space:]]+).*/\1/p' \
	    "$1" | head -n 1
}

# start_dotproxyd CONF [ARGS...]: run `dotproxyd -d -f CONF ARGS` in the
# background, stderr to $T_DIR/dotproxyd.log, and wait until it answers a
# query (any answer: an upstream that fails gives SERVFAIL).  Sets D_PID,
# D_PORT (the port of the first listen statement) and D_LOG.  Each
# query waits D_READY_TIME seconds (default 1) for its answer: more for
# an upstream list that can be slow to answer the first query.
start_dotproxyd()
{
	local conf=$1 addr i deadline
	shift
	D_PORT=$(conf_listen_port "$conf")
	addr=$(conf_listen_addr "$conf")
	[ -n "$D_PORT" ] || D_PORT=53
	[ -n "$addr" ] || addr=127.0.0.1
	D_LOG=$T_DIR/dotproxyd.log
	# Each start appends, so that a log survives a restart.
	echo "=== $(date +%T) start $DOTPROXYD -d -f $conf $*" >>"$D_LOG"

	setsid "$DOTPROXYD" -d -f "$conf" "$@" </dev/null >>"$D_LOG" 2>&1 &
	D_PID=$!
	_t_track "$D_PID"

	deadline=$((SECONDS + 10))
	for ((i = 0; i < 100 && SECONDS < deadline; i++)); do
		if ! alive "$D_PID"; then
			wait "$D_PID" 2>/dev/null
			diag "dotproxyd exited during start-up (status $?)"
			diag_file "$D_LOG"
			return 1
		fi
		if "$KDIG" +time="${D_READY_TIME:-1}" +retry=0 @"$addr" \
		    -p "$D_PORT" a.example.test A 2>/dev/null |
		    grep -q -- '->>HEADER<<-'; then
			return 0
		fi
		sleep 0.1
	done
	diag "dotproxyd did not answer on $addr port $D_PORT"
	diag_file "$D_LOG"
	return 1
}

# make_conf NAME [OPTION...] [LINE...]: write the config file
# $T_DIR/NAME.conf, left in CONF_FILE: listen on 127.0.0.1 port PORT,
# the upstreams, tls ca, allow from, user D_USER, chroot D_CHROOT, the
# control socket CTL_SOCK and the audit log AUDIT when they are set,
# then each LINE (one statement or several, such as "cache off",
# "cache serve-stale yes max-age 3600" or "log queries"; an empty LINE
# is left out).  OPTIONs, before the LINEs:
#   -u PORT          upstream 127.0.0.1 port PORT name "dot.test"; one
#                    -u for each upstream, in their order
#   -u 'PORT OPTS'   the same with OPTS for name "dot.test" (another
#                    name, a pin)
#   -a NET           allow from NET, one -a for each (127.0.0.0/8 when
#                    there is none)
#   -l ADDR          listen on ADDR too, on the same port
#   -c CAFILE        tls ca CAFILE (default $T_DIR/ca/ca.pem)
# PORT, the listen port, is NAME's own: a free port chosen the first
# time NAME is written and kept each time it is written again, so a
# daemon reloaded after a rewrite keeps listening where it did.  The
# file is replaced in one rename, never read half written.  It sets
# variables: call it in the main shell, not in $(...).
declare -A _conf_ports
make_conf()
{
	local name=$1 ca=$T_DIR/ca/ca.pem u opts line
	local -a listen=() ups=() allow=()
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		-l) listen+=("$2") ;;
		-u) ups+=("$2") ;;
		-c) ca=$2 ;;
		-a) allow+=("$2") ;;
		*) break ;;
		esac
		shift 2
	done
	[ "${#allow[@]}" -gt 0 ] || allow=(127.0.0.0/8)
	[ -n "${_conf_ports[$name]:-}" ] || _conf_ports[$name]=$(free_port)
	PORT=${_conf_ports[$name]}
	CONF_FILE=$T_DIR/$name.conf
	{
		echo "listen on 127.0.0.1 port $PORT"
		for line in "${listen[@]}"; do
			echo "listen on $line port $PORT"
		done
		for u in "${ups[@]}"; do
			case $u in
			*" "*) opts=${u#* } ;;
			*) opts='name "dot.test"' ;;
			esac
			echo "upstream 127.0.0.1 port ${u%% *} $opts"
		done
		echo "tls ca \"$ca\""
		for line in "${allow[@]}"; do
			echo "allow from $line"
		done
		echo "user $D_USER"
		echo "chroot \"$D_CHROOT\""
		[ -z "${CTL_SOCK:-}" ] || echo "control socket \"$CTL_SOCK\""
		[ -z "${AUDIT:-}" ] || echo "audit log \"$AUDIT\""
		for line in "$@"; do
			[ -z "$line" ] || printf '%s\n' "$line"
		done
	} >"$CONF_FILE.new" && mv -f "$CONF_FILE.new" "$CONF_FILE"
}

# start_conf NAME [-d DESC] [OPTION...] [LINE...]: make_conf, then start
# a daemon with it; a result, DESC (default "NAME: dotproxyd starts"),
# and a bail-out if it fails.
start_conf()
{
	local name=$1 desc="$1: dotproxyd starts"
	shift
	if [ "${1:-}" = -d ]; then
		desc=$2
		shift 2
	fi
	make_conf "$name" "$@"
	if start_dotproxyd "$CONF_FILE"; then
		pass "$desc"
	else
		fail "$desc"
		bail_out "cannot go on without the daemon"
	fi
}

# stop_dotproxyd: SIGTERM the daemon, wait at most 10 s for it to exit
# and return its exit status (124 if it had to be killed).
stop_dotproxyd()
{
	local pid=$D_PID rc
	[ -n "$pid" ] || return 0
	D_PID=""
	kill -TERM "$pid" 2>/dev/null
	if wait_gone 100 "$pid"; then
		wait "$pid" 2>/dev/null
		return $?
	fi
	diag "dotproxyd did not exit within 10 s of SIGTERM"
	kill_tree "$pid"
	rc=124
	return $rc
}

# last_log: the daemon's log since its last start, without the marker.
last_log()
{
	awk '/^=== / { buf = ""; next } { buf = buf $0 "\n" }
	    END { printf "%s", buf }' \
	    "$D_LOG"
}

# log_wait ERE [TENTHS]: wait (default at most 3 s) for a line matching
# ERE in the daemon's log since its last start; on failure show the log.
log_wait()
{
	local i n=${2:-30}
	for ((i = 0; i < n; i++)); do
		last_log | grep -Eq -- "$1" && return 0
		sleep 0.1
	done
	echo "no line matching '$1' in the log:"
	last_log | tail -n 20
	return 1
}

# children PID: the direct children of PID, sorted, one a line.
children()
{
	pgrep -P "$1" 2>/dev/null | sort -n
}

# ---------------------------------------------------------------------
# Queries

# q [KDIG ARGS...]: query the daemon on 127.0.0.1 (Q_ADDR) port D_PORT.
q()
{
	q_at "${Q_ADDR:-127.0.0.1}" "$@"
}

# q_at ADDR [KDIG ARGS...]: query the daemon on ADDR port D_PORT.
q_at()
{
	local addr=$1
	shift
	timeout -k 1 20 "$KDIG" +time=2 +retry=0 @"$addr" -p "$D_PORT" "$@" 2>&1
}

# status_of: the first rcode (NOERROR, NXDOMAIN, SERVFAIL, ...) in kdig
# output read from stdin; "none" if there was no answer.
status_of()
{
	local s
	s=$(sed -n -E 's/.*->>HEADER<<-.*status: ([A-Z0-9]+).*/\1/p' | head -n 1)
	echo "${s:-none}"
}

# statuses_of: every rcode in kdig output (several queries), one a line.
statuses_of()
{
	sed -n -E 's/.*->>HEADER<<-.*status: ([A-Z0-9]+).*/\1/p'
}

# flags_of: the header flags of the first answer in kdig output,
# e.g. "qr rd ra tc".
flags_of()
{
	sed -n -E 's/^;; Flags: ([a-z ]*);.*/\1/p' | head -n 1 |
	    sed -e 's/ *$//'
}

# rdata_of TYPE: the data of every TYPE record in the answer sections of
# kdig output, one a line, in order.
rdata_of()
{
	awk -v t="$1" '
		/^;; ANSWER SECTION:/ { a = 1; next }
		/^;; / || /^$/ { a = 0 }
		a && $3 == "IN" && $4 == t {
			sub(/^[^ \t]+[ \t]+[0-9]+[ \t]+IN[ \t]+[A-Z0-9]+[ \t]+/, "")
			print
		}'
}

# count_rr TYPE: the number of TYPE records in the answer sections.
count_rr()
{
	rdata_of "$1" | wc -l | tr -d ' '
}

# udp_send ADDR PORT HEX: send one datagram with the given bytes (hex).
udp_send()
{
	perl -MIO::Socket::IP -e '
		my ($a, $p, $h) = @ARGV;
		my $s = IO::Socket::IP->new(PeerHost => $a, PeerPort => $p,
		    Proto => "udp") or die "socket: $@\n";
		defined $s->send(pack("H*", $h)) or die "send: $!\n";
	' "$@"
}

# udp_query ADDR PORT HEX [SECONDS]: send one datagram and print the
# reply in hex; fails when there is no reply within SECONDS (default 2).
udp_query()
{
	perl -MIO::Socket::IP -MIO::Select -e '
		my ($a, $p, $h, $t) = @ARGV;
		my $s = IO::Socket::IP->new(PeerHost => $a, PeerPort => $p,
		    Proto => "udp") or die "socket: $@\n";
		defined $s->send(pack("H*", $h)) or die "send: $!\n";
		IO::Select->new($s)->can_read($t) or die "no reply\n";
		defined $s->recv(my $buf, 65535) or die "recv: $!\n";
		print unpack("H*", $buf), "\n";
	' "$1" "$2" "$3" "${4:-2}"
}

# udp_burst ADDR PORT SECONDS NAME...: an A query for each NAME (RD set,
# no EDNS), all sent at once from one UDP socket, then the answers read
# for up to SECONDS.  With BURST_PAD set to a list of sizes, the queries
# have an OPT record with EDNS padding, the Nth one up to the Nth size
# (in turn), in bytes.  Prints one line per NAME, in order: the name, the
# rcode (NOERROR, SERVFAIL, ...; "none" without an answer) and the A
# addresses of the answer section, comma-separated ("-" if none).
udp_burst()
{
	perl -MIO::Socket::IP -MIO::Select -MTime::HiRes=time -e '
		my ($a, $p, $t, @names) = @ARGV;
		my @pad = split " ", $ENV{BURST_PAD} // "";
		my $s = IO::Socket::IP->new(PeerHost => $a, PeerPort => $p,
		    Proto => "udp") or die "socket: $@\n";
		my $base = int rand 30000;
		my %res;
		for my $i (0 .. $#names) {
			my $q = pack("n n n n n n", $base + $i, 0x0100, 1, 0, 0,
			    @pad ? 1 : 0);
			$q .= pack("C/a*", $_) for split /\./, $names[$i];
			$q .= pack("C n n", 0, 1, 1);
			if (@pad) {	# OPT, then option 12 up to the size
				my $n = $pad[$i % @pad] - length($q) - 15;
				$n = 0 if $n < 0;
				$q .= pack("C n n N n n n", 0, 41, 1232, 0,
				    4 + $n, 12, $n) . "\0" x $n;
			}
			defined $s->send($q) or die "send: $!\n";
		}
		my @rc = qw(NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED);
		my $sel = IO::Select->new($s);
		my $end = time + $t;
		while (keys(%res) < @names && (my $left = $end - time) > 0) {
			last unless $sel->can_read($left);
			defined $s->recv(my $m, 65535) or last;
			next if length($m) < 12;
			my ($id, $fl, $qd, $an) = unpack("n4", $m);
			my $i = $id - $base;
			next if $i < 0 || $i > $#names || exists $res{$i};
			my $o = 12;
			# skip a name: labels, up to the root or a pointer
			my $skip = sub {
				while ($o < length($m)) {
					my $l = ord substr($m, $o, 1);
					if ($l >= 0xc0) { $o += 2; return; }
					$o += 1 + $l;
					return if $l == 0;
				}
			};
			for (1 .. $qd) { $skip->(); $o += 4; }
			my @addr;
			for (1 .. $an) {
				$skip->();
				last if $o + 10 > length($m);
				my ($type, $class, $ttl, $len) =
				    unpack("n n N n", substr($m, $o, 10));
				$o += 10;
				push @addr, join(".", unpack("C4",
				    substr($m, $o, 4))) if $type == 1 && $len == 4;
				$o += $len;
			}
			$res{$i} = ($rc[$fl & 15] // "RCODE" . ($fl & 15)) . " " .
			    (@addr ? join(",", @addr) : "-");
		}
		print "$names[$_] ", $res{$_} // "none -", "\n" for 0 .. $#names;
	' "$@"
}

# dns_query_hex ID NAME TYPE: a DNS query (RD set, no EDNS) in hex.
dns_query_hex()
{
	perl -e '
		my ($id, $name, $type) = @ARGV;
		my %t = (A => 1, NS => 2, TXT => 16, AAAA => 28);
		my $q = pack("n n n n n n", $id, 0x0100, 1, 0, 0, 0);
		$q .= pack("C/a*", $_) for split /\./, $name;
		$q .= pack("C n n", 0, $t{$type} // $type, 1);
		print unpack("H*", $q), "\n";
	' "$@"
}

# ---------------------------------------------------------------------
# Control socket, processes, audit log

DOTPROXYCTL=${DOTPROXYCTL:-$TOP/build/dotproxyctl}
CTL_SOCK=""		# the control socket of the daemon under test
AUDIT=""		# its audit log

# ctl ARGS...: dotproxyctl on CTL_SOCK, bounded in time.
ctl()
{
	timeout -k 1 15 "$DOTPROXYCTL" -s "$CTL_SOCK" "$@"
}

# now_ms: a clock in milliseconds.
now_ms()
{
	date +%s%3N
}

# wait_for TENTHS CMD [ARGS...]: run CMD every 0.1 s, at most TENTHS
# times, until it succeeds.
wait_for()
{
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# child_named PID NAME: the pid of the child of PID that runs as NAME
# (listener or upstream); fails if there is none.
child_named()
{
	local c args
	for c in $(pgrep -P "$1" 2>/dev/null); do
		args=$(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null)
		case $args in
		*"dotproxyd: $2"* | *"-P $2"*)
			echo "$c"
			return 0
			;;
		esac
	done
	return 1
}

# fds_on PID FILE: the descriptors of PID open on FILE, one a line.
fds_on()
{
	local f
	for f in /proc/"$1"/fd/*; do
		[ "$(readlink "$f" 2>/dev/null)" = "$2" ] && echo "${f##*/}"
	done
	return 0
}

# mem_has PID STRING: STRING is somewhere in the writable memory of PID
# (a process's environment may no longer be where /proc/PID/environ
# looks: setproctitle moves it).  Mappings over 256 MiB, such as a
# sanitizer's shadow memory, are left out.
mem_has()
{
	perl -e '
		my ($pid, $want) = @ARGV;
		open(my $maps, "<", "/proc/$pid/maps") or exit 2;
		open(my $mem, "<:raw", "/proc/$pid/mem") or exit 2;
		while (<$maps>) {
			my ($s, $e, $perm) = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/
			    or next;
			next unless $perm =~ /^rw/ &&
			    hex($e) - hex($s) <= 256 << 20;
			my ($at, $end, $tail) = (hex $s, hex $e, "");
			while ($at < $end) {
				my $n = $end - $at > 1 << 20 ? 1 << 20 : $end - $at;
				sysseek($mem, $at, 0) or last;
				defined(sysread($mem, my $buf, $n)) or last;
				exit 0 if index($tail . $buf, $want) >= 0;
				$tail = substr($buf, -length($want));
				$at += $n;
			}
		}
		exit 1;
	' "$1" "$2"
}

# audit_check FILE: every line of FILE is a JSON object with an "event"
# string; prints the events, one a line.  Fails on the first bad line.
audit_check()
{
	perl -MJSON::PP -e '
		my $n = 0;
		while (my $l = <STDIN>) {
			$n++;
			chomp $l;
			my $o = eval { JSON::PP->new->decode($l) };
			if (!$o || ref $o ne "HASH" || !defined $o->{event} ||
			    ref $o->{event}) {
				print STDERR "line $n is not an audit record: $l\n";
				exit 1;
			}
			print "$o->{event}\n";
		}
	' <"$1"
}

# ---------------------------------------------------------------------
# Upstreams that misbehave

# start_mute_tcp PORT: a TCP server on 127.0.0.1@PORT that accepts
# connections and never says anything (no TLS).  Sets MUTE_PID.
start_mute_tcp()
{
	spawn "$T_DIR/mute-$1.log" perl -MIO::Socket::IP -e '
		alarm 600;
		my $l = IO::Socket::IP->new(LocalHost => "127.0.0.1",
		    LocalPort => $ARGV[0], Listen => 64, ReuseAddr => 1)
		    or die "listen: $@\n";
		my @keep;
		while (my $c = $l->accept) { push @keep, $c; }
	' "$1"
	# shellcheck disable=SC2034 # for the tests
	MUTE_PID=$SPAWNED_PID
	wait_for 50 port_listening "$1"
}

# port_listening PORT: something listens on TCP 127.0.0.1@PORT.
port_listening()
{
	[ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]
}

# start_fake_dot DIR PORT MODE [ARG]: a small DNS-over-TLS server on
# 127.0.0.1@PORT with the certificate make_ca left in DIR.  It answers
# every A query with 192.0.2.99 (TTL 60), other types with no data, and
# MODE says how it misbehaves:
#   answer         not at all
#   once           it closes each connection after its first answer
#                  (FIN, no close_notify)
#   wrongid        answers carry another ID than the query
#   garbage        each query gets a frame of random bytes instead
#   capture        not at all, and each query is written in hex to
#                  DIR/queries.hex
#   silent         completes the TLS handshake and reads queries, but
#                  never answers
#   silentafter K  each connection answers its first K queries, then
#                  reads the rest and never answers (TCP stays open, the
#                  kernel acknowledges everything)
#   idle SECS      answers everything, and closes (TLS close_notify, then
#                  FIN) a connection that sends nothing for SECS seconds
#                  (fractions allowed)
#   rst            answers the first query of a connection, waits until
#                  the answer is acknowledged, then resets the connection
#                  (SO_LINGER 0, no close_notify)
#   record [SECS]  reads one TLS record at a time and answers only the
#                  first DNS message in it, ignoring the rest of the
#                  record (as dnsdist 1.7 does); with SECS, also closes
#                  idle connections as `idle` does
#   stall          on the first connection it accepts, answers the first
#                  query with the 2-byte length (512) and one byte, then
#                  one more byte every 0.5 s, never completing the frame,
#                  for 60 s, then closes; later connections are answered
#                  as in `answer`
# Each connection is served by a process of its own.  One line per event
# is appended to DIR/fake-PORT.events (FAKE_EVENTS), N being the number
# of the connection in the order accepted, from 1:
#   conn N                     TCP connection accepted
#   query N I                  the Ith query read on it (in `record`
#                              mode, the one answered in a record)
#   record N with M messages   a TLS record read in `record` mode that
#                              held M DNS messages (a cut one counts)
#   stall N                    the stalled answer begins
#   end N WHY                  the connection is over: eof (the client
#                              closed), idle, once, rst, stall, handshake
#                              (it failed) or garbage (a bad frame)
# Every process ends within 600 s (a connection's within 300 s).  Sets
# FAKE_PID and FAKE_EVENTS.
start_fake_dot()
{
	local dir=$1 port=$2 mode=$3 arg=${4:-}
	FAKE_EVENTS=$dir/fake-$port.events
	: >"$FAKE_EVENTS"
	spawn "$dir/fake-dot-$port.log" perl -e '
		use strict;
		use warnings;
		use IO::Select;
		use IO::Socket::IP;
		use IO::Socket::SSL;
		use Socket qw(SOL_SOCKET SO_LINGER);

		my ($dir, $port, $mode, $arg) = @ARGV;
		my %modes = map { $_ => 1 } qw(answer once wrongid garbage
		    capture silent silentafter idle rst record stall);
		die "unknown mode $mode\n" unless $modes{$mode};
		my $num = defined $arg && $arg =~ /^[0-9]+(\.[0-9]+)?$/;
		die "$mode needs a number\n"
		    if ($mode eq "silentafter" || $mode eq "idle") && !$num;
		die "record takes a number of seconds or nothing\n"
		    if $mode eq "record" && defined $arg && $arg ne "" && !$num;
		my $idle = ($mode eq "idle" || $mode eq "record") && $num ?
		    $arg : undef;
		alarm 600;
		$SIG{CHLD} = "IGNORE";
		$| = 1;

		sub event {
			my $f;
			open($f, ">>", "$dir/fake-$port.events") or return;
			syswrite($f, "@_\n");	# O_APPEND, one write: atomic
			close($f);
		}

		sub readn {
			my ($c, $n) = @_;
			my $b = "";
			while (length($b) < $n) {
				my $r = $c->sysread($b, $n - length($b),
				    length($b));
				return undef unless $r;
			}
			return $b;
		}

		sub writeall {
			my ($c, $b) = @_;
			while (length($b) > 0) {
				my $w = $c->syswrite($b);
				return 0 unless $w;
				substr($b, 0, $w, "");
			}
			return 1;
		}

		# data to read within SECS seconds (TLS buffer or socket)?
		sub readable {
			my ($c, $secs) = @_;
			return 1 if $c->pending > 0;
			return scalar IO::Select->new($c)->can_read($secs);
		}

		# the answer to query Q: 192.0.2.99 for A, no data otherwise
		sub answer {
			my ($q) = @_;
			# the question: header, then labels up to the root
			my $o = 12;
			while ($o < length($q)) {
				my $n = ord substr($q, $o, 1);
				$o += 1 + $n;
				last if $n == 0;
			}
			return undef if $o + 4 > length($q);
			my $question = substr($q, 12, $o + 4 - 12);
			my $qtype = unpack("n", substr($q, $o, 2));
			my ($id, $fl) = unpack("n n", $q);
			$id ^= 0x5555 if $mode eq "wrongid";
			my $an = $qtype == 1 ? 1 : 0;
			my $a = pack("n n n n n n", $id,
			    0x8080 | ($fl & 0x0100), 1, $an, 0, 0) . $question;
			$a .= pack("n n n N n C4", 0xc00c, 1, 1, 60, 4,
			    192, 0, 2, 99) if $an;
			return $a;
		}

		sub finish {
			my ($c, $n, $why, %how) = @_;
			event("end $n $why");
			$c->close(%how);
			exit 0;
		}

		sub idle_close {
			my ($c, $n) = @_;
			# close_notify, without waiting for the peer s own
			finish($c, $n, "idle", SSL_fast_shutdown => 1);
		}

		sub serve_record {
			my ($c, $n) = @_;
			my $i = 0;
			for (;;) {
				idle_close($c, $n)
				    if defined $idle && !readable($c, $idle);
				my $buf = "";
				# one SSL_read: at most one TLS record
				my $r = $c->sysread($buf, 65536);
				finish($c, $n, "eof", SSL_no_shutdown => 1)
				    unless $r;
				my ($o, $m) = (0, 0);
				while ($o < length($buf)) {
					$m++;
					last if $o + 2 > length($buf);
					$o += 2 + unpack("n", substr($buf, $o, 2));
				}
				event("record $n with $m messages");
				next if length($buf) < 2;
				my $len = unpack("n", $buf);
				next if $len < 12 || length($buf) < 2 + $len;
				my $a = answer(substr($buf, 2, $len));
				next unless defined $a;
				event("query $n " . ++$i);
				writeall($c, pack("n", length $a) . $a) or
				    finish($c, $n, "eof", SSL_no_shutdown => 1);
			}
		}

		sub stall {
			my ($c, $n, $a) = @_;
			event("stall $n");
			# 512 bytes announced, at most 121 sent in 60 s
			my $frame = pack("n", 512) . $a . ("\0" x 512);
			writeall($c, substr($frame, 0, 3));
			for my $i (3 .. 122) {
				select(undef, undef, undef, 0.5);
				writeall($c, substr($frame, $i, 1)) or last;
			}
			finish($c, $n, "stall", SSL_no_shutdown => 1);
		}

		sub reset_conn {
			my ($c, $n) = @_;
			# until the kernel has the answer acknowledged (TIOCOUTQ)
			for (1 .. 200) {
				my $b = pack("i", 0);
				last unless ioctl($c, 0x5411, $b);
				last if unpack("i", $b) == 0;
				select(undef, undef, undef, 0.01);
			}
			setsockopt($c, SOL_SOCKET, SO_LINGER, pack("i i", 1, 0));
			finish($c, $n, "rst", SSL_no_shutdown => 1);
		}

		sub serve {
			my ($c, $n) = @_;
			alarm 300;	# fork cleared the parent s alarm
			IO::Socket::SSL->start_SSL($c, SSL_server => 1,
			    SSL_cert_file => "$dir/server.pem",
			    SSL_key_file => "$dir/server.key", Timeout => 10) or do {
				event("end $n handshake");
				exit 0;
			};
			serve_record($c, $n) if $mode eq "record";
			my $i = 0;
			for (;;) {
				idle_close($c, $n)
				    if defined $idle && !readable($c, $idle);
				my $h = readn($c, 2);
				finish($c, $n, "eof", SSL_no_shutdown => 1)
				    unless defined $h;
				my $q = readn($c, unpack("n", $h));
				finish($c, $n, "eof", SSL_no_shutdown => 1)
				    unless defined $q;
				finish($c, $n, "garbage", SSL_no_shutdown => 1)
				    if length($q) < 12;
				event("query $n " . ++$i);
				if ($mode eq "capture") {
					open my $f, ">>", "$dir/queries.hex" or die;
					print $f unpack("H*", $q), "\n";
					close $f;
				}
				next if $mode eq "silent";
				next if $mode eq "silentafter" && $i > $arg;
				if ($mode eq "garbage") {
					my $g = join "", map { chr int rand 256 } 1 .. 40;
					writeall($c, pack("n", length $g) . $g);
					next;
				}
				my $a = answer($q);
				next unless defined $a;
				stall($c, $n, $a) if $mode eq "stall" && $n == 1;
				writeall($c, pack("n", length $a) . $a) or
				    finish($c, $n, "eof", SSL_no_shutdown => 1);
				finish($c, $n, "once", SSL_no_shutdown => 1)
				    if $mode eq "once";
				reset_conn($c, $n) if $mode eq "rst";
			}
		}

		my $l = IO::Socket::IP->new(LocalHost => "127.0.0.1",
		    LocalPort => $port, Listen => 64, ReuseAddr => 1)
		    or die "listen: $@\n";
		my $n = 0;
		for (;;) {
			my $c = $l->accept or do {
				select(undef, undef, undef, 0.05);
				next;
			};
			$n++;
			event("conn $n");
			my $pid = fork;
			if (!defined $pid || $pid) {
				close($c);
				next;
			}
			close($l);
			serve($c, $n);
			exit 0;
		}
	' "$dir" "$port" "$mode" "$arg"
	# shellcheck disable=SC2034 # for the tests
	FAKE_PID=$SPAWNED_PID
	wait_for 50 port_listening "$port"
}

# fake_count FILE KIND: the number of KIND events (conn, query, record,
# stall, end) in the events file of start_fake_dot.
fake_count()
{
	grep -c "^$2 " "$1" 2>/dev/null
}

# fake_open FILE: connections accepted and not yet over.
fake_open()
{
	echo $(( $(fake_count "$1" conn) - $(fake_count "$1" end) ))
}

# fake_all_closed FILE: at least one connection was accepted, and every
# one is over.
fake_all_closed()
{
	[ "$(fake_count "$1" conn)" -gt 0 ] && [ "$(fake_open "$1")" -eq 0 ]
}
