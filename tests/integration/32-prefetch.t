#!/bin/bash
# Prefetch: a cache hit in the last tenth of an answer's TTL is answered
# at once and asks the upstream again in the background, one query at a
# time, so that the answer never expires; with cache prefetch no, it
# expires as ever.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 21

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock

# Records with TTL 10: prefetched from 9 s on.  unbound logs each query.
EXTRA='local-data: "pf.example.test. 10 IN A 192.0.2.80"
	local-data: "pfoff.example.test. 10 IN A 192.0.2.81"
	log-queries: yes'

# conf [EXTRA]: the config file CONF_FILE, on the same port each time.
conf()
{
	make_conf prefetch -u "$UPORT" "log queries" "${1:-}"
}

# ttl_of: the TTL of the first A record in the answer of kdig output.
ttl_of()
{
	awk '$3 == "IN" && $4 == "A" && $1 !~ /^;/ { print $2; exit }'
}

# until_ttl NAME OP N: query NAME every 0.2 s until the answer's TTL is
# OP (-le, -ge) N, for at most 15 s; sets OUT, TTL and MS (of the last).
until_ttl()
{
	local i t0
	for ((i = 0; i < 75; i++)); do
		t0=$(now_ms)
		OUT=$(q "$1" A)
		MS=$(( $(now_ms) - t0 ))
		TTL=$(ttl_of <<<"$OUT")
		[ -n "$TTL" ] && test "$TTL" "$2" "$3" && return 0
		sleep 0.2
	done
	return 1
}

# stat NAME...: a counter of dotproxyctl stats, by the words of its name.
stat()
{
	ctl stats 2>/dev/null | awk -v n="$*" '{
		v = $NF; $NF = ""; sub(/ +$/, "")
		if ($0 == n) print v }'
}

# stat_is VALUE NAME...: whether the counter is VALUE.
stat_is()
{
	local v=$1
	shift
	[ "$(stat "$@")" = "$v" ]
}

# upstream_count NAME: queries for NAME type A that unbound has logged.
upstream_count()
{
	grep -c " $1\. A IN" "$T_DIR/ca/unbound.log"
}

UNBOUND_EXTRA=$EXTRA start_unbound "$T_DIR/ca" "$UPORT" ||
    bail_out "cannot start unbound"

# ---------------------------------------------------------------------
# prefetch on, the default

conf
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"
out=$(q pf.example.test A)
is "$(status_of <<<"$out"):$(ttl_of <<<"$out")" NOERROR:10 \
    "on: the first answer comes from upstream, TTL 10" || diag "$out"
misses=$(stat cache misses)

until_ttl pf.example.test -le 1
is "$TTL" 1 "on: a hit in the last tenth of the TTL" || diag "$OUT"
ok "on: answered at once from the cache (${MS} ms)" test "$MS" -lt 1000
ok "on: stats count one prefetch" wait_for 30 \
    stat_is 1 cache prefetches
out=$(q pf.example.test A)
t=$(ttl_of <<<"$out")
ok "on: the cached answer was refreshed, TTL ${t:-none} again" \
    test "${t:-0}" -ge 9 || diag "$out"
is "$(upstream_count pf.example.test)" 2 \
    "on: upstream asked twice, for the miss and the prefetch"
is "$(stat cache misses)" "$misses" "on: no client query missed the cache"
like "$(ctl metrics 2>&1)" 'dotproxyd_cache_prefetches_total 1' \
    "on: metrics count the prefetch"

# Bursts of 20 queries (without the AD flag kdig sets: another key) until
# one comes in the last tenth: one prefetch then, not one for each hit.
names=()
for ((i = 0; i < 20; i++)); do
	names+=(pf.example.test)
done
out=$(udp_burst 127.0.0.1 "$PORT" 3 "${names[@]}")
is "$(sort -u <<<"$out")" "pf.example.test NOERROR 192.0.2.80" \
    "on, burst: every query answered" || diag "$out"
prefetches=$(stat cache prefetches)
misses=$(stat cache misses)
coalesced=$(stat coalesced)
upstream=$(upstream_count pf.example.test)
for ((i = 0; i < 60; i++)); do
	out=$(udp_burst 127.0.0.1 "$PORT" 3 "${names[@]}")
	stat_is "$prefetches" cache prefetches || break
	sleep 0.1
done
is "$(sort -u <<<"$out")" "pf.example.test NOERROR 192.0.2.80" \
    "on, burst in the last tenth: every query answered" || diag "$out"
ok "on, burst in the last tenth: one prefetch" wait_for 30 \
    stat_is $((prefetches + 1)) cache prefetches
is "$(upstream_count pf.example.test)" $((upstream + 1)) \
    "on, burst in the last tenth: one upstream query"
is "$(stat cache misses)" "$misses" "on, bursts: no miss"
is "$(stat coalesced)" "$coalesced" \
    "on, bursts: no client waited on the prefetch"

# ---------------------------------------------------------------------
# prefetch off

conf "cache prefetch no"
like "$(ctl reload 2>&1)" '^reloaded' "off: reloaded"
out=$(q pfoff.example.test A)
is "$(status_of <<<"$out"):$(ttl_of <<<"$out")" NOERROR:10 \
    "off: the first answer comes from upstream" || diag "$out"
until_ttl pfoff.example.test -le 1
is "$TTL" 1 "off: a hit in the last tenth of the TTL" || diag "$OUT"
sleep 0.5
is "$(upstream_count pfoff.example.test)" 1 "off: no upstream query"
is "$(stat cache prefetches)" $((prefetches + 1)) "off: no prefetch counted"
misses=$(stat cache misses)
until_ttl pfoff.example.test -ge 9
sleep 0.5
ok "off: the answer expires, the next query misses and goes upstream" \
    test "$(stat cache misses)" = $((misses + 1)) -a \
    "$(upstream_count pfoff.example.test)" = 2

stop_dotproxyd
is "$?" 0 "SIGTERM exits 0"
