#!/bin/bash
# dnstap: the listener records each client's query and answer (CQ, CR),
# the upstream process each query it sent and its answer (FQ, FR), over
# Frame Streams to a collector (fstrm_capture).  "dnstap anonymize" cuts
# the client's address; a collector that is gone costs no answer, only
# records, counted; one that comes back gets records again.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl fstrm_capture dnstap-ldns curl
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 15

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
MPORT=$(free_port)
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"
CTL_SOCK=$T_DIR/ctl.sock
TAP_SOCK=$T_DIR/dnstap.sock
C_PID=""

# collector FILE: fstrm_capture on TAP_SOCK writing to FILE, its socket
# there when this returns.
collector()
{
	rm -f "$TAP_SOCK"
	spawn "$T_DIR/fstrm_capture.log" fstrm_capture \
	    -t protobuf:dnstap.Dnstap -u "$TAP_SOCK" -w "$1"
	C_PID=$SPAWNED_PID
	wait_for 50 test -S "$TAP_SOCK"
}

# collector_stop: SIGTERM, and wait for it to have written its file.
collector_stop()
{
	kill -TERM "$C_PID" 2>/dev/null
	wait_gone 50 "$C_PID"
	wait "$C_PID" 2>/dev/null
	C_PID=""
}

# stat_of NAME: a counter of `dotproxyctl stats`.
stat_of()
{
	ctl stats | sed -n -E "s/^$1 +([0-9]+)\$/\\1/p"
}

# sent_at_least N: the listener has sent N records or more.
sent_at_least()
{
	local n
	n=$(stat_of "dnstap sent")
	[ -n "$n" ] && [ "$n" -ge "$1" ]
}

# up_sent: the upstream process's records sent, from the last line of
# `dotproxyctl status`.
up_sent()
{
	ctl status | sed -n -E \
	    's/^upstream process dnstap: sent ([0-9]+), dropped [0-9]+$/\1/p'
}

# up_sent_at_least N: the upstream process has sent N records or more.
up_sent_at_least()
{
	local n
	n=$(up_sent)
	[ -n "$n" ] && [ "$n" -ge "$1" ]
}

# decoded FILE: the records in FILE, one a line.
decoded()
{
	dnstap-ldns -r "$1" 2>&1
}

# has_records FILE ERE COUNT: FILE holds COUNT records matching ERE.
has_records()
{
	[ "$(decoded "$1" | grep -E -c -- "$2")" -ge "$3" ]
}

# conf [LINES...]: the config file CONF_FILE, on the same port each time.
conf()
{
	make_conf dnstap -u "$UPORT" "dnstap socket \"$TAP_SOCK\"" \
	    "metrics listen on 127.0.0.1 port $MPORT" "$@"
}

# 1. what each process records
collector "$T_DIR/one.fstrm" || bail_out "fstrm_capture did not start"
conf
start_dotproxyd "$CONF_FILE" || bail_out "cannot start the daemon"
for n in b c ns; do
	q "$n.example.test" A >/dev/null
done
q +tcp multi.example.test A >/dev/null
# each query of ours: a CQ and a CR; start_dotproxyd's too
wait_for 50 sent_at_least 8
# the upstream process: a FQ and a FR for each of the four
ok "the upstream process counts the records it sent" \
    wait_for 50 up_sent_at_least 8
# both_in_metrics: each child's dnstap_sent_total sample is above zero
both_in_metrics()
{
	local m p n
	m=$(curl -sS --max-time 10 "http://127.0.0.1:$MPORT/metrics")
	for p in listener upstream; do
		n=$(echo "$m" | sed -n -E \
		    "s/^dotproxyd_dnstap_sent_total\\{process=\"$p\"\\} ([0-9]+)\$/\\1/p")
		[ -n "$n" ] && [ "$n" -gt 0 ] || return 1
	done
}
ok "the metrics count each process's records" both_in_metrics
collector_stop
out=$(decoded "$T_DIR/one.fstrm")
like "$out" 'CQ 127\.0\.0\.1 UDP .*b\.example\.test' \
    "a client query: CQ with the client's address, over UDP" ||
    diag "$out"
like "$out" 'CR 127\.0\.0\.1 UDP .*b\.example\.test' \
    "its answer: CR with the client's address"
like "$out" 'C[QR] 127\.0\.0\.1 TCP .*multi\.example\.test' \
    "a query over TCP is recorded as TCP"
like "$out" "FQ 127\\.0\\.0\\.1 .*c\\.example\\.test" \
    "the query upstream: FQ to the upstream's address"
like "$out" "FR 127\\.0\\.0\\.1 .*c\\.example\\.test" \
    "the upstream's answer: FR"
like "$out" 'CR 127\.0\.0\.1 UDP [0-9]+b "ns\.example\.test\." IN A' \
    "the answer's message is in the record"

# 2. the collector stops: queries are answered, records dropped, counted
for n in 1 2 3 4 5; do
	st=$(q "gone$n.example.test" A | status_of)
	[ "$st" = none ] && break
done
is "$st" NXDOMAIN "without the collector, queries are answered"
dropped_some()
{
	q "more$RANDOM.example.test" A >/dev/null
	[ "$(stat_of "dnstap dropped")" -gt 0 ]
}
ok "the records are dropped and counted" wait_for 50 dropped_some ||
    ctl stats | diag_file /dev/stdin

# 3. the collector comes back: the parent connects again for each child
before=$(stat_of "dnstap sent")
up_before=$(up_sent)
collector "$T_DIR/two.fstrm" || bail_out "fstrm_capture did not start"
back()
{
	q "back$RANDOM.example.test" A >/dev/null
	sent_at_least $((before + 2)) &&
	    up_sent_at_least $((${up_before:-0} + 2))
}
ok "a collector started again receives both processes' records" \
    wait_for 50 back
collector_stop
like "$(decoded "$T_DIR/two.fstrm")" 'CQ 127\.0\.0\.1 UDP .*back[0-9]*\.example' \
    "the new stream has client records"
like "$(decoded "$T_DIR/two.fstrm")" 'FQ 127\.0\.0\.1 .*back[0-9]*\.example' \
    "and the upstream process's"
stop_dotproxyd

# 4. dnstap anonymize
collector "$T_DIR/three.fstrm" || bail_out "fstrm_capture did not start"
conf "dnstap anonymize"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start the daemon"
q anon.example.test A >/dev/null
wait_for 50 has_records "$T_DIR/three.fstrm" ' CR ' 2
collector_stop
out=$(decoded "$T_DIR/three.fstrm" | grep 'anon\.example')
like "$out" 'CQ 127\.0\.0\.0 UDP' "anonymize: the client's address is cut to /24" ||
    diag "$out"
unlike "$out" 'C[QR] 127\.0\.0\.1 ' "anonymize: the whole address is in no record"
stop_dotproxyd
