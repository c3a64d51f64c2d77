#!/bin/bash
# Resilience: dotproxyd keeps answering whatever its DNS-over-TLS upstreams
# do.  Each section puts a misbehaving server (start_fake_dot) in front of
# the daemon, alone or before unbound, and counts the answers and the slow
# answers: a server that closes idle connections, that closes or resets
# the connection after each answer, that reads one message per TLS
# record, that goes silent after some answers or right after the
# handshake, that stops while the kernel still acknowledges (half-open),
# that stalls in the middle of a frame; and an upstream process that
# runs out of descriptors.
#
# What is expected of the upstream engine: a try unanswered in its time
# (clamp(srtt + 4 * rttvar, 100 ms, 1.5 s)) is hedged to the next healthy
# upstream or connection; a connection that stays silent with queries on
# it is found dead and replaced; a frame started and never finished kills
# its connection; a server's close (FIN, close_notify or RST) sends every
# unanswered query again on a fresh connection, without SERVFAIL; one
# query per TLS record; socket() failures never loop; `dotproxyctl status`
# counts timeouts per upstream.
#
# Answers from the fake server carry 192.0.2.99, those from unbound the
# addresses of lib.sh's zone (192.0.2.1 for a.example.test, ...).  A query
# counts as slow above 1 s; sequential loops stop after a time budget, as
# a daemon that takes 1.5 s per query would otherwise hold the run for
# minutes (the budget is far above what a healthy run needs).

: "${T_TIMEOUT:=600}"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep dnsperf prlimit setpriv
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MIO::Socket::SSL -e 1 2>/dev/null ||
    skip_all "perl IO::Socket::SSL not found"

plan 33

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# fake NAME MODE [ARG]: a fake upstream on a new port, FPORT.
fake()
{
	FPORT=$(free_port)
	start_fake_dot "$T_DIR/ca" "$FPORT" "$2" "${3:-}" ||
	    bail_out "$1: cannot start a fake upstream ($2)"
}

# answer_of KDIG-OUTPUT: "STATUS:ADDRESSES" of the answer.
answer_of()
{
	echo "$(status_of <<<"$1"):$(rdata_of A <<<"$1" | tr '\n' ' ' |
	    sed -e 's/ $//')"
}

# burst N TAG: N queries, for TAG-0.example.test and on, sent at once
# from one UDP socket, answers awaited for 6 s.  Sets BURST_GOOD (NOERROR
# with the fake server's 192.0.2.99) and BURST_SERVFAIL.
burst()
{
	local n=$1 tag=$2 i names=()
	for ((i = 0; i < n; i++)); do
		names+=("$tag-$i.example.test")
	done
	udp_burst 127.0.0.1 "$PORT" 6 "${names[@]}" >"$T_DIR/burst-$tag.out"
	BURST_GOOD=$(grep -c ' NOERROR 192\.0\.2\.99$' "$T_DIR/burst-$tag.out")
	BURST_SERVFAIL=$(grep -c ' SERVFAIL ' "$T_DIR/burst-$tag.out")
}

# seq_queries N BUDGET PAUSE: up to N queries one after the other for
# a, b and c.example.test in turn (unbound's 192.0.2.1, .2, .3), PAUSE
# seconds apart, for at most BUDGET seconds.  Sets SEQ_DONE (queries
# asked), SEQ_GOOD (answered with unbound's address), SEQ_SLOW (over
# 1 s), SEQ_MAX (the slowest, ms) and SEQ_BAD (the first others).
seq_queries()
{
	local n=$1 budget=$2 pause=$3 i name want t0 ms out start
	SEQ_DONE=0 SEQ_GOOD=0 SEQ_SLOW=0 SEQ_MAX=0 SEQ_BAD=""
	start=$(now_ms)
	for ((i = 0; i < n; i++)); do
		[ $(($(now_ms) - start)) -lt $((budget * 1000)) ] || break
		case $((i % 3)) in
		0) name=a want=192.0.2.1 ;;
		1) name=b want=192.0.2.2 ;;
		*) name=c want=192.0.2.3 ;;
		esac
		t0=$(now_ms)
		out=$(q +time=6 "$name.example.test" A)
		ms=$(($(now_ms) - t0))
		SEQ_DONE=$((SEQ_DONE + 1))
		if [ "$(answer_of "$out")" = "NOERROR:$want" ]; then
			SEQ_GOOD=$((SEQ_GOOD + 1))
		elif [ "${#SEQ_BAD}" -lt 200 ]; then
			SEQ_BAD="$SEQ_BAD $i:$(answer_of "$out")"
		fi
		[ "$ms" -gt 1000 ] && SEQ_SLOW=$((SEQ_SLOW + 1))
		[ "$ms" -gt "$SEQ_MAX" ] && SEQ_MAX=$ms
		[ "$pause" = 0 ] || sleep "$pause"
	done
}

# perf_rcode OUTPUT RCODE: how many answers dnsperf counted with RCODE.
perf_rcode()
{
	sed -n -E "s/.*[[:space:]]$2 ([0-9]+) \\(.*/\\1/p" <<<"$1" | head -n 1
}

# status_value FIELD HOSTPORT: FIELD of the upstream at HOSTPORT in
# `dotproxyctl status`, as "FIELD VALUE", "FIELD: VALUE" or "FIELD=VALUE"
# on one of its lines, or as a column of the table (whose upstream column
# is two words wide, the address and the name).  Empty if there is none.
status_value()
{
	ctl status 2>/dev/null | awk -v f="$1" -v u="$2" '
		$1 == "upstream" && col == 0 {
			for (i = 2; i <= NF; i++)
				if ($i == f)
					col = i
			next
		}
		index($1, u) != 1 { next }
		kv == "" && match($0, "(^|[ ,;(])" f "[:=]? *[^ ,;:=()]+") {
			s = substr($0, RSTART, RLENGTH)
			sub("^.*" f "[:=]? *", "", s)
			kv = s
		}
		col > 0 && tab == "" { tab = $(col + 1) }
		END { print kv != "" ? kv : tab }'
}

# as_daemon_user CMD [ARGS...]: run CMD as the daemon's user and group.
as_daemon_user()
{
	setpriv --reuid="$D_USER" --regid="$D_USER" --clear-groups "$@"
}

# cpu_ticks PID: user plus system time of the process, in clock ticks.
cpu_ticks()
{
	sed -e 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# ---------------------------------------------------------------------
# a. The server closes connections idle for 1 s (with close_notify):
# queries that come after the close, or just as it happens, are answered.

fake idle idle 1
start_conf idle -u "$FPORT" "cache off"
out=$(q +time=6 first.example.test A)
is "$(answer_of "$out")" NOERROR:192.0.2.99 \
    "idle close: a query is answered by the server" || diag "$out"
ok "idle close: the server closes the idle connection" \
    wait_for 50 fake_all_closed "$FAKE_EVENTS"
rounds=""
for r in 1 2 3; do
	wait_for 50 fake_all_closed "$FAKE_EVENTS"
	burst 20 "idle$r"
	rounds="$rounds $BURST_GOOD/$BURST_SERVFAIL"
done
is "${rounds# }" "20/0 20/0 20/0" \
    "idle close: 3 bursts of 20 queries after the close, all answered (NOERROR/SERVFAIL)"
# The burst leaves as the server's idle second ends: this sleep aims at
# the close on purpose.
rounds=""
for r in 1 2 3 4 5; do
	wait_for 50 fake_all_closed "$FAKE_EVENTS"
	q +time=6 "race$r.example.test" A >/dev/null
	sleep 0.95
	burst 20 "race$r"
	rounds="$rounds $BURST_GOOD/$BURST_SERVFAIL"
done
is "${rounds# }" "20/0 20/0 20/0 20/0 20/0" \
    "idle close: 5 bursts of 20 sent as the server closes, all answered (NOERROR/SERVFAIL)"
note "idle close: the server saw $(fake_count "$FAKE_EVENTS" conn) connections"
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# b. The server closes (FIN, no close_notify) or resets each connection
# after its first answer: every query of a burst is answered.

for mode in once rst; do
	fake "$mode" "$mode"
	start_conf "$mode" -u "$FPORT" "cache off"
	rounds=""
	for r in 1 2 3 4 5; do
		burst 10 "$mode$r"
		rounds="$rounds $BURST_GOOD/$BURST_SERVFAIL"
	done
	is "${rounds# }" "10/0 10/0 10/0 10/0 10/0" \
	    "$mode: 5 bursts of 10 queries at once, all answered (NOERROR/SERVFAIL)"
	note "$mode: the server saw $(fake_count "$FAKE_EVENTS" conn) connections"
	stop_dotproxyd
	kill_tree "$FAKE_PID"
done

# ---------------------------------------------------------------------
# c. The server answers only the first message of each TLS record, and
# closes connections idle for 1 s: each burst starts on a new connection,
# where queries that waited for it would leave together.

fake record record 1
start_conf record -u "$FPORT" "cache off"
rounds=""
for r in 1 2 3; do
	wait_for 50 fake_all_closed "$FAKE_EVENTS"
	burst 20 "rec$r"
	rounds="$rounds $BURST_GOOD/$BURST_SERVFAIL"
done
is "${rounds# }" "20/0 20/0 20/0" \
    "one message per record: 3 bursts of 20 after idle closes, all answered (NOERROR/SERVFAIL)"
max=$(awk '$1 == "record" && $4 > m { m = $4 } END { print m + 0 }' \
    "$FAKE_EVENTS")
is "$max" 1 \
    "one message per record: no TLS record held more than one query ($(fake_count "$FAKE_EVENTS" record) records)"
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# d. The only upstream answers 50 queries per connection, then goes
# silent with TCP still open: silent connections are found dead and
# replaced, and every query is answered.

fake silentafter silentafter 50
start_conf silentafter -u "$FPORT" "cache off"
for ((i = 0; i < 300; i++)); do
	echo "d$i.example.test A"
done >"$T_DIR/silentafter.txt"
perf=$(timeout -k 1 120 dnsperf -s 127.0.0.1 -p "$PORT" \
    -d "$T_DIR/silentafter.txt" -n 1 -c 1 -q 20 -Q 100 -t 6 2>&1 |
    grep -v '^\[Timeout\]')
n=$(perf_rcode "$perf" NOERROR)
is "${n:-0}" 300 \
    "silent after 50 answers: 300 queries all answered ($(fake_count "$FAKE_EVENTS" conn) connections)" ||
    diag "$(grep -E 'Queries|Response codes' <<<"$perf")"
timeouts=$(status_value timeouts "127.0.0.1:$FPORT")
ok "silent after 50 answers: status counts timeouts (${timeouts:-no such field})" \
    test "$(tr -cd 0-9 <<<"0$timeouts")" -gt 0 || diag "$(ctl status 2>&1)"
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# e. The first upstream completes the handshake and never answers; unbound
# is second.  The first query may wait for it; the others may not.

fake silent silent
D_READY_TIME=5 start_conf silent -u "$FPORT" -u "$UPORT" "cache off"
seq_queries 60 120 0
is "$SEQ_GOOD/$SEQ_DONE" 60/60 \
    "silent first upstream: 60 sequential queries answered by the second (answered/asked in 120 s)" ||
    diag "others:$SEQ_BAD"
ok "silent first upstream: at most 3 of 60 over 1 s ($SEQ_SLOW of $SEQ_DONE, slowest $SEQ_MAX ms)" \
    test "$SEQ_DONE" -eq 60 -a "$SEQ_SLOW" -le 3
state=$(status_value state "127.0.0.1:$FPORT")
like "${state:-none}" '^(suspect|down|probing)$' \
    "silent first upstream: status does not show it up (${state:-none})" ||
    diag "$(ctl status 2>&1)"
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# f. The first upstream answers, then stops (SIGSTOP): the kernel still
# accepts connections and acknowledges data, nothing answers.  unbound
# is second.

fake halfopen answer
start_conf halfopen -u "$FPORT" -u "$UPORT" "cache off"
good=0
for i in 1 2 3; do
	[ "$(answer_of "$(q +time=6 "h$i.example.test" A)")" = NOERROR:192.0.2.99 ] &&
	    good=$((good + 1))
done
is "$good" 3 "half-open first upstream: answers while it runs"
kill -STOP -- "-$FAKE_PID"
seq_queries 100 150 0.02
kill -CONT -- "-$FAKE_PID"
is "$SEQ_GOOD/$SEQ_DONE" 100/100 \
    "half-open first upstream: 100 sequential queries answered by the second (answered/asked in 150 s)" ||
    diag "others:$SEQ_BAD"
ok "half-open first upstream: at most 3 of 100 over 1 s ($SEQ_SLOW of $SEQ_DONE, slowest $SEQ_MAX ms)" \
    test "$SEQ_DONE" -eq 100 -a "$SEQ_SLOW" -le 3
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# g. The only upstream starts an answer on its first connection and never
# finishes the frame (one byte every 0.5 s): the first queries may fail,
# those asked 3 s later are answered.

fake stall stall
D_READY_TIME=5 start_conf stall -u "$FPORT" "cache off"
ok "stalled frame: the first connection stalls in an answer" \
    wait_for 50 grep -q '^stall 1$' "$FAKE_EVENTS"
sleep 3		# the time the daemon has to give up on the frame
good=0
bad=""
for i in 1 2 3 4 5; do
	a=$(answer_of "$(q +time=6 "g$i.example.test" A)")
	if [ "$a" = NOERROR:192.0.2.99 ]; then
		good=$((good + 1))
	else
		bad="$bad $a"
	fi
done
is "$good" 5 \
    "stalled frame: 5 queries asked 3 s later all answered ($(fake_count "$FAKE_EVENTS" conn) connections)" ||
    diag "others:$bad"
stop_dotproxyd
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# h. The upstream process cannot open a socket (RLIMIT_NOFILE at the
# number of descriptors it holds) while a silent first upstream makes it
# want new connections: no loop, no flood of log lines, no crash.

fake descriptors silent
D_READY_TIME=5 start_conf descriptors -u "$FPORT" -u "$UPORT" \
    "cache off" "tls connections 4"
UP_PID=$(child_named "$D_PID" upstream)
nfd=$(find "/proc/$UP_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
# As the daemon's user: root without CAP_SYS_RESOURCE may not change
# another user's limits.  Only the soft limit changes, so that it can
# be raised again.
read -r soft hard < <(as_daemon_user prlimit --pid "$UP_PID" --nofile \
    --raw --noheadings -o SOFT,HARD)
ok "descriptors: the upstream process ($UP_PID) is held to the $nfd it has" \
    as_daemon_user prlimit --pid "$UP_PID" --nofile="$nfd:$hard"
for ((i = 0; i < 300; i++)); do
	echo "fd$i.example.test A"
done >"$T_DIR/descriptors.txt"
log_lines=$(wc -l <"$D_LOG")
cpu0=$(cpu_ticks "$UP_PID")
perf=$(timeout -k 1 120 dnsperf -s 127.0.0.1 -p "$PORT" \
    -d "$T_DIR/descriptors.txt" -n 1 -c 1 -q 100 -Q 300 -t 6 2>&1 |
    grep -v '^\[Timeout\]')
cpu1=$(cpu_ticks "$UP_PID" 2>/dev/null)
note "descriptors: $(grep -E 'Response codes' <<<"$perf" | sed -e 's/^ *//')"
n=$(tail -n "+$((log_lines + 1))" "$D_LOG" |
    grep -Eci 'socket|descriptor|too many open files')
# One line per failure would be one per query (about 200 here): the
# failures are to be paced, not the log to follow the load.
ok "descriptors: fewer than 50 log lines about sockets or descriptors ($n)" \
    test "$n" -lt 50 ||
    diag "$(tail -n "+$((log_lines + 1))" "$D_LOG" | sort | uniq -c |
        sort -rn | head -n 5)"
is "$(child_named "$D_PID" upstream)" "$UP_PID" \
    "descriptors: the same upstream process"
ok "descriptors: it is alive" alive "$UP_PID"
hz=$(getconf CLK_TCK)
ok "descriptors: it used less than 2 s of CPU ($(((${cpu1:-0} - cpu0) * 1000 / hz)) ms)" \
    test -n "$cpu1" -a $((${cpu1:-0} - cpu0)) -lt $((2 * hz))
as_daemon_user prlimit --pid "$UP_PID" --nofile="$soft:$hard"
out=$(q +time=6 a.example.test A)
is "$(answer_of "$out")" NOERROR:192.0.2.1 \
    "descriptors: with the limit lifted, a query is answered" || diag "$out"
stop_dotproxyd
kill_tree "$FAKE_PID"
