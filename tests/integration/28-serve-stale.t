#!/bin/bash
# Serve-stale (RFC 8767): answers kept past their TTL serve clients when
# the upstream fails, when it has not answered within 1.8 s, and when it
# answers late (the late answer refreshes the cache); SERVFAIL without it.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MIO::Socket::SSL -e 1 2>/dev/null ||
    skip_all "perl IO::Socket::SSL not found"

plan 39

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
FPORT=$(free_port)	# a DoT upstream that never answers
SPORT=$(free_port)	# one that takes 2.4 s to shake hands
CTL_SOCK=$T_DIR/ctl.sock

# Records that expire at once, and a zone whose negative answers do too.
EXTRA='local-data: "short.example.test. 1 IN A 192.0.2.77"
	local-data: "late.example.test. 1 IN A 192.0.2.78"
	local-data: "later.example.test. 1 IN A 192.0.2.79"
	local-zone: "neg.test." static
	local-data: "neg.test. 1 IN SOA ns.neg.test. h.neg.test. 1 3600 600 86400 1"'

# timed_q ARGS...: query; sets OUT, STATUS and MS.
timed_q()
{
	local t0
	t0=$(now_ms)
	OUT=$(q +time=6 "$@")
	MS=$(( $(now_ms) - t0 ))
	STATUS=$(status_of <<<"$OUT")
}

# until_expired ARGS...: query until the answer is no longer the one the
# cache holds from before (NOERROR or NXDOMAIN without an extended
# error), at most about 8 s; the last answer is in OUT, STATUS and MS.
until_expired()
{
	local i
	for ((i = 0; i < 40; i++)); do
		timed_q +edns "$@"
		case $STATUS in
		NOERROR | NXDOMAIN)
			grep -q 'EDE:' <<<"$OUT" || { sleep 0.2; continue; }
			;;
		esac
		return 0
	done
	return 1
}

# ttl_of SECTION TYPE: the TTL of the first TYPE record in the section
# (ANSWER, AUTHORITY) of kdig output.
ttl_of()
{
	awk -v s=";; $1 SECTION:" -v t="$2" '
		$0 == s { in_s = 1; next }
		/^;; / || /^$/ { in_s = 0 }
		in_s && $3 == "IN" && $4 == t { print $2; exit }'
}

# udp_replies ADDR PORT HEX SECONDS: send one datagram, then print every
# reply that comes within SECONDS, one a line: milliseconds since the
# query, a space, the reply in hex.
udp_replies()
{
	perl -MIO::Socket::IP -MIO::Select -MTime::HiRes=time -e '
		my ($a, $p, $h, $t) = @ARGV;
		my $s = IO::Socket::IP->new(PeerHost => $a, PeerPort => $p,
		    Proto => "udp") or die "socket: $@\n";
		my $t0 = time;
		defined $s->send(pack("H*", $h)) or die "send: $!\n";
		my $sel = IO::Select->new($s);
		while ((my $left = $t0 + $t - time) > 0) {
			$sel->can_read($left) or last;
			defined $s->recv(my $buf, 65535) or die "recv: $!\n";
			printf "%d %s\n", (time - $t0) * 1000,
			    unpack("H*", $buf);
		}
	' "$@"
}

# start_odd_dot PORT MODE: a DNS-over-TLS server on 127.0.0.1@PORT with
# the certificate in $T_DIR/ca.  MODE silent: it reads queries, writes
# a line for each to its log, $T_DIR/odd-dot-PORT.log, and never
# answers.  MODE slow: it answers every A query 2.4 s after reading it,
# with 192.0.2.99 (TTL 60), and other queries (the daemon's health
# queries) at once, meanwhile: a query is answered after the listener's
# 1.8 s and before its 4 s, on a connection however old.  (A delay
# before the TLS handshake would count from the daemon's first
# connection, which a reload opens for its health query, not from the
# query.)  (start_fake_dot's modes all answer.)  Sets FAKE_PID.
start_odd_dot()
{
	spawn "$T_DIR/odd-dot-$1.log" perl -MIO::Socket::IP -MIO::Socket::SSL -e '
		use IO::Select;
		use Time::HiRes qw(time);
		my ($dir, $port, $mode) = @ARGV;
		alarm 600;
		$SIG{CHLD} = "IGNORE";
		my $l = IO::Socket::IP->new(LocalHost => "127.0.0.1",
		    LocalPort => $port, Listen => 64, ReuseAddr => 1)
		    or die "listen: $@\n";
		sub readn {
			my ($c, $n) = @_;
			my $b = "";
			while (length($b) < $n) {
				my $r = $c->sysread($b, $n - length($b), length($b));
				return undef unless $r;
			}
			return $b;
		}
		for (;;) {
			my $c = $l->accept or next;
			my $pid = fork;
			next if !defined $pid;
			if ($pid) { close $c; next; }
			IO::Socket::SSL->start_SSL($c, SSL_server => 1,
			    SSL_cert_file => "$dir/server.pem",
			    SSL_key_file => "$dir/server.key") or exit 1;
			my @late;	# [when due, answer] in slow mode
			for (;;) {
				while (@late && $late[0][0] <= time) {
					my $due = shift @late;
					print $c $due->[1];
				}
				# no query before the next answer is due?
				next if @late && $c->pending <= 0 &&
				    !IO::Select->new($c)->can_read(
				    $late[0][0] > time ? $late[0][0] - time : 0);
				my $h = readn($c, 2);
				last unless defined $h;
				my $q = readn($c, unpack("n", $h));
				last unless defined $q && length($q) >= 12;
				if ($mode eq "silent") {
					$| = 1;
					print "query ", unpack("H*", $q), "\n";
					next;
				}
				my $o = 12;
				while ($o < length($q)) {
					my $n = ord substr($q, $o, 1);
					$o += 1 + $n;
					last if $n == 0;
				}
				my $question = substr($q, 12, $o + 4 - 12);
				my $an = unpack("n", substr($q, $o, 2)) == 1 ? 1 : 0;
				my ($id, $fl) = unpack("n n", $q);
				my $a = pack("n n n n n n", $id,
				    0x8080 | ($fl & 0x0100), 1, $an, 0, 0) . $question;
				$a .= pack("n n n N n C4", 0xc00c, 1, 1, 60, 4,
				    192, 0, 2, 99) if $an;
				if ($mode eq "slow" && $an) {
					push @late, [time + 2.4,
					    pack("n", length $a) . $a];
					next;
				}
				print $c pack("n", length $a), $a;
			}
			exit 0;
		}
	' "$T_DIR/ca" "$1" "$2"
	# shellcheck disable=SC2034 # for the tests
	FAKE_PID=$SPAWNED_PID
	wait_for 50 port_listening "$1"
}

UNBOUND_EXTRA=$EXTRA start_unbound "$T_DIR/ca" "$UPORT" ||
    bail_out "cannot start unbound"

# ---------------------------------------------------------------------
# serve-stale on: the upstream gone

make_conf on -u "$UPORT" "log queries" \
    "cache serve-stale yes max-age 3600"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"
bad=""
for n in short late later; do
	out=$(q "$n.example.test" A)
	[ "$(status_of <<<"$out")" = NOERROR ] || bad="$bad $n"
done
out=$(q nx.neg.test A)
[ "$(status_of <<<"$out")" = NXDOMAIN ] || bad="$bad nx.neg.test"
is "$bad" "" "on: four answers with TTL 1 cached"

stop_unbound
until_expired short.example.test A
is "$STATUS:$(rdata_of A <<<"$OUT")" NOERROR:192.0.2.77 \
    "on, upstream gone: the expired answer is served" || diag "$OUT"
is "$(ttl_of ANSWER A <<<"$OUT")" 30 "on, upstream gone: with TTL 30"
like "$OUT" 'EDE: 3 \(Stale Answer\)' \
    "on, upstream gone: and the extended error Stale Answer"
ok "on, upstream gone: before the 4 s timeout (${MS} ms)" test "$MS" -lt 4000

out=$(q +noedns short.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.77 \
    "on, without EDNS: served stale" || diag "$out"
is "$(ttl_of ANSWER A <<<"$out")" 30 "on, without EDNS: TTL 30"
unlike "$out" 'EDE:|OPT PSEUDOSECTION' "on, without EDNS: no OPT, no EDE"

out=$(q +tcp +edns short.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.77 \
    "on, over TCP: served stale" || diag "$out"
like "$out" 'EDE: 3 ' "on, over TCP: with the extended error"

until_expired nx.neg.test A
is "$STATUS" NXDOMAIN "on, negative answer: the NXDOMAIN is served stale" ||
    diag "$OUT"
like "$OUT" 'EDE: 19 \(Stale NXDOMAIN Answer\)' \
    "on, negative answer: with the extended error Stale NXDOMAIN Answer"
is "$(ttl_of AUTHORITY SOA <<<"$OUT")" 30 "on, negative answer: SOA TTL 30"

out=$(q never.example.test A)
is "$(status_of <<<"$out")" SERVFAIL \
    "on, a name never cached: SERVFAIL" || diag "$out"

out=$(ctl stats 2>&1)
n=$(awk '$1 == "cache" && $2 == "stale" { print $3 }' <<<"$out")
ok "on: stats count the stale answers (${n:-none})" test "${n:-0}" -ge 4 ||
    diag "$out"
out=$(ctl metrics 2>&1)
like "$out" "dotproxyd_cache_stale_total ${n:-x}" \
    "on: metrics count them too" || diag "$out"
ok "on: the query log says stale" \
    log_wait 'query [^ ]+ udp type 1 NOERROR stale [0-9]+us short\.example\.test\.?$'

# ---------------------------------------------------------------------
# serve-stale on: an upstream that accepts queries and never answers

start_odd_dot "$FPORT" silent || bail_out "cannot start a silent upstream"
make_conf on -u "$FPORT" "log queries" \
    "cache serve-stale yes max-age 3600"
out=$(ctl reload 2>&1)
like "$out" '^reloaded' "silent: reloaded with the silent upstream" ||
    diag "$out"
until_expired late.example.test A
# The query stays open upstream until 3.5 s after it was asked, some
# 1.7 s after its stale answer: what must happen meanwhile (a look at
# the queries in flight, a second client's query) comes first, the
# results after.
stale_status=$STATUS stale_out=$OUT stale_ms=$MS
n=$(ctl stats 2>/dev/null |
    awk '$1 == "queries" && $3 == "flight" { print $NF }')
timed_q +edns late.example.test A
is "$stale_status:$(rdata_of A <<<"$stale_out")" NOERROR:192.0.2.78 \
    "silent: the expired answer is served" || diag "$stale_out"
like "$stale_out" 'EDE: 3 \(Stale Answer\)' "silent: as a stale answer"
is "$(ttl_of ANSWER A <<<"$stale_out")" 30 "silent: TTL 30"
ok "silent: before the 4 s timeout (${stale_ms} ms)" test "$stale_ms" -lt 4000
is "${n:-none}" 1 \
    "silent: the query stays open for the upstream's answer"
ok "silent: the query went to the silent upstream" \
    grep -q '^query ' "$T_DIR/odd-dot-$FPORT.log"
is "$STATUS:$(rdata_of A <<<"$OUT")" NOERROR:192.0.2.78 \
    "silent: a client asking meanwhile is answered stale" || diag "$OUT"
like "$OUT" 'EDE: 3 ' "silent: with the extended error"
ok "silent: at once (${MS} ms)" test "$MS" -lt 1500
kill_tree "$FAKE_PID"

# ---------------------------------------------------------------------
# serve-stale on: an upstream whose answer comes after the stale one

start_odd_dot "$SPORT" slow || bail_out "cannot start a slow upstream"
make_conf on -u "$SPORT" "log queries" \
    "cache serve-stale yes max-age 3600"
out=$(ctl reload 2>&1)
like "$out" '^reloaded' "slow: reloaded with the slow upstream" ||
    diag "$out"
# the flags RD and AD, as kdig sent them when it cached the answer
out=$(udp_replies 127.0.0.1 "$PORT" \
    "$(dns_query_hex 4242 later.example.test A |
    sed -e 's/^\(....\)0100/\10120/')" 5 2>&1)
is "$(wc -l <<<"$out" | tr -d ' ')" 1 \
    "slow: one answer, the late one is not sent to the client too" ||
    diag "$out"
ms=$(head -n 1 <<<"$out" | cut -d' ' -f1)
hex=$(head -n 1 <<<"$out" | cut -d' ' -f2)
like "$hex" '^1092.*0000001e0004c000024f$' \
    "slow: it is the expired answer, TTL 30" || diag "$out"
ok "slow: sent before the 4 s timeout (${ms:-none} ms)" \
    test "${ms:-99999}" -lt 4000
timed_q +edns later.example.test A
is "$STATUS:$(rdata_of A <<<"$OUT")" NOERROR:192.0.2.99 \
    "slow: the late answer refreshed the cache" || diag "$OUT"
unlike "$OUT" 'EDE:' "slow: and is served fresh, without an extended error"
# stored some 2.5 s before: a TTL below the upstream's 60
ttl=$(ttl_of ANSWER A <<<"$OUT")
ok "slow: from the cache (TTL ${ttl:-none})" test "${ttl:-60}" -lt 60
kill_tree "$FAKE_PID"

stop_dotproxyd
is "$?" 0 "on: SIGTERM exits 0"

# ---------------------------------------------------------------------
# serve-stale off (the default): SERVFAIL, as ever

UNBOUND_EXTRA=$EXTRA start_unbound "$T_DIR/ca" "$UPORT" ||
    bail_out "cannot restart unbound"
make_conf off -u "$UPORT" "log queries"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"
out=$(q short.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.77 \
    "off: answer cached, TTL 1" || diag "$out"
stop_unbound
for ((i = 0; i < 40; i++)); do
	timed_q short.example.test A
	[ "$STATUS" = NOERROR ] || break
	sleep 0.2
done
is "$STATUS" SERVFAIL "off, upstream gone: SERVFAIL once the TTL ran out" ||
    diag "$OUT"
unlike "$OUT" 'EDE: 3 ' "off: no stale answer"
stop_dotproxyd
is "$?" 0 "off: SIGTERM exits 0"
