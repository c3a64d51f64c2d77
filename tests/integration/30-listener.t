#!/bin/bash
# The listener: the access list, the cache (positive and negative, and
# `cache off`), rate limiting, malformed input, zone transfers, other
# opcodes and EDNS Client Subnet.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep dnsperf
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MIO::Socket::SSL -e 1 2>/dev/null ||
    skip_all "perl IO::Socket::SSL not found"

plan 46

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
AUDIT=$T_DIR/audit.log
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# ttl_of TYPE: the TTL of the first TYPE record of the answer section.
ttl_of()
{
	awk -v t="$1" '
		/^;; ANSWER SECTION:/ { a = 1; next }
		/^;; / || /^$/ { a = 0 }
		a && $3 == "IN" && $4 == t { print $2; exit }'
}

# rcode_hex HEX: the RCODE of a raw answer given in hex.
rcode_hex()
{
	[ ${#1} -ge 8 ] || { echo none; return; }
	echo $((16#${1:7:1}))
}

# ---------------------------------------------------------------------
# The access list

start_conf main -d "dotproxyd starts with allow from 127.0.0.1/32" \
    -u "$UPORT" -a 127.0.0.1/32

out=$(q a.example.test A)
is "$(status_of <<<"$out")" NOERROR "ACL: 127.0.0.1 is answered" || diag "$out"

out=$(q +edns -b 127.0.0.2 a.example.test A)
is "$(status_of <<<"$out")" REFUSED "ACL: UDP from 127.0.0.2 is REFUSED" ||
    diag "$out"
is "$(count_rr A <<<"$out")" 0 "ACL: the REFUSED answer carries no data"
like "$out" 'EDE: 18|Prohibited' "ACL: the REFUSED answer has EDE 18 (Prohibited)"

out=$(q +tcp -b 127.0.0.2 a.example.test A)
is "$(status_of <<<"$out")" REFUSED "ACL: TCP from 127.0.0.2 is REFUSED" ||
    diag "$out"

# ---------------------------------------------------------------------
# What is refused or not implemented

out=$(q +tcp example.test AXFR)
like "$out" 'REFUSED' "AXFR over TCP is REFUSED" || diag "$out"
unlike "$out" 'IN[[:space:]]+SOA' "AXFR over TCP: no zone data"

hex=$(udp_query 127.0.0.1 "$PORT" "$(dns_query_hex 4661 example.test 252)" 2>&1)
is "$(rcode_hex "$hex")" 5 "AXFR over UDP (raw) is REFUSED" || diag "$hex"
hex=$(udp_query 127.0.0.1 "$PORT" "$(dns_query_hex 4662 example.test 251)" 2>&1)
is "$(rcode_hex "$hex")" 5 "IXFR over UDP (raw) is REFUSED" || diag "$hex"

# NOTIFY: opcode 4 (and AA set) in a query header
hex=$(udp_query 127.0.0.1 "$PORT" \
    "$(dns_query_hex 4663 example.test SOA | sed -e 's/^\(....\)01/\124/')" 2>&1)
is "${hex:0:4}:$(rcode_hex "$hex")" "1237:5" \
    "NOTIFY (opcode 4) answers REFUSED with the client's ID" || diag "$hex"
is "$(( (16#${hex:4:2} >> 3) & 15 ))" 4 "NOTIFY: the answer keeps opcode 4"

# ---------------------------------------------------------------------
# EDNS Client Subnet

out=$(q +subnet=192.0.2.0/24 a.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.1 \
    "a query with an ECS option is answered" || diag "$out"

# ---------------------------------------------------------------------
# Long queries over UDP: each one read whole, in a burst of them too.
# 18 queries, 164 KB in all: within the listener's receive buffer where
# net.core.rmem_max is the kernel's default, so none is dropped unread.

names=()
for i in $(seq 1 6); do names+=(a.example.test b.example.test c.example.test); done
out=$(BURST_PAD="100 511 512 513 700 1500 4000 9000 65000" \
    udp_burst 127.0.0.1 "$PORT" 5 "${names[@]}")
want=$(for i in $(seq 1 6); do
	printf '%s\n' "a.example.test NOERROR 192.0.2.1" \
	    "b.example.test NOERROR 192.0.2.2" "c.example.test NOERROR 192.0.2.3"
done)
is "$out" "$want" "18 queries padded to 100 to 65,000 bytes, sent at once: each one answered as its own" ||
    diag "$(diff <(echo "$want") <(echo "$out") | head)"

# ---------------------------------------------------------------------
# Malformed input leaves the processes as they are

LPID=$(child_named "$D_PID" listener)
UPID=$(child_named "$D_PID" upstream)
kids="$LPID $UPID"

# 2000 random datagrams, 0 to 600 bytes long
perl -MIO::Socket::IP -e '
	my $s = IO::Socket::IP->new(PeerHost => "127.0.0.1",
	    PeerPort => $ARGV[0], Proto => "udp") or die "socket: $@\n";
	for my $i (1 .. 2000) {
		my $len = int rand 601;
		my $p = join "", map { chr int rand 256 } 1 .. $len;
		$s->send($p);
		select undef, undef, undef, 0.001 if $i % 100 == 0;
	}
' "$PORT"
# 200 broken TCP streams
perl -MIO::Socket::IP -e '
	for my $i (1 .. 200) {
		my $s = IO::Socket::IP->new(PeerHost => "127.0.0.1",
		    PeerPort => $ARGV[0], Proto => "tcp") or next;
		my $k = $i % 5;
		if ($k == 0) {		# length prefix beyond the data
			print $s pack("n", 300), "\x12\x34\x01\x00\x00\x01";
		} elsif ($k == 1) {	# an empty message
			print $s pack("n", 0);
		} elsif ($k == 2) {	# garbage
			print $s join "", map { chr int rand 256 } 1 .. 1 + int rand 700;
		} elsif ($k == 3) {	# half a length prefix
			print $s "\x00";
		} else {		# a short frame, then a huge length
			print $s pack("n", 3), "abc", pack("n", 65535), "x" x 100;
		}
		close $s;
	}
' "$PORT"

out=$(q c.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.3 "after malformed input: UDP answers" ||
    diag "$out"
out=$(q +tcp c.example.test AAAA)
is "$(status_of <<<"$out")" NOERROR "after malformed input: TCP answers" ||
    diag "$out"
ok "after malformed input: the parent is alive" alive "$D_PID"
is "$(child_named "$D_PID" listener) $(child_named "$D_PID" upstream)" "$kids" \
    "after malformed input: the same listener and upstream processes"

# ---------------------------------------------------------------------
# The cache

out=$(q b.example.test A)
ttl1=$(ttl_of A <<<"$out")
is "$(rdata_of A <<<"$out")" 192.0.2.2 "cache: b.example.test answers 192.0.2.2" ||
    diag "$out"
out=$(q nx.example.test A)
is "$(status_of <<<"$out")" NXDOMAIN "cache: nx.example.test is NXDOMAIN" ||
    diag "$out"
sleep 1.2
stop_unbound

out=$(q b.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.2 \
    "cache: upstream gone, b.example.test still answers from the cache" ||
    diag "$out"
ttl2=$(ttl_of A <<<"$out")
ok "cache: the cached TTL ($ttl2) is not above the original ($ttl1)" \
    test "${ttl2:-999999}" -le "${ttl1:-0}" -a "${ttl2:-0}" -gt 0
out=$(q nx.example.test A)
is "$(status_of <<<"$out")" NXDOMAIN \
    "cache: upstream gone, NXDOMAIN still answered (negative cache)" ||
    diag "$out"
like "$out" 'SOA' "cache: the cached NXDOMAIN keeps the SOA"

t0=$(now_ms)
out=$(q +time=6 never.example.test A)
dt=$(( $(now_ms) - t0 ))
is "$(status_of <<<"$out")" SERVFAIL \
    "cache: upstream gone, a name never asked is SERVFAIL" || diag "$out"
ok "cache: that SERVFAIL comes within the 4 s deadline (${dt} ms)" \
    test "$dt" -lt 4500

stats=$(ctl stats 2>&1)
hits=$(awk '/^cache hits/ { print $3 }' <<<"$stats")
ok "cache: stats count cache hits (${hits:-none})" test "${hits:-0}" -ge 2

stop_dotproxyd
is "$?" 0 "first daemon: SIGTERM exits 0"

# ---------------------------------------------------------------------
# cache off

start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot restart unbound"
make_conf nocache -u "$UPORT" -a 127.0.0.1/32 "cache off"
if start_dotproxyd "$CONF_FILE"; then
	pass "dotproxyd starts with cache off"
else
	fail "dotproxyd starts with cache off"
fi
out=$(q c.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.3 "cache off: c.example.test answers" ||
    diag "$out"
like "$(ctl stats 2>&1)" 'cache +off' "cache off: stats say the cache is off"
stop_unbound
out=$(q +time=6 c.example.test A)
is "$(status_of <<<"$out")" SERVFAIL \
    "cache off: upstream gone, the same name is SERVFAIL" || diag "$out"
stop_dotproxyd
is "$?" 0 "cache off daemon: SIGTERM exits 0"

# ---------------------------------------------------------------------
# Rate limiting

start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot restart unbound"
make_conf ratelimit -u "$UPORT" -a 127.0.0.1/32 \
    "ratelimit 20 per second burst 20"
if start_dotproxyd "$CONF_FILE"; then
	pass "dotproxyd starts with ratelimit 20 per second burst 20"
else
	fail "dotproxyd starts with ratelimit 20 per second burst 20"
fi
# let the bucket fill up again after the start-up probes
sleep 1.2
for ((i = 0; i < 200; i++)); do
	echo "a.example.test A"
done >"$T_DIR/perf-200.txt"
perf=$(timeout -k 1 30 dnsperf -s 127.0.0.1 -p "$PORT" \
    -d "$T_DIR/perf-200.txt" -n 1 -c 1 -Q 1000 -t 2 2>&1 | grep -v '^\[Timeout\]')
sent=$(sed -n -E 's/^ *Queries sent: *([0-9]+).*/\1/p' <<<"$perf")
done_n=$(sed -n -E 's/^ *Queries completed: *([0-9]+).*/\1/p' <<<"$perf")
lost=$(sed -n -E 's/^ *Queries lost: *([0-9]+).*/\1/p' <<<"$perf")
is "${sent:-none}" 200 "ratelimit: dnsperf sent 200 UDP queries" || diag "$perf"
ok "ratelimit: well under 200 answered (${done_n:-none} answered)" \
    test "${done_n:-999}" -ge 1 -a "${done_n:-999}" -le 80
ok "ratelimit: the others are dropped (${lost:-none} lost)" \
    test "${lost:-0}" -ge 120

names=()
for ((i = 0; i < 60; i++)); do
	names+=(a.example.test A)
done
out=$(q +tcp +keepopen "${names[@]}")
n_refused=$(statuses_of <<<"$out" | grep -c '^REFUSED$')
n_ok=$(statuses_of <<<"$out" | grep -c '^NOERROR$')
ok "ratelimit: TCP over the limit is REFUSED ($n_refused REFUSED, $n_ok NOERROR)" \
    test "$n_refused" -ge 1 -a "$n_ok" -ge 1

rl=$(ctl stats 2>&1 | awk '/^rate-limited/ { print $2 }')
ok "ratelimit: stats count rate-limited queries (${rl:-none})" \
    test "${rl:-0}" -ge 100
stop_dotproxyd
is "$?" 0 "ratelimit daemon: SIGTERM exits 0"

# ---------------------------------------------------------------------
# The ECS option is not forwarded upstream

FPORT=$(free_port)
start_fake_dot "$T_DIR/ca" "$FPORT" capture || bail_out "cannot start a fake upstream"
make_conf capture -u "$FPORT" -a 127.0.0.1/32
if start_dotproxyd "$CONF_FILE"; then
	pass "dotproxyd starts with a recording upstream"
else
	fail "dotproxyd starts with a recording upstream"
fi
out=$(q +subnet=198.51.100.0/24 ecs.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.99 \
    "ECS: a query with a client subnet is answered" || diag "$out"

# The EDNS option codes of the forwarded query for ecs.example.test
opts=$(grep -i '0365637307' "$T_DIR/ca/queries.hex" 2>/dev/null | head -n 1 |
    perl -ne '
	chomp;
	my $m = pack "H*", $_;
	my ($qd, $an, $ns, $ar) = unpack "x4 n4", $m;
	my $o = 12;
	my $name = sub {
		for (;;) {
			my $l = ord substr $m, $o, 1;
			if ($l >= 0xc0) { $o += 2; return }
			$o++;
			return if $l == 0;
			$o += $l;
		}
	};
	for (1 .. $qd) { $name->(); $o += 4 }
	my @codes;
	for (1 .. $an + $ns + $ar) {
		$name->();
		my ($type, $class, $ttl, $rdlen) = unpack "n n N n", substr $m, $o, 10;
		$o += 10;
		if ($type == 41) {
			my $e = $o + $rdlen;
			my $p = $o;
			while ($p + 4 <= $e) {
				my ($code, $len) = unpack "n n", substr $m, $p, 4;
				push @codes, $code;
				$p += 4 + $len;
			}
		}
		$o += $rdlen;
	}
	print join(",", @codes) || "none", "\n";
')
ok "ECS: the forwarded query was recorded (options: ${opts:-none})" \
    test -n "$opts"
unlike "${opts:-}" '(^|,)8(,|$)' "ECS: no Client Subnet option (8) in the forwarded query"
like "${opts:-}" '(^|,)12(,|$)' "ECS: the forwarded query is padded (option 12)"
stop_dotproxyd
is "$?" 0 "recording daemon: SIGTERM exits 0"
