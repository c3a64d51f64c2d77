#!/bin/bash
# The answers dotproxyd makes itself are correct DNS: BADVERS for EDNS
# version 1 (RFC 6891 6.1.3), an OPT record in FORMERR, NOTIMP and
# REFUSED answers to queries that had one, malformed or not, the question
# echoed, RD copied, RA as a recursive service sets it, no other flag;
# NOTIFY REFUSED, type OPT and TC FORMERR; `edns udp size`; and answers
# cached without the upstream's padding.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 53

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

start_conf dotproxyd -d "dotproxyd starts with edns udp size 4096" \
    -u "$UPORT" -a 127.0.0.1/32 "edns udp size 4096"
KIDS=$(children "${D_PID:-0}" | tr '\n' ' ')

# pkt ITEM...: a DNS message in hex, from items:
#   hdr:ID:FLAGS:QD:AN:NS:AR	(numbers; FLAGS in hex)
#   q:NAME:TYPE			a question
#   opt:UDP:VERSION:FLAGS:HEX	an OPT record with options HEX (FLAGS hex)
#   rr:NAME:TYPE:HEX		a record with RDATA HEX; NAME "@12" is a
#				pointer to offset 12
pkt()
{
	perl -e '
		sub name { my $n = shift; return pack("n", 0xc000 | $1)
		    if $n =~ /^@(\d+)$/; return "\0" if $n eq ".";
		    join("", map { pack("C/a*", $_) } split /\./, $n) . "\0" }
		my $m = "";
		for (@ARGV) {
			my @f = split /:/, $_, -1;
			my $k = shift @f;
			if ($k eq "hdr") {
				$m .= pack("n6", $f[0], hex $f[1], @f[2 .. 5]);
			} elsif ($k eq "q") {
				$m .= name($f[0]) . pack("n n", $f[1], 1);
			} elsif ($k eq "opt") {
				my $o = pack("H*", $f[3]);
				$m .= "\0" . pack("n n C C n n", 41, $f[0], 0,
				    $f[1], hex $f[2], length $o) . $o;
			} elsif ($k eq "rr") {
				my $d = pack("H*", $f[2]);
				$m .= name($f[0]) . pack("n n N n", $f[1], 1, 0,
				    length $d) . $d;
			}
		}
		print unpack("H*", $m), "\n";
	' "$@"
}

# summary HEX: an answer in words: rcode (with the OPT extended rcode),
# opcode, flags, counts, the first question, the OPT record (its EDNS
# flags other than DO as z=HEX, when there are any).
#   NOTIMP op=2 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=example.test/1
#   opt=4096,v0,do=0,len=0
summary()
{
	perl -e '
		my $m = pack("H*", $ARGV[0]);
		length($m) >= 12 or do { print "none\n"; exit };
		my ($id, $fl, $qd, $an, $ns, $ar) = unpack("n6", $m);
		my @fn = ([15, "qr"], [10, "aa"], [9, "tc"], [8, "rd"],
		    [7, "ra"], [6, "z"], [5, "ad"], [4, "cd"]);
		my $flags = join ",", map { $_->[1] } grep {
		    $fl & (1 << $_->[0]) } @fn;
		my $o = 12;
		my $name = sub {
			my @l;
			while ($o < length $m) {
				my $l = ord substr($m, $o, 1);
				if ($l >= 0xc0) { $o += 2; return "ptr" }
				$o++;
				last if $l == 0;
				push @l, substr($m, $o, $l);
				$o += $l;
			}
			return @l ? join(".", @l) : ".";
		};
		my $q = "-";
		for my $i (1 .. $qd) {
			my $n = $name->();
			my $t = unpack("n", substr($m, $o, 2));
			$o += 4;
			$q = "$n/$t" if $i == 1;
		}
		my ($opt, $ext) = ("-", 0);
		for (1 .. $an + $ns + $ar) {
			$name->();
			my ($t, $c, $e, $v, $f, $l) =
			    unpack("n n C C n n", substr($m, $o, 10));
			if ($t == 41) {
				$ext = $e;
				$opt = sprintf "%d,v%d,do=%d,len=%d", $c, $v,
				    $f >> 15, $l;
				$opt .= sprintf ",z=%x", $f & 0x7fff
				    if $f & 0x7fff;
			}
			$o += 10 + $l;
		}
		my $rc = $ext << 4 | ($fl & 15);
		my %rn = (0, "NOERROR", 1, "FORMERR", 2, "SERVFAIL", 3,
		    "NXDOMAIN", 4, "NOTIMP", 5, "REFUSED", 16, "BADVERS");
		printf "%s op=%d flags=%s qd=%d an=%d ns=%d ar=%d q=%s opt=%s\n",
		    $rn{$rc} // "RCODE$rc", ($fl >> 11) & 15, $flags, $qd, $an,
		    $ns, $ar, $q, $opt;
	' "$1"
}

# ask ITEM...: send the message pkt builds over UDP, print its summary.
ask()
{
	local hex
	hex=$(udp_query 127.0.0.1 "$PORT" "$(pkt "$@")" 2>&1) ||
	    { echo "no answer: $hex"; return; }
	summary "$hex"
}

# stats_line NAME: the number of a line of dotproxyctl stats.
stats_line()
{
	ctl stats | sed -n -E "s/^$1 +([0-9]+)\$/\\1/p"
}

E0=opt:1232:0:0:		# an OPT, version 0, no options
COOKIE=000a00080102030405060708	# a client cookie

# --- EDNS version 1: BADVERS, not forwarded

misses=$(stats_line "cache misses")
out=$(q +edns=1 +nocookie a.example.test A)
is "$(status_of <<<"$out")" BADVERS "kdig +edns=1: BADVERS" || diag "$out"
like "$out" 'Version: 0;' "kdig +edns=1: the OPT of the answer is version 0"
is "$(count_rr A <<<"$out")" 0 "kdig +edns=1: no answer records"
like "$out" '^;; a\.example\.test\.[[:space:]]+IN[[:space:]]+A$' \
    "kdig +edns=1: the question echoed"
is "$(stats_line "cache misses")" "$misses" \
    "kdig +edns=1: not looked up in the cache, not forwarded"
is "$(ask hdr:4097:0100:1:0:0:1 q:a.example.test:1 opt:1232:1:8000:)" \
    "BADVERS op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=1,len=0" \
    "raw EDNS version 1: rcode 0, extended rcode 1, OPT v0 with DO"
is "$(ask hdr:4098:0100:1:0:0:1 q:a.example.test:1 opt:1232:0:0:)" \
    "NOERROR op=0 flags=qr,aa,rd,ra qd=1 an=1 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "raw EDNS version 0: answered, our OPT offers 4096"

# as genreport asks: an unknown option is ignored, with version 1 BADVERS
out=$(q +nocookie +ednsopt=65001:abcd b.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.2 \
    "an unknown EDNS option: answered" || diag "$out"
unlike "$out" '65001' "an unknown EDNS option: not echoed"
out=$(q +nocookie +edns=1 +ednsopt=65001:abcd b.example.test A)
is "$(status_of <<<"$out")" BADVERS "EDNS version 1 with an unknown option: BADVERS" ||
    diag "$out"
is "$(ask hdr:4111:0100:1:0:0:1 q:b.example.test:1 opt:1232:0:4000:)" \
    "NOERROR op=0 flags=qr,aa,rd,ra qd=1 an=1 ns=0 ar=1 q=b.example.test/1 opt=4096,v0,do=0,len=0" \
    "an unknown EDNS flag: answered, not echoed"

# --- malformed OPT records: FORMERR with an OPT, the question echoed

is "$(ask hdr:4099:0100:1:0:0:2 q:a.example.test:1 $E0 $E0)" \
    "FORMERR op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "two OPT records: FORMERR with an OPT"
is "$(ask hdr:4100:0100:1:0:0:1 q:a.example.test:1 opt:1232:0:8000:000a00080102)" \
    "FORMERR op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=1,len=0" \
    "an option running past the OPT data: FORMERR with an OPT"
is "$(ask hdr:4101:0100:1:0:0:1 q:a.example.test:1 rr:@12:41:)" \
    "FORMERR op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "an OPT not owned by the root: FORMERR with an OPT"
is "$(ask hdr:4102:0100:2:0:0:1 q:a.example.test:1 q:b.example.test:28 $E0)" \
    "FORMERR op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "QDCOUNT 2 with EDNS: FORMERR, the first question, an OPT"
is "$(ask hdr:4103:0000:0:0:0:1 opt:1232:0:0:$COOKIE)" \
    "FORMERR op=0 flags=qr,ra qd=0 an=0 ns=0 ar=1 q=- opt=4096,v0,do=0,len=0" \
    "QDCOUNT 0 with a COOKIE: FORMERR with an OPT (RFC 7873 5.4)"
out=$(q +cookie=0102030405060708 a.example.test A)
is "$(status_of <<<"$out"):$(rdata_of A <<<"$out")" NOERROR:192.0.2.1 \
    "kdig +cookie: a query with a client cookie is answered" || diag "$out"

# --- opcodes

is "$(ask hdr:4104:1100:1:0:0:1 q:a.example.test:1 $E0)" \
    "NOTIMP op=2 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "STATUS with EDNS: NOTIMP, opcode 2, question and OPT"
is "$(ask hdr:4105:2400:1:0:0:1 q:example.test:6 $E0)" \
    "REFUSED op=4 flags=qr,ra qd=1 an=0 ns=0 ar=1 q=example.test/6 opt=4096,v0,do=0,len=0" \
    "NOTIFY with EDNS: REFUSED, AA not copied, question and OPT"
is "$(ask hdr:4106:7fb0:1:0:0:1 q:a.example.test:1 opt:1232:0:8000:)" \
    "NOTIMP op=15 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=1,len=0" \
    "opcode 15 with every flag: NOTIMP, only opcode and RD copied"
is "$(ask hdr:4107:7800:1:0:0:0 q:a.example.test:1)" \
    "NOTIMP op=15 flags=qr,ra qd=1 an=0 ns=0 ar=0 q=a.example.test/1 opt=-" \
    "opcode 15 without EDNS: no OPT"

# --- type OPT, TC: FORMERR

out=$(q +edns +nocookie example.test TYPE41)
is "$(status_of <<<"$out")" FORMERR "kdig type OPT: FORMERR" || diag "$out"
like "$out" '^;; example\.test\.[[:space:]]+IN[[:space:]]+(OPT|TYPE41)$' \
    "kdig type OPT: the question echoed"
like "$out" 'EDNS PSEUDOSECTION' "kdig type OPT: an OPT in the answer"
out=$(q +nocookie +tcflag +ignore a.example.test A)
is "$(status_of <<<"$out")" FORMERR "kdig +tcflag: FORMERR" || diag "$out"
is "$(ask hdr:4108:0300:1:0:0:1 q:a.example.test:1 $E0)" \
    "FORMERR op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=4096,v0,do=0,len=0" \
    "raw TC set: FORMERR, TC not copied"

# --- flags

is "$(ask hdr:4109:0010:1:0:0:1 q:a.example.test:252 $E0)" \
    "REFUSED op=0 flags=qr,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/252 opt=4096,v0,do=0,len=0" \
    "AXFR with CD, without RD: REFUSED, RA, no RD, no CD"
out=$(q +edns +nocookie -b 127.0.0.2 +cdflag a.example.test A)
is "$(status_of <<<"$out")" REFUSED "outside the access list: REFUSED" ||
    diag "$out"
is "$(flags_of <<<"$out")" "qr rd" \
    "outside the access list: RD copied, no RA, no CD" || diag "$out"
like "$out" 'EDE: 18' "outside the access list: EDE 18 in the OPT"

# --- edns udp size 4096: answers up to 4096 bytes over UDP

out=$(q +nocookie +bufsize=4096 +ignore big.example.test TXT)
is "$(count_rr TXT <<<"$out")" "$BIG_TXT_COUNT" \
    "edns udp size 4096: a 2.6 kB answer over UDP whole" || diag "$out"
unlike "$(flags_of <<<"$out")" '(^| )tc( |$)' "edns udp size 4096: no TC"
like "$out" 'UDP size: 4096 B' "edns udp size 4096: advertised in the OPT"
out=$(q +nocookie +bufsize=1232 +ignore big.example.test TXT)
like "$(flags_of <<<"$out")" '(^| )tc( |$)' \
    "edns udp size 4096: a client offering 1232 gets TC" || diag "$out"
size=$(sed -n -E 's/^;; Received ([0-9]+) B.*/\1/p' <<<"$out")
ok "edns udp size 4096: ... in 1232 bytes at most (${size:-none})" \
    test "${size:-99999}" -le 1232

# a reload sets another size
make_conf dotproxyd -u "$UPORT" -a 127.0.0.1/32 "edns udp size 1400"
out=$(ctl reload 2>&1)
like "$out" 'reloaded' "edns udp size 1400: reloaded" || diag "$out"
out=$(q +nocookie +bufsize=4096 +ignore big.example.test TXT)
like "$(flags_of <<<"$out")" '(^| )tc( |$)' \
    "edns udp size 1400: the 2.6 kB answer is TC" || diag "$out"
like "$out" 'UDP size: 1400 B' "edns udp size 1400: advertised"
is "$(ask hdr:4110:0100:1:0:0:1 q:a.example.test:1 opt:1232:1:0:)" \
    "BADVERS op=0 flags=qr,rd,ra qd=1 an=0 ns=0 ar=1 q=a.example.test/1 opt=1400,v0,do=0,len=0" \
    "edns udp size 1400: in the OPT of a BADVERS"

# --- the cache: answers kept without the upstream's padding

out=$(ctl flush 2>&1)
like "$out" 'flushed' "cache flushed" || diag "$out"
# the upstream pads its answers to dotproxyd's padded queries
out=$(timeout 10 "$KDIG" +tls +tls-ca="$T_DIR/ca/ca.pem" \
    +tls-hostname=dot.test +padding +time=2 +retry=0 @127.0.0.1 \
    -p "$UPORT" a.example.test A 2>&1)
like "$out" 'PADDING' "the upstream pads answers to padded queries" ||
    diag "$out"
for n in a b c multi text ns; do
	q +nocookie +padding "$n.example.test" A >/dev/null
	q +nocookie "$n.example.test" AAAA >/dev/null
done
entries=$(stats_line "cache entries")
bytes=$(stats_line "cache bytes")
per=$(stats_line "cache bytes per entry")
is "$entries" 12 "cache: 12 answers kept" || diag "$(ctl stats)"
ok "cache: bytes per entry ${per:-none} is that of unpadded answers (< 200)" \
    test "${per:-99999}" -lt 200
is "$per" "$(( ${bytes:-0} / (${entries:-0} > 0 ? entries : 1) ))" \
    "cache: bytes per entry is bytes / entries"
mem=$(stats_line "cache memory")
ok "cache: its memory, ${mem:-none} bytes, is a segment of 64 KB" \
    test "${mem:-0}" -eq 65536
out=$(q +nocookie +padding a.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.1 "cache: a hit answers" || diag "$out"
ok "cache: the stats count the hit" test "$(stats_line "cache hits")" -ge 1
like "$(ctl metrics)" 'dotproxyd_cache_bytes [0-9]+' \
    "metrics: dotproxyd_cache_bytes"
like "$(ctl metrics)" 'dotproxyd_cache_memory_bytes 65536' \
    "metrics: dotproxyd_cache_memory_bytes"

# --- still the same processes

ok "the parent is alive" alive "${D_PID:-0}"
is "$(children "${D_PID:-0}" | tr '\n' ' ')" "$KIDS" "no child respawned"
stop_dotproxyd
is "$?" 0 "SIGTERM: dotproxyd exits with status 0"
