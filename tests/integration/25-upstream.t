#!/bin/bash
# Upstreams: failover past one that refuses connections or never speaks
# TLS, recovery when the upstream restarts, the connection pool under
# load, upstreams that close connections or send wrong answers, and TLS
# session resumption.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep dnsperf
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MIO::Socket::SSL -e 1 2>/dev/null ||
    skip_all "perl IO::Socket::SSL not found"

plan 43

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
DEAD=$(free_port)	# nothing listens there
MPORT=$(free_port)	# accepts TCP, never speaks TLS
FPORT=$(free_port)	# a small DoT server that misbehaves
CTL_SOCK=$T_DIR/ctl.sock
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# timed_q NAME TYPE: query with a 6 s timeout; sets OUT, STATUS and MS.
timed_q()
{
	local t0
	t0=$(now_ms)
	OUT=$(q +time=6 "$1" "$2")
	MS=$(( $(now_ms) - t0 ))
	STATUS=$(status_of <<<"$OUT")
}

# ---------------------------------------------------------------------
# The first upstream refuses connections

start_conf refused -u "$DEAD" -u "$UPORT" "cache off"
slow=""
for n in a b c a b; do
	timed_q "$n.example.test" A
	[ "$STATUS" = NOERROR ] && [ "$MS" -lt 2000 ] || slow="$slow $n:$STATUS:${MS}ms"
done
is "$slow" "" "refused first upstream: five queries NOERROR, each under 2 s"
out=$(ctl status 2>&1)
like "$out" "127\.0\.0\.1:$DEAD \(dot\.test\): last error: Connection refused" \
    "refused first upstream: status shows its error" || diag "$out"
like "$out" "127\.0\.0\.1:$UPORT \(dot\.test\) +up" \
    "refused first upstream: status shows the second up" || diag "$out"
stop_dotproxyd
is "$?" 0 "refused first upstream: SIGTERM exits 0"

# ---------------------------------------------------------------------
# The first upstream accepts TCP and never speaks TLS

start_mute_tcp "$MPORT" || bail_out "cannot start a mute upstream"
start_conf mute -u "$MPORT" -u "$UPORT" "cache off"
# after the first failure's back-off, the mute one is tried again
sleep 1.5
timed_q b.example.test A
is "$STATUS:$(rdata_of A <<<"$OUT")" NOERROR:192.0.2.2 \
    "mute first upstream: the query is answered by the second" || diag "$OUT"
ok "mute first upstream: within the 4 s deadline (${MS} ms)" test "$MS" -lt 4000
timed_q c.example.test A
is "$STATUS" NOERROR "mute first upstream: the next query answers too (${MS} ms)"
stop_dotproxyd
is "$?" 0 "mute first upstream: SIGTERM exits 0"
kill_tree "$MUTE_PID"

# ---------------------------------------------------------------------
# The upstream restarts

start_conf restart -u "$UPORT" "cache off"
timed_q a.example.test A
is "$STATUS" NOERROR "restart: answers before"
stop_unbound
timed_q b.example.test A
is "$STATUS" SERVFAIL "restart: SERVFAIL while the upstream is down (${MS} ms)"
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot restart unbound"
t0=$(now_ms)
recovered=none
for ((i = 0; i < 100; i++)); do
	if [ "$(q c.example.test A | status_of)" = NOERROR ]; then
		recovered=$(( $(now_ms) - t0 ))
		break
	fi
	[ $(( $(now_ms) - t0 )) -lt 15000 ] || break
	sleep 0.2
done
ok "restart: answers again without restarting dotproxyd (after ${recovered} ms)" \
    test "$recovered" != none
ok "restart: within 10 s" test "${recovered/none/99999}" -lt 10000
stop_dotproxyd
is "$?" 0 "restart: SIGTERM exits 0"

# ---------------------------------------------------------------------
# 50,000 queries, no cache, two TLS connections at most

start_conf pool -u "$UPORT" "cache off" "tls connections 2"
for ((i = 0; i < 6250; i++)); do
	printf '%s\n' "a.example.test A" "b.example.test A" "c.example.test A" \
	    "a.example.test AAAA" "b.example.test AAAA" "multi.example.test A" \
	    "text.example.test TXT" "nx.example.test A"
done >"$T_DIR/perf.txt"
# the most established connections to the upstream seen while it runs
(
	max=0
	for ((i = 0; i < 300; i++)); do
		n=$(ss -Htn state established "( dport = :$UPORT )" 2>/dev/null |
		    wc -l)
		[ "$n" -gt "$max" ] && max=$n
		echo "$max" >"$T_DIR/maxconns"
		[ -e "$T_DIR/perf.done" ] && break
		sleep 0.05
	done
) &
watcher=$!
perf=$(timeout -k 1 120 dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_DIR/perf.txt" \
    -n 1 -c 4 -q 64 -Q 10000 -t 5 2>&1 | grep -v '^\[Timeout\]')
touch "$T_DIR/perf.done"
wait "$watcher"
sent=$(sed -n -E 's/^ *Queries sent: *([0-9]+).*/\1/p' <<<"$perf")
lost=$(sed -n -E 's/^ *Queries lost: *([0-9]+).*/\1/p' <<<"$perf")
is "${sent:-none}" 50000 "pool: dnsperf sent 50000 queries" || diag "$perf"
is "${lost:-none}" 0 "pool: no query lost" || diag "$perf"
like "$perf" 'NOERROR' "pool: NOERROR answers" || diag "$perf"
unlike "$perf" 'SERVFAIL' "pool: no SERVFAIL" || diag "$perf"
maxconns=$(cat "$T_DIR/maxconns" 2>/dev/null)
ok "pool: at most 2 TLS connections to the upstream (saw ${maxconns:-none})" \
    test "${maxconns:-99}" -ge 1 -a "${maxconns:-99}" -le 2
stop_dotproxyd
is "$?" 0 "pool: SIGTERM exits 0"

# ---------------------------------------------------------------------
# An upstream that closes each connection after one answer

start_fake_dot "$T_DIR/ca" "$FPORT" once || bail_out "cannot start a fake upstream"
start_conf once -u "$FPORT" "cache off"
bad=""
for ((i = 0; i < 5; i++)); do
	out=$(q "s$i.example.test" A)
	[ "$(rdata_of A <<<"$out")" = 192.0.2.99 ] || bad="$bad s$i:$(status_of <<<"$out")"
done
# The answer read just before the server's close must reach the client
# at once, not when something else wakes the channel.
is "$bad" "" "closing upstream: 5 queries in a row answered, each within 2 s"
for ((i = 0; i < 10; i++)); do
	q +time=6 "p$i.example.test" A >"$T_DIR/once-$i.out" 2>&1 &
	bg[i]=$!
done
for ((i = 0; i < 10; i++)); do
	wait "${bg[i]}"
done
n=$(cat "$T_DIR"/once-*.out | statuses_of | grep -c '^NOERROR$')
# Queries left on a connection the server closes are sent again.
is "$n" 10 "closing upstream: 10 queries at once all answered"
ok "closing upstream: the daemon is alive" alive "$D_PID"
stop_dotproxyd
is "$?" 0 "closing upstream: SIGTERM exits 0"
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# Answers with a wrong ID, and garbage

FPORT=$(free_port)
start_fake_dot "$T_DIR/ca" "$FPORT" wrongid || bail_out "cannot start a fake upstream"
start_conf wrongid -u "$FPORT" -u "$UPORT" "cache off"
kids=$(children "$D_PID" | tr '\n' ' ')
timed_q a.example.test A
is "$STATUS:$(rdata_of A <<<"$OUT")" NOERROR:192.0.2.1 \
    "wrong ID: the answer comes from the second upstream, not the forged one" ||
    diag "$OUT"
ok "wrong ID: within the 4 s deadline (${MS} ms)" test "$MS" -lt 4000
stop_dotproxyd
kill_tree "$FAKE_PID"

FPORT=$(free_port)
start_fake_dot "$T_DIR/ca" "$FPORT" garbage || bail_out "cannot start a fake upstream"
start_conf garbage -u "$FPORT" "cache off"
kids=$(children "$D_PID" | tr '\n' ' ')
timed_q a.example.test A
is "$STATUS" SERVFAIL "garbage: the client gets SERVFAIL" || diag "$OUT"
ok "garbage: within the 4 s deadline (${MS} ms)" test "$MS" -lt 4500
is "$(children "$D_PID" | tr '\n' ' ')" "$kids" \
    "garbage: the same children (nothing crashed)"
stop_dotproxyd
is "$?" 0 "garbage: SIGTERM exits 0"

# ---------------------------------------------------------------------
# TLS session resumption: a TLS 1.2 upstream that closes connections idle
# for half a second.  Each new connection resumes the session of the
# last, and the pin is still checked on a resumed session.

cat >"$T_DIR/tls12.cnf" <<'EOC'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MaxProtocol = TLSv1.2
EOC
RPORT=$(free_port)
UNBOUND_EXTRA="tcp-idle-timeout: 500" UNBOUND_OPENSSL_CONF=$T_DIR/tls12.cnf \
    start_unbound "$T_DIR/ca" "$RPORT" || bail_out "cannot start a TLS 1.2 unbound"
pin=$(spki_pin "$T_DIR/ca/server.pem")
make_conf resume -u "$RPORT name \"dot.test\" pin sha256 \"$pin\"" "cache off"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"

# upstream_field N: field N of the upstream's line in `status` (not of
# the lines of more counters and of the last error, "LABEL: ...").
upstream_field()
{
	ctl status 2>/dev/null |
	    awk -v u="127.0.0.1:$RPORT" -v n="$1" \
	    '$1 == u && $2 !~ /:$/ { print $(n + 1) }'
}

bad=""
for n in a b c; do
	timed_q "$n.example.test" A
	[ "$STATUS" = NOERROR ] || bad="$bad $n:$STATUS"
	# wait for the upstream to close the idle connection
	for ((i = 0; i < 50; i++)); do
		[ "$(upstream_field 3)" = 0 ] && break
		sleep 0.1
	done
done
is "$bad" "" "resumption: three queries, each on a new connection, answered"
out=$(ctl status 2>&1)
handshakes=$(upstream_field 8)
resumed=$(upstream_field 7)
is "$(upstream_field 6)" TLSv1.2 "resumption: the upstream speaks TLS 1.2" ||
    diag "$out"
ok "resumption: three handshakes or more (${handshakes:-none})" \
    test "${handshakes:-0}" -ge 3
ok "resumption: the later handshakes resumed the session (${resumed:-none})" \
    test "${resumed:-0}" -ge 2
like "$(cat "$D_LOG")" 'connected, TLSv1\.2, [^ ]+, resumed' \
    "resumption: the log says a connection resumed"
out=$(ctl metrics 2>&1)
like "$out" "dotproxyd_upstream_resumed_total\{upstream=\"127\.0\.0\.1:$RPORT \(dot\.test\)\"\} [2-9]" \
    "resumption: the metrics count the resumed handshakes" || diag "$out"
stop_dotproxyd
is "$?" 0 "resumption: SIGTERM exits 0"
stop_unbound
