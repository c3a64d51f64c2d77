#!/bin/bash
# Forwarding: clients over UDP and TCP, IPv4 and IPv6, to an unbound
# DNS-over-TLS upstream on loopback; truncation; the process layout.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 55

# IPv6 loopback may be missing in some containers.
HAVE_V6=0
ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/128' && HAVE_V6=1

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

V6=()
[ "$HAVE_V6" -eq 1 ] && V6=(-l ::1)
make_conf dotproxyd "${V6[@]}" -u "$UPORT" -a 127.0.0.0/8 -a ::1/128

# Started the way a careless starter would: a descriptor open on a
# secret file (fd 9) and a secret in the environment.  No child may
# inherit either.
echo "not for the children" >"$T_DIR/secret"
exec 9<"$T_DIR/secret"
SECRET_VALUE=s3cr3t-$$-$RANDOM
export DOTPROXYD_TEST_SECRET=$SECRET_VALUE
if start_dotproxyd "$T_DIR/dotproxyd.conf"; then
	pass "dotproxyd starts and answers on 127.0.0.1 port $PORT"
else
	fail "dotproxyd starts and answers on 127.0.0.1 port $PORT"
fi
exec 9<&-
unset DOTPROXYD_TEST_SECRET

# --- answers over UDP and TCP

out=$(q a.example.test A)
is "$(status_of <<<"$out")" NOERROR "UDP: A query answers NOERROR" ||
    diag "$out"
is "$(rdata_of A <<<"$out")" 192.0.2.1 "UDP: A answer is 192.0.2.1"
like "$(tail -n 3 <<<"$out")" '\(UDP\)' "UDP: kdig used UDP"

out=$(q +tcp a.example.test A)
is "$(status_of <<<"$out")" NOERROR "TCP: A query answers NOERROR" ||
    diag "$out"
is "$(rdata_of A <<<"$out")" 192.0.2.1 "TCP: A answer is 192.0.2.1"

out=$(q a.example.test AAAA)
is "$(rdata_of AAAA <<<"$out")" 2001:db8::1 "UDP: AAAA answer is 2001:db8::1" ||
    diag "$out"

out=$(q multi.example.test A)
is "$(rdata_of A <<<"$out" | sort | tr '\n' ' ')" \
    "192.0.2.11 192.0.2.12 192.0.2.13 " "UDP: an RRset of three A records" ||
    diag "$out"

out=$(q text.example.test TXT)
is "$(rdata_of TXT <<<"$out")" '"hello dotproxyd"' "UDP: TXT answer" ||
    diag "$out"

# --- IPv6 listener

if [ "$HAVE_V6" -eq 1 ]; then
	out=$(q_at ::1 a.example.test A)
	is "$(rdata_of A <<<"$out")" 192.0.2.1 "UDP over ::1: A answer" ||
	    diag "$out"
	out=$(q_at ::1 +tcp b.example.test A)
	is "$(rdata_of A <<<"$out")" 192.0.2.2 "TCP over ::1: A answer" ||
	    diag "$out"
else
	skip 2 "no IPv6 loopback address"
fi

# --- NXDOMAIN

out=$(q nx.example.test A)
is "$(status_of <<<"$out")" NXDOMAIN "UDP: NXDOMAIN is passed through" ||
    diag "$out"
like "$out" 'SOA' "UDP: the NXDOMAIN answer keeps the SOA of the zone"

out=$(q +tcp nx.example.test A)
is "$(status_of <<<"$out")" NXDOMAIN "TCP: NXDOMAIN is passed through" ||
    diag "$out"

# --- several queries on one TCP connection (RFC 7766)

out=$(q +tcp +keepopen a.example.test A b.example.test A \
    nx.example.test A c.example.test A b.example.test AAAA)
is "$(statuses_of <<<"$out" | tr '\n' ' ')" \
    "NOERROR NOERROR NXDOMAIN NOERROR NOERROR " \
    "TCP keep-open: five queries on one connection, five answers" ||
    diag "$out"
is "$(rdata_of A <<<"$out" | tr '\n' ' ')" "192.0.2.1 192.0.2.2 192.0.2.3 " \
    "TCP keep-open: each answer belongs to its query"
is "$(rdata_of AAAA <<<"$out")" 2001:db8::2 "TCP keep-open: last answer AAAA"

# --- truncation of a large answer (about 2.6 kB)

out=$(q +noedns +ignore big.example.test TXT)
is "$(status_of <<<"$out")" NOERROR "UDP without EDNS: big answer NOERROR" ||
    diag "$out"
like "$(flags_of <<<"$out")" '(^| )tc( |$)' "UDP without EDNS: big answer has TC"
size=$(sed -n -E 's/^;; Received ([0-9]+) B.*/\1/p' <<<"$out")
ok "UDP without EDNS: answer fits in 512 bytes (got ${size:-none})" \
    test "${size:-99999}" -le 512

out=$(q +bufsize=1232 +ignore big.example.test TXT)
like "$(flags_of <<<"$out")" '(^| )tc( |$)' "UDP with EDNS 1232: big answer has TC" ||
    diag "$out"
size=$(sed -n -E 's/^;; Received ([0-9]+) B.*/\1/p' <<<"$out")
ok "UDP with EDNS 1232: answer fits in 1232 bytes (got ${size:-none})" \
    test "${size:-99999}" -le 1232

out=$(q +tcp big.example.test TXT)
is "$(count_rr TXT <<<"$out")" "$BIG_TXT_COUNT" \
    "TCP: big answer complete ($BIG_TXT_COUNT TXT records)" || diag "$out"
unlike "$(flags_of <<<"$out")" '(^| )tc( |$)' "TCP: big answer not truncated"

# The answer may be cut at a smaller size than the client offers (1232
# is the usual limit, as in unbound), but never without TC.
out=$(q +bufsize=4096 +ignore big.example.test TXT)
n=$(count_rr TXT <<<"$out")
if [ "$n" = "$BIG_TXT_COUNT" ] || flags_of <<<"$out" | grep -Eq '(^| )tc( |$)'; then
	pass "UDP with EDNS 4096: big answer complete or marked TC ($n records)"
else
	fail "UDP with EDNS 4096: big answer complete or marked TC ($n records)"
	diag "$out"
fi

# kdig falls back to TCP on TC by itself
out=$(q +noedns big.example.test TXT)
is "$(count_rr TXT <<<"$out")" "$BIG_TXT_COUNT" \
    "UDP then TCP on truncation: big answer complete" || diag "$out"

# --- message IDs are those of the client

for id in beef 0001; do
	hex=$(udp_query 127.0.0.1 "$PORT" \
	    "$(dns_query_hex $((16#$id)) a.example.test A)" 2>&1)
	is "${hex:0:4}" "$id" "raw UDP query: answer carries the client's ID 0x$id" ||
	    diag "$hex"
done
# QR set, opcode 0, RCODE 0, one question, one answer
is "${hex:4:1}${hex:7:1}:${hex:8:8}" "80:00010001" \
    "raw UDP query: QR set, NOERROR, one question and one answer"

# --- processes: parent plus two confined children

uid=$(id -u "$D_USER")
kids=$(children "${D_PID:-0}")
is "$(descendants "${D_PID:-0}" | wc -l | tr -d ' ')" 2 \
    "three processes: the parent and two children" ||
    diag "$(ps -o pid,ppid,user,args --ppid "${D_PID:-0}" 2>&1)"
n=0
for c in $kids; do
	n=$((n + 1))
	[ "$n" -le 2 ] || break
	st=$(cat "/proc/$c/status" 2>/dev/null)
	is "$(awk '/^Uid:/ { print $2, $3, $4, $5 }' <<<"$st")" \
	    "$uid $uid $uid $uid" "child $n (pid $c) runs as $D_USER (uid $uid)"
	is "$(readlink "/proc/$c/root")" "$D_CHROOT" \
	    "child $n (pid $c) is chrooted into $D_CHROOT"
	is "$(awk '/^CapEff:/ { print $2 }' <<<"$st"):$(awk '/^CapBnd:/ { print $2 }' <<<"$st")" \
	    "0000000000000000:0000000000000000" \
	    "child $n (pid $c) has no capabilities, empty bounding set"
	is "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$st"):$(awk '/^Seccomp:/ { print $2 }' <<<"$st")" \
	    "1:2" "child $n (pid $c) has no_new_privs and a seccomp filter"
	# the daemon's standard output is the test's log file, not theirs
	is "$(readlink "/proc/$c/fd/0"):$(readlink "/proc/$c/fd/1")" \
	    "/dev/null:/dev/null" \
	    "child $n (pid $c) has /dev/null as standard input and output"
	is "$(fds_on "$c" "$T_DIR/secret")" "" \
	    "child $n (pid $c) holds no descriptor the starter left open"
	mem_has "$c" "DOTPROXYD_TEST_SECRET=$SECRET_VALUE"
	is "$?" 1 "child $n (pid $c) inherits no environment variable"
done
for ((; n < 2; n++)); do
	skip 7 "child $((n + 1)) missing"
done
ok "the parent has the variable: the check above can see one" \
    mem_has "${D_PID:-0}" "DOTPROXYD_TEST_SECRET=$SECRET_VALUE"
# the one variable a child gets: glibc's malloc without its thread cache,
# for the upstream process alone
tunable="GLIBC_TUNABLES=glibc.malloc.tcache_count=0"
ok "the upstream process runs without malloc's thread cache" \
    mem_has "$(child_named "${D_PID:-0}" upstream)" "$tunable"
mem_has "$(child_named "${D_PID:-0}" listener)" "$tunable"
is "$?" 1 "the listener keeps malloc's thread cache"
# the parent, once its children run: its own filter, capabilities cut to
# NET_BIND_SERVICE SETUID SETGID SYS_CHROOT SETPCAP KILL (0x405e0)
st=$(cat "/proc/${D_PID:-0}/status" 2>/dev/null)
is "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$st"):$(awk '/^Seccomp:/ { print $2 }' <<<"$st")" \
    "1:2" "the parent has no_new_privs and a seccomp filter"
is "$(awk '/^CapEff:/ { print $2 }' <<<"$st"):$(awk '/^CapBnd:/ { print $2 }' <<<"$st")" \
    "00000000000405e0:00000000000405e0" \
    "the parent keeps only the six capabilities it needs"

# --- malformed input does not take anything down

# five random bytes
udp_send 127.0.0.1 "$PORT" "$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"
# a header that announces a question and stops there
udp_send 127.0.0.1 "$PORT" "123401000001000000000000"
# a name with a label running past the end of the packet
udp_send 127.0.0.1 "$PORT" "12340100000100000000000007616200"
# a compression pointer to itself in the question
udp_send 127.0.0.1 "$PORT" "123401000001000000000000c00c00010001"
# an answer (QR set), not a query
udp_send 127.0.0.1 "$PORT" "$(dns_query_hex 4660 a.example.test A |
    sed -e 's/^\(....\)01/\181/')"
# an empty datagram
udp_send 127.0.0.1 "$PORT" ""
# TCP: a length prefix longer than what follows, then close
perl -MIO::Socket::IP -e '
	my $s = IO::Socket::IP->new(PeerHost => "127.0.0.1",
	    PeerPort => $ARGV[0], Proto => "tcp") or exit 0;
	print $s pack("n", 65535), "\x12\x34\x01";
	close $s;
' "$PORT"

out=$(q c.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.3 "after malformed packets: UDP still answers" ||
    diag "$out"
out=$(q +tcp c.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.3 "after malformed packets: TCP still answers" ||
    diag "$out"
ok "after malformed packets: the parent is alive" alive "${D_PID:-0}"
is "$(children "${D_PID:-0}" | tr '\n' ' ')" "$(tr '\n' ' ' <<<"$kids")" \
    "after malformed packets: the same children (none crashed and respawned)"

# --- shutdown

before=$(descendants "${D_PID:-0}")
stop_dotproxyd
is "$?" 0 "SIGTERM: dotproxyd exits with status 0"
# shellcheck disable=SC2086
ok "SIGTERM: the children exit too" wait_gone 50 $before
